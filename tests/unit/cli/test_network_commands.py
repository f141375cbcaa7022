"""``chefsplan registry ls``, ``task post|show|watch`` and ``verify`` against a running network.

The network is a devnet (in-process EVM with the contracts, a blockstore folder, three nodes
running the tiny model). The CLI reads its chain and store from a settings file selected with
``--profile``, exactly as against a remote network; only the chain connection is handed the
devnet's chain (the embedded chain lives in this process, so there is no URL to dial).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest

from chefsplan_agents.cli import _network, run
from chefsplan_agents.devnet import Devnet
from chefsplan_agents.identity import PASSPHRASE_ENV, Identity, save_keystore
from chefsplan_agents.registry import offer_hash

PASSPHRASE = "requester passphrase"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    workdir = tmp_path_factory.mktemp("devnet")
    with Devnet.create(nodes=3, model="tiny", store="local", workdir=workdir) as devnet:
        yield devnet


@pytest.fixture(scope="module")
def requester_keystore(net: Devnet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    identity = Identity.generate()
    net.chain.transfer(identity.address, 10**19)
    path = tmp_path_factory.mktemp("keys") / "requester.json"
    save_keystore(identity, path, PASSPHRASE, scrypt_n=2**4)
    return path


@pytest.fixture(autouse=True)
def _settings(
    net: Devnet, requester_keystore: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A settings file whose `devnet` profile points at the devnet's contracts and store."""
    for name in list(os.environ):
        if name.startswith("CHEFSPLAN_"):
            monkeypatch.delenv(name)
    contracts = ", ".join(f'{k} = "{v}"' for k, v in net.deployment.addresses.items())
    config = tmp_path / "chefsplan.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'keystore = "{requester_keystore}"\n'
        "[profiles.devnet.chain]\n"
        'backend = "jsonrpc"\n'
        'rpc_url = "http://devnet.invalid:8545"\n'
        f"contracts = {{ {contracts} }}\n"
        "[profiles.devnet.storage]\n"
        'backend = "local"\n'
        f'path = "{net.workdir / "blocks"}"\n'
    )
    monkeypatch.setenv("CHEFSPLAN_CONFIG", str(config))
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)

    def devnet_chain(settings: Any, **_: Any) -> Any:
        assert settings.rpc_url == "http://devnet.invalid:8545"  # the profile was applied
        return nullcontext(net.chain)

    monkeypatch.setattr(_network, "open_chain", devnet_chain)


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, Any]:
    code = run(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc: dict[str, Any] = json.loads(captured.out)
    return doc


def _settle(net: Devnet, task_id: str, rounds: int = 60) -> None:
    for _ in range(rounds):
        if net.market.events("TaskFinalized", task_id=task_id):
            return
        net.step()
    raise AssertionError(f"task {task_id} did not settle")


def _post(capsys: pytest.CaptureFixture[str], net: Devnet, replicas: int = 3) -> dict[str, Any]:
    return _json(
        capsys,
        [
            "--profile",
            "devnet",
            "task",
            "post",
            "Say hi",
            "--model",
            net.model_sha256,
            "--replicas",
            str(replicas),
            "--max-tokens",
            "16",
            "--json",
        ],
    )


def test_registry_ls_lists_offers_and_flags_a_missing_one(
    net: Devnet, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = _json(capsys, ["--profile", "devnet", "registry", "ls", "--json"])
    listed = {p["address"]: p for p in doc["providers"]}
    assert {n.address for n in net.nodes} <= set(listed)
    for node in net.nodes:
        entry = listed[node.address]
        assert entry["did"] == node.identity.did and entry["offer_status"] == "valid"
        assert entry["model_sha256"] == net.model_sha256
        assert entry["generation_tokens_per_s"] > 0 and int(entry["stake_wei"]) > 0

    # A provider whose offer is not in the store is listed as missing, not hidden.
    ghost = Identity.generate()
    net.chain.transfer(ghost.address, 10**19)
    net.chain.add_account(ghost.export_secrets()[1])
    cid = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    net.registry.register(
        ghost.did, cid, offer_hash(b"gone"), stake=net.registry.min_stake, sender=ghost.address
    )
    doc = _json(capsys, ["--profile", "devnet", "registry", "ls", "--json"])
    listed = {p["address"]: p for p in doc["providers"]}
    assert listed[ghost.address]["offer_status"] == "missing"
    assert "not available" in listed[ghost.address]["offer_reason"]

    # Filters return only valid offers that match.
    doc = _json(capsys, ["-p", "devnet", "registry", "ls", "--model", "nope", "--json"])
    assert doc["providers"] == []

    monkeypatch.setenv("COLUMNS", "120")
    assert run(["--profile", "devnet", "registry", "ls"]) == 0
    captured = capsys.readouterr()
    assert "missing" in captured.out and "valid" in captured.out
    assert net.nodes[0].address[:8] in captured.out
    assert "offers 3 valid" in captured.err


def test_post_show_watch_verify(net: Devnet, capsys: pytest.CaptureFixture[str]) -> None:
    posted = _post(capsys, net)
    assert posted["status"] == "posted" and posted["replicas"] == 3 and posted["quorum"] == 2
    task_id = posted["task_id"]

    shown = _json(capsys, ["-p", "devnet", "task", "show", task_id, "--json"])
    assert shown["status"] == "open" and shown["stage"] == "posted"
    assert shown["prompt"] == "Say hi" and shown["bundle_cid"] == posted["bundle_cid"]

    # Watch while the nodes work in another thread: the live view follows every stage.
    stepper = threading.Thread(target=_settle, args=(net, task_id))
    stepper.start()
    try:
        code = run(["-p", "devnet", "task", "watch", task_id, "--timeout", "120"])
    finally:
        stepper.join()
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "CHEFSPLAN OK" in captured.out
    assert "✓ finalized" in captured.err

    shown = _json(capsys, ["-p", "devnet", "task", "show", task_id, "--json"])
    assert shown["status"] == "finalized" and shown["result"] == "accepted"
    assert shown["output"] == "CHEFSPLAN OK" and shown["winners"] == 3
    receipt = _json(capsys, ["-p", "devnet", "task", "watch", task_id, "--json"])
    assert receipt["status"] == "finalized" and receipt["result_cid"] == shown["result_cid"]

    verdict = _json(
        capsys,
        ["-p", "devnet", "verify", shown["result_cid"], "--task", posted["bundle_cid"],
         "--model", "tiny", "--json"],
    )  # fmt: skip
    assert verdict["passed"] is True and verdict["top1_fraction"] == 1.0
    assert verdict["node_did"] in {n.identity.did for n in net.nodes}

    # A result checked against another task is refused in one line.
    code = run(["-p", "devnet", "verify", shown["result_cid"], "--task", shown["result_cid"]])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"error: --task {shown['result_cid']} is not a usable task bundle")


def test_post_and_watch_in_one_command(net: Devnet, capsys: pytest.CaptureFixture[str]) -> None:
    stop = threading.Event()

    def drive() -> None:
        while not stop.is_set():
            net.step()

    stepper = threading.Thread(target=drive)
    stepper.start()
    try:
        code = run(
            ["-p", "devnet", "task", "post", "Say hi", "--model", net.model_sha256, "--watch",
             "--timeout", "120", "--json"]
        )  # fmt: skip
    finally:
        stop.set()
        stepper.join()
    captured = capsys.readouterr()
    assert code == 0, captured.err
    receipt = json.loads(captured.out)
    assert receipt["output"] == "CHEFSPLAN OK" and len(receipt["replicas"]) == 1


def test_task_errors_are_one_line(net: Devnet, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["-p", "devnet", "task", "show", "0x1234"], "task id must be 32 bytes"),
        (["-p", "devnet", "task", "show", "0x" + "ab" * 32], "no task 0xabab"),
        (
            ["-p", "devnet", "task", "post", "x", "--model", "m", "--replicas", "2",
             "--quorum", "1"],
            "quorum 1 is invalid for 2 replicas",
        ),
        (["-p", "devnet", "task", "post", "x", "--model", "m", "-k", "/nope/k.json"],
         "no keystore at /nope/k.json"),
    ]  # fmt: skip
    for argv, message in cases:
        assert run(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert message in err and "Traceback" not in err
