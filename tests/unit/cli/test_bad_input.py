"""Bad input at the command line: one line on stderr that says what to do, never a traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from chefsplan_agents.cli import run

SOME_CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
ADDRESSES = json.dumps(
    {name: "0x" + "00" * 19 + f"{i + 1:02x}" for i, name in
     enumerate(("AgentRegistry", "TaskMarket", "OutputLog"))}
)  # fmt: skip


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(autouse=True)
def _clean_settings(clean_settings: Path) -> Path:
    tmp_path = clean_settings
    (tmp_path / "bad.toml").write_text("data_dir = [\n")
    (tmp_path / "types.toml").write_text('[storage]\nbackend = 5\n[llm]\nn_threads = "many"\n')
    (tmp_path / "profiles.toml").write_text('[profiles.testnet.chain]\nbackend = "jsonrpc"\n')
    (tmp_path / "file.txt").write_text("hello\n")
    return tmp_path


NODE_RUN = ["node", "run", "--keystore", "nope.json", "--deploy", "--store-path", "blocks"]

CASES = [
    # (argv, exit status, what the one line must say)
    (["frobnicate"], 2, "No such command 'frobnicate'; see 'chefsplan --help'"),
    (["cid", "--nope", "x"], 2, "No such option: --nope; see 'chefsplan cid --help'"),
    (["cid"], 2, "Missing argument 'file'"),
    (["devnet", "--task", "x", "--nodes", "many"], 2, "Invalid value for '--nodes'"),
    (["cid", "missing.txt"], 1, "missing.txt does not exist"),
    (["devnet", "--task", "x", "--model", "/nope/m.gguf"], 1, "model file /nope/m.gguf does"),
    (["verify", SOME_CID, "--task", SOME_CID, "--model", "/nope/m.gguf"], 1,
     "model file /nope/m.gguf does not exist"),
    (["--config", "bad.toml", "id", "show"], 1, "is not valid TOML"),
    (["--config", "types.toml", "id", "show"], 1, "invalid setting storage.backend"),
    (["--config", "absent.toml", "cid", "file.txt"], 1, "absent.toml does not exist"),
    (["--config", "profiles.toml", "--profile", "mainnet", "cid", "file.txt"], 1,
     "unknown profile 'mainnet'"),
    (["registry", "ls"], 1, "no chain configured"),
    (["task", "show", "0x" + "00" * 32], 1, "no chain configured"),
    (["registry", "ls", "--rpc", "http://127.0.0.1:1"], 1, "no contract addresses"),
    (["registry", "ls", "--rpc", "http://127.0.0.1:1", "--contracts", "{oops"], 1,
     "--contracts is not JSON"),
    (["id", "show", "-k", "nope.json"], 1, "no keystore at nope.json"),
    # The testing cheats are checked before any keystore, chain or model is touched.
    ([*NODE_RUN, "--testing-cheat", "nope"], 1, "unknown cheat 'nope'; choose one of: lazy"),
    ([*NODE_RUN, "--testing-cheat", "wrong-model"], 1, "needs the other model it runs"),
    ([*NODE_RUN, "--testing-cheat", "lazy", "--testing-cheat-model", "m.gguf"], 1,
     "no other cheat takes one"),
    ([*NODE_RUN, "--testing-cheat-fraction", "0.5"], 1, "need --testing-cheat"),
    ([*NODE_RUN, "--testing-cheat", "lazy", "--testing-cheat-fraction", "0"], 1,
     "must be in (0, 1]"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "status", "message"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_one_line_and_a_hint(
    argv: list[str], status: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(argv) == status
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


def test_config_errors_say_what_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--config", "bad.toml", "id", "show"]) == 1
    assert "fix the file, or pass another with --config" in capsys.readouterr().err
    assert run(["--config", "types.toml", "id", "show"]) == 1
    assert "fix the value in types.toml" in capsys.readouterr().err
    assert run(["--config", "profiles.toml", "-p", "mainnet", "cid", "file.txt"]) == 1
    assert "(known: testnet)" in capsys.readouterr().err


def test_profile_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHEFSPLAN_CONFIG", "profiles.toml")
    monkeypatch.setenv("CHEFSPLAN_PROFILE", "testnet")
    # The testnet profile selects a JSON-RPC chain: the command gets past "no chain" to the
    # missing contracts.
    assert run(["registry", "ls"]) == 1
    assert "no contract addresses for the chain at http://127.0.0.1:8545" in capsys.readouterr().err
    monkeypatch.setenv("CHEFSPLAN_PROFILE", "mainnet")
    assert run(["registry", "ls"]) == 1
    assert "unknown profile 'mainnet'" in capsys.readouterr().err


def test_unreachable_chain(capsys: pytest.CaptureFixture[str]) -> None:
    port = _closed_port()
    for argv in (
        ["registry", "ls", "--contracts", ADDRESSES],
        ["task", "show", "0x" + "00" * 32, "--contracts", ADDRESSES],
    ):
        assert run([*argv, "--rpc", f"http://127.0.0.1:{port}"]) == 1
        err = capsys.readouterr().err
        assert err == (
            f"error: cannot reach the chain node at http://127.0.0.1:{port} (ConnectionError); "
            "start the node or fix chain.rpc_url\n"
        )


def test_a_real_process_prints_no_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHEFSPLAN_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    for argv, status in (
        (["frobnicate"], 2),
        (["--config", "bad.toml", "registry", "ls"], 1),
        (["registry", "ls", "--rpc", f"http://127.0.0.1:{_closed_port()}", "--contracts",
          ADDRESSES], 1),
    ):  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "chefsplan_agents", *argv],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env=env,
        )
        assert proc.returncode == status, proc.stderr
        assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
        assert proc.stderr.startswith("error: ")
