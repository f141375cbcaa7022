"""``chefsplan id``: new, show, sign, verify."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from chefsplan_agents.cli import run
from chefsplan_agents.identity import PASSPHRASE_ENV, load_keystore


@pytest.fixture
def keystore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(PASSPHRASE_ENV, "cli passphrase")
    monkeypatch.setenv("CHEFSPLAN_CONFIG", str(tmp_path / "absent.toml"))
    return tmp_path / "keys" / "key.json"


def _new(keystore: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    assert run(["id", "new", "--keystore", str(keystore)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    return dict(line.split(": ", 1) for line in lines)


def test_new_then_show(keystore: Path, capsys: pytest.CaptureFixture[str]) -> None:
    created = _new(keystore, capsys)
    assert created["did"].startswith("did:key:z6Mk")  # not mangled into an emoji
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o600
    ident = load_keystore(keystore)
    assert (created["did"], created["address"]) == (ident.did, ident.address)

    assert run(["id", "show", "-k", str(keystore), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["did"] == ident.did and shown["address"] == ident.address

    assert run(["id", "show", "-k", str(keystore)]) == 0
    out = capsys.readouterr().out
    seed, evm_key = ident.export_secrets()
    assert ident.did in out and seed.hex() not in out and evm_key.hex() not in out


def test_new_refuses_to_overwrite_without_force(
    keystore: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _new(keystore, capsys)
    assert run(["id", "new", "-k", str(keystore)]) == 1
    captured = capsys.readouterr()
    assert "already exists; use --force" in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert load_keystore(keystore).did == first["did"]
    assert run(["id", "new", "-k", str(keystore), "--force"]) == 0
    second = dict(line.split(": ", 1) for line in capsys.readouterr().out.strip().splitlines())
    assert second["did"] != first["did"]
    assert load_keystore(keystore).did == second["did"]


def test_sign_and_verify(
    keystore: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    did = _new(keystore, capsys)["did"]
    doc = tmp_path / "doc.txt"
    doc.write_bytes(b"menu for twelve")
    assert run(["id", "sign", str(doc), "-k", str(keystore)]) == 0
    signature = capsys.readouterr().out.strip()
    assert run(["id", "verify", str(doc), "--signature", signature, "--did", did]) == 0
    assert "valid signature" in capsys.readouterr().out

    doc.write_bytes(b"menu for thirteen")
    assert run(["id", "verify", str(doc), "--signature", signature, "--did", did]) == 1
    err = capsys.readouterr().err
    assert f"signature does not verify for {did}" in err
    assert len(err.strip().splitlines()) == 1


def test_errors_are_one_line(
    keystore: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert run(["id", "show", "-k", str(keystore)]) == 1
    assert "no keystore at" in capsys.readouterr().err

    _new(keystore, capsys)
    doc = tmp_path / "doc.txt"
    doc.write_bytes(b"x")
    monkeypatch.setenv(PASSPHRASE_ENV, "wrong")
    assert run(["id", "sign", str(doc), "-k", str(keystore)]) == 1
    err = capsys.readouterr().err
    assert "wrong passphrase" in err and len(err.strip().splitlines()) == 1

    assert run(["id", "verify", str(doc), "-s", "AAAA", "--did", "did:web:x"]) == 1
    assert "is not a did:key" in capsys.readouterr().err

    assert run(["id", "sign", str(tmp_path / "missing"), "-k", str(keystore)]) == 1
    assert "cannot read" in capsys.readouterr().err
