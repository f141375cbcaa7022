"""``chefsplan chain deploy`` and ``chefsplan chain info`` on the embedded chain."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from chefsplan_agents.cli import run


@pytest.fixture(autouse=True)
def _clean_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read settings from an empty config and no ``CHEFSPLAN_*`` variables."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    for name in list(os.environ):
        if name.startswith("CHEFSPLAN_"):
            monkeypatch.delenv(name)


def test_deploy_prints_addresses_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["chain", "deploy", "--min-stake", "5"]) == 0
    captured = capsys.readouterr()
    addresses = json.loads(captured.out)
    assert set(addresses) == {"AgentRegistry", "TaskMarket", "OutputLog"}
    assert all(a.startswith("0x") and len(a) == 42 for a in addresses.values())
    assert "deploying to chain" in captured.err


def test_info_on_the_embedded_chain(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["chain", "info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["endpoint"] == "the in-process EVM" and info["block"] == 0
    assert "contracts" not in info


def test_info_with_missing_contracts_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    empty = "0x" + "00" * 19 + "01"
    contracts = json.dumps({"AgentRegistry": empty, "TaskMarket": empty, "OutputLog": empty})
    assert run(["chain", "info", "--contracts", contracts]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no AgentRegistry contract at") and "\n" not in err
    assert run(["chain", "info", "--contracts", "{oops"]) == 1
    assert "--contracts is not JSON" in capsys.readouterr().err


def test_deploy_to_rpc_needs_a_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ETH_PRIVATE_KEY", raising=False)
    assert run(["chain", "deploy", "--rpc", "http://127.0.0.1:8545"]) == 1
    assert "no deployer key: set $ETH_PRIVATE_KEY" in capsys.readouterr().err


def test_unreachable_rpc(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert run(["chain", "info", "--rpc", f"http://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: cannot reach the chain node at http://127.0.0.1:{port} (ConnectionError); "
        "start the node or fix chain.rpc_url"
    )
