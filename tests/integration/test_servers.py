"""The real servers `make integration` runs: configured right, answering, and stopped cleanly.

The IPFS checks use known-answer CIDs that a reference IPFS daemon produced
(tests/fixtures/cid-vectors.json): if the daemon chunked or encoded differently, every content
address the project computes offline would disagree with the network.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from web3 import Web3

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SERVERS = ROOT / "tools" / "servers.py"
ANVIL_CHAIN_ID = 31337
# anvil's first dev account: derived from its public test mnemonic, funded with 10 000 ETH.
ANVIL_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


# --- small clients over the standard library --------------------------------------------------


def _ipfs(base: str, command: str, params: dict[str, str], content: bytes | None = None) -> Any:
    url = f"{base}/api/v0/{command}?{urllib.parse.urlencode(params)}"
    headers: dict[str, str] = {}
    body = b""
    if content is not None:
        boundary = uuid.uuid4().hex
        # Every part needs a content type, or the daemon rejects the upload.
        body = (
            (
                f"--{boundary}\r\n"
                'Content-Disposition: form-data; name="file"; filename="blob"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + content
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        raw = response.read()
    return raw if command == "cat" else json.loads(raw)


def _rpc(url: str, method: str, *params: Any) -> Any:
    call = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    request = urllib.request.Request(
        url, data=json.dumps(call).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        reply = json.loads(response.read())
    assert "error" not in reply, reply
    return reply["result"]


# --- the IPFS daemon ----------------------------------------------------------------------------


class TestIpfsDaemon:
    def test_answers_version(self, ipfs_http_url: str) -> None:
        reply = _ipfs(ipfs_http_url, "version", {})
        assert isinstance(reply["Version"], str) and reply["Version"]

    def test_listens_on_loopback_only(self, ipfs_http_url: str) -> None:
        reply = _ipfs(ipfs_http_url, "id", {})
        assert reply["ID"]
        public = [addr for addr in reply.get("Addresses") or [] if "/127.0.0.1/" not in addr]
        assert public == []

    def test_only_hash_cidv1_matches_the_known_vectors(
        self,
        ipfs_http_url: str,
        cid_vectors: list[dict[str, Any]],
        vector_content: Callable[[int, int], bytes],
    ) -> None:
        params = {
            "only-hash": "true",
            "cid-version": "1",
            "raw-leaves": "true",
            "cid-base": "base32",
        }
        got = {
            (v["size"], v["seed"]): _ipfs(
                ipfs_http_url, "add", params, vector_content(v["size"], v["seed"])
            )["Hash"]
            for v in cid_vectors
        }
        assert got == {(v["size"], v["seed"]): v["cidv1"] for v in cid_vectors}

    def test_default_add_gives_the_cidv0_vector(
        self,
        ipfs_http_url: str,
        cid_vectors: list[dict[str, Any]],
        vector_content: Callable[[int, int], bytes],
    ) -> None:
        vector = next(v for v in cid_vectors if v["size"] > 262144)  # a multi-block DAG
        content = vector_content(vector["size"], vector["seed"])
        reply = _ipfs(ipfs_http_url, "add", {"only-hash": "true"}, content)
        assert reply["Hash"] == vector["cidv0"]

    def test_add_then_cat_returns_the_same_bytes(self, ipfs_http_url: str) -> None:
        content = b"integration " + uuid.uuid4().bytes
        params = {"cid-version": "1", "raw-leaves": "true", "cid-base": "base32"}
        cid = _ipfs(ipfs_http_url, "add", params, content)["Hash"]
        assert cid.startswith("bafk")
        assert _ipfs(ipfs_http_url, "cat", {"arg": cid}) == content


# --- anvil --------------------------------------------------------------------------------------


class TestAnvil:
    def test_answers_chain_id(self, rpc_url: str) -> None:
        assert int(_rpc(rpc_url, "eth_chainId"), 16) == ANVIL_CHAIN_ID

    def test_mines_a_signed_value_transfer(self, rpc_url: str) -> None:
        w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
        sender = Account.from_key(ANVIL_DEV_KEY)
        assert sender.address == w3.eth.accounts[0]
        recipient = Account.create().address
        base_fee = w3.eth.get_block("latest")["baseFeePerGas"]
        tx = {
            "type": 2,
            "chainId": w3.eth.chain_id,
            "nonce": w3.eth.get_transaction_count(sender.address, "pending"),
            "to": recipient,
            "value": 12_345,
            "gas": 21_000,
            "maxPriorityFeePerGas": 1,
            "maxFeePerGas": 2 * base_fee + 1,
        }
        tx_hash = w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        assert receipt["status"] == 1
        assert receipt["gasUsed"] == 21_000
        assert receipt["from"] == sender.address
        assert w3.eth.get_balance(recipient) == 12_345


# --- tools/servers.py itself --------------------------------------------------------------------


def _script_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("DIR", "IPFS_PORT", "ANVIL_PORT", "TIMEOUT"):
        env.pop("CHEFSPLAN_SERVERS_" + name, None)
    return env


def _servers(
    state: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SERVERS), *args, "--dir", str(state), "--no-install"],
        env=env or _script_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; an exited process waiting to be reaped (a zombie) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _pids(state: Path) -> dict[str, int]:
    return {name: int((state / f"{name}.pid").read_text()) for name in ("ipfs", "anvil")}


@pytest.mark.usefixtures("pinned_tools")
class TestServersScript:
    def test_up_then_down_leaves_no_process(self, tmp_path: Path) -> None:
        started = _servers(tmp_path, "up")
        assert started.returncode == 0, started.stderr
        pids = _pids(tmp_path)
        try:
            assert all(_alive(pid) for pid in pids.values())
            env = (tmp_path / "env").read_text()
            assert "export CHEFSPLAN_TEST_IPFS_API=/ip4/127.0.0.1/tcp/" in env
            assert "export CHEFSPLAN_TEST_RPC_URL=http://127.0.0.1:" in env
            assert started.stdout == env
            status = _servers(tmp_path, "status")
            assert status.returncode == 0
            assert status.stdout.count("answering") == 2 and "NOT" not in status.stdout
        finally:
            stopped = _servers(tmp_path, "down")
        assert stopped.returncode == 0, stopped.stderr
        assert [pid for pid in pids.values() if _alive(pid)] == []
        assert not any((tmp_path / f"{name}.pid").exists() for name in pids)
        assert not (tmp_path / "env").exists()
        again = _servers(tmp_path, "down")
        assert again.returncode == 0
        assert again.stdout.splitlines() == ["ipfs: not running", "anvil: not running"]
        assert _servers(tmp_path, "status").returncode == 3

    def test_down_never_signals_a_process_it_did_not_start(self, tmp_path: Path) -> None:
        # A stale pid file whose pid now belongs to someone else (here: this test process).
        (tmp_path / "anvil.pid").write_text(f"{os.getpid()}\n")
        (tmp_path / "ipfs.pid").write_text("not a pid\n")
        stopped = _servers(tmp_path, "down")
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.splitlines() == ["ipfs: not running", "anvil: not running"]
        assert not (tmp_path / "anvil.pid").exists()
        assert not (tmp_path / "ipfs.pid").exists()

    def test_up_failure_names_the_log_and_leaves_nothing_running(self, tmp_path: Path) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            env = dict(_script_env(), CHEFSPLAN_SERVERS_ANVIL_PORT=str(taken.getsockname()[1]))
            failed = _servers(tmp_path, "up", env=env)
        assert failed.returncode == 1
        first = failed.stderr.splitlines()[0]
        assert first.startswith("error: anvil exited")
        assert first.endswith(f"see {tmp_path / 'anvil.log'}")
        assert not (tmp_path / "env").exists()
        assert not (tmp_path / "ipfs.pid").exists() and not (tmp_path / "anvil.pid").exists()
        assert (tmp_path / "ipfs.log").exists()  # the daemon was started, and must be gone again
        daemons = [
            pid
            for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
            if _alive(pid) and _environ_has(pid, f"CHEFSPLAN_SERVER={tmp_path}")
        ]
        assert daemons == []

    @pytest.mark.parametrize("port", ["abc", "70000"])
    def test_up_rejects_a_bad_port(self, tmp_path: Path, port: str) -> None:
        env = dict(_script_env(), CHEFSPLAN_SERVERS_IPFS_PORT=port)
        failed = _servers(tmp_path, "up", env=env)
        assert failed.returncode == 1
        assert failed.stderr.strip() == (
            f"error: CHEFSPLAN_SERVERS_IPFS_PORT={port!r} is not a TCP port (1-65535); "
            "unset it to pick one"
        )

    def test_env_without_up_says_what_to_do(self, tmp_path: Path) -> None:
        failed = _servers(tmp_path, "env")
        assert failed.returncode == 1
        assert failed.stderr.strip().endswith("run `tools/servers.py up` first")


def _environ_has(pid: int, prefix: str) -> bool:
    try:
        entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(entry.startswith(prefix.encode()) for entry in entries)


class TestRequireIntegration:
    """CHEFSPLAN_REQUIRE_INTEGRATION=1 turns a skipped test into a failed run."""

    BODY = (
        "import pytest\n"
        "def test_runs():\n    assert True\n"
        "def test_needs_server():\n    pytest.skip('CHEFSPLAN_TEST_RPC_URL is not set')\n"
        "def test_cannot_apply():\n    pytest.skip('not applicable: no such storage')\n"
    )

    def _run(
        self, tmp_path: Path, body: str, require: str | None
    ) -> subprocess.CompletedProcess[str]:
        here = Path(__file__).parent
        for harness in ("conftest.py", "_fleet.py"):  # the conftest imports the node fleet
            (tmp_path / harness).write_text((here / harness).read_text())
        (tmp_path / "test_sample.py").write_text(body)
        (tmp_path / "pytest.ini").write_text("[pytest]\n")
        env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
        for name in ("CHEFSPLAN_REQUIRE_INTEGRATION", "CHEFSPLAN_TEST_RPC_URL"):
            env.pop(name, None)
        if require is not None:
            env["CHEFSPLAN_REQUIRE_INTEGRATION"] = require
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def test_a_skip_fails_the_run_when_required(self, tmp_path: Path) -> None:
        done = self._run(tmp_path, self.BODY, "1")
        assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout
        assert "FAILED: 1 test(s) skipped while CHEFSPLAN_REQUIRE_INTEGRATION=1" in done.stdout

    def test_skips_pass_when_not_required(self, tmp_path: Path) -> None:
        done = self._run(tmp_path, self.BODY, None)
        assert done.returncode == pytest.ExitCode.OK, done.stdout
        assert "FAILED" not in done.stdout

    def test_not_applicable_skips_are_allowed(self, tmp_path: Path) -> None:
        body = self.BODY.replace("CHEFSPLAN_TEST_RPC_URL is not set", "not applicable: no chain")
        done = self._run(tmp_path, body, "1")
        assert done.returncode == pytest.ExitCode.OK, done.stdout

    def test_a_missing_server_address_fails_when_required(self, tmp_path: Path) -> None:
        body = "def test_chain(rpc_url):\n    assert rpc_url\n"
        env_free = self._run(tmp_path, body, "1")
        assert env_free.returncode == pytest.ExitCode.TESTS_FAILED, env_free.stdout
        assert "CHEFSPLAN_TEST_RPC_URL is not set: run `make integration`" in env_free.stdout
