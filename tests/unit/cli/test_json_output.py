"""``--json`` on every command: one JSON object on stdout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer

from chefsplan_agents.cli import app, run
from chefsplan_agents.identity import PASSPHRASE_ENV

# `node run` is a daemon: it prints one JSON line when ready and then serves until stopped.
# `mcp` speaks the Model Context Protocol's JSON-RPC on stdout; nothing else may be printed there.
NO_JSON = {"node run", "mcp"}


def _commands(group: Any, prefix: str = "") -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, command in group.commands.items():
        path = f"{prefix} {name}".strip()
        if hasattr(command, "commands"):
            found.update(_commands(command, path))
        else:
            found[path] = command
    return found


@pytest.fixture(autouse=True)
def _clean_settings(clean_settings: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "json passphrase")


def test_every_command_takes_json() -> None:
    commands = _commands(typer.main.get_command(app))
    assert {"registry ls", "task post", "task show", "task watch", "verify"} <= set(commands)
    lacking = [
        path
        for path, command in commands.items()
        if path not in NO_JSON and not any("--json" in p.opts for p in command.params)
    ]
    assert lacking == []


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, Any]:
    assert run(argv) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # one line
    doc: dict[str, Any] = json.loads(out)
    return doc


def test_offline_commands_print_one_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "hello.txt").write_bytes(b"hello\n")
    doc = _json(capsys, ["cid", "hello.txt", "--json"])
    assert doc == {"cid": doc["cid"], "cid_version": 1, "file": "hello.txt"}
    assert doc["cid"].startswith("bafkrei")
    assert _json(capsys, ["cid", "--v0", "hello.txt", "--json"])["cid"].startswith("Qm")

    created = _json(capsys, ["id", "new", "-k", "key.json", "--json"])
    assert created["did"].startswith("did:key:z6Mk") and created["address"].startswith("0x")
    signed = _json(capsys, ["id", "sign", "hello.txt", "-k", "key.json", "--json"])
    assert signed["did"] == created["did"]
    checked = _json(
        capsys,
        ["id", "verify", "hello.txt", "-s", signed["signature"], "--did", created["did"], "--json"],
    )
    assert checked == {"valid": True, "did": created["did"], "file": "hello.txt"}

    info = _json(capsys, ["chain", "info", "--json"])
    assert info["endpoint"] == "the in-process EVM"
    deployed = _json(capsys, ["chain", "deploy", "--json"])
    assert set(deployed) == {"AgentRegistry", "TaskMarket", "OutputLog"}
