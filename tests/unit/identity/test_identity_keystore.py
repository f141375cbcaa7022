"""The encrypted keystore file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from chefsplan_agents.errors import KeystoreError
from chefsplan_agents.identity import (
    PASSPHRASE_ENV,
    Identity,
    load_keystore,
    read_keystore_info,
    save_keystore,
)

FAST = 2**10  # scrypt cost for tests; the default is 2**17


@pytest.fixture
def ident() -> Identity:
    return Identity.generate()


@pytest.fixture
def saved(tmp_path: Path, ident: Identity) -> Path:
    return save_keystore(ident, tmp_path / "sub" / "key.json", "correct horse", scrypt_n=FAST)


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text
    return text


def test_round_trip(saved: Path, ident: Identity) -> None:
    loaded = load_keystore(saved, "correct horse")
    assert loaded == ident
    assert loaded.did == ident.did and loaded.address == ident.address


def test_file_is_private_and_holds_no_plain_secret(saved: Path, ident: Identity) -> None:
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    text = saved.read_text()
    seed, evm_key = ident.export_secrets()
    assert seed.hex() not in text and evm_key.hex() not in text
    document = json.loads(text)
    assert document["version"] == 1 and document["kdf"] == "scrypt"
    assert document["cipher"] == "aes-256-gcm"
    assert document["did"] == ident.did


def test_no_temporary_files_are_left(saved: Path) -> None:
    assert [p.name for p in saved.parent.iterdir()] == ["key.json"]


def test_refuses_to_overwrite(saved: Path) -> None:
    other = Identity.generate()
    with pytest.raises(KeystoreError, match="already exists") as info:
        save_keystore(other, saved, "x", scrypt_n=FAST)
    _one_line(info.value)
    save_keystore(other, saved, "x", overwrite=True, scrypt_n=FAST)
    assert load_keystore(saved, "x") == other


def test_wrong_passphrase(saved: Path) -> None:
    with pytest.raises(KeystoreError, match="wrong passphrase") as info:
        load_keystore(saved, "incorrect horse")
    _one_line(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="no keystore at .*chefsplan id new") as info:
        load_keystore(tmp_path / "nope.json", "x")
    _one_line(info.value)
    with pytest.raises(KeystoreError, match="no keystore"):
        read_keystore_info(tmp_path / "nope.json")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not JSON"),
        ("[]", "not a chefsplan keystore"),
        ('{"kind": "chefsplan-keystore", "version": 7}', "version 7"),
        ('{"kind": "chefsplan-keystore", "version": 1}', "missing did"),
    ],
)
def test_corrupt_files(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "key.json"
    path.write_text(content)
    with pytest.raises(KeystoreError, match=needle) as info:
        load_keystore(path, "x")
    _one_line(info.value)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("ciphertext", "00" * 40, "wrong passphrase or the file was modified"),
        ("ciphertext", "xyz", "corrupt"),
        ("nonce", "00" * 12, "wrong passphrase or the file was modified"),
        ("kdfparams", {"n": 2**40, "r": 8, "p": 1, "salt": "00"}, "over the 256 MiB limit"),
        ("kdfparams", {"r": 8}, "corrupt"),
        ("cipher", "rot13", "only scrypt/aes-256-gcm"),
    ],
)
def test_tampered_files(saved: Path, field: str, value: object, needle: str) -> None:
    document = json.loads(saved.read_text())
    document[field] = value
    saved.write_text(json.dumps(document))
    with pytest.raises(KeystoreError, match=needle) as info:
        load_keystore(saved, "correct horse")
    _one_line(info.value)


def test_swapping_the_public_did_breaks_decryption(saved: Path) -> None:
    # The DID/address are associated data: a file cannot claim another identity.
    document = json.loads(saved.read_text())
    document["did"] = Identity.generate().did
    saved.write_text(json.dumps(document))
    with pytest.raises(KeystoreError, match="modified"):
        load_keystore(saved, "correct horse")


def test_passphrase_from_environment(
    tmp_path: Path, ident: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "from-env")
    path = save_keystore(ident, tmp_path / "k.json", scrypt_n=FAST)
    assert load_keystore(path) == ident
    monkeypatch.setenv(PASSPHRASE_ENV, "other")
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        load_keystore(path)


def test_no_passphrase_is_an_error(
    tmp_path: Path, ident: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    with pytest.raises(KeystoreError, match=PASSPHRASE_ENV):
        save_keystore(ident, tmp_path / "k.json", scrypt_n=FAST)
    assert not (tmp_path / "k.json").exists()


def test_info_needs_no_passphrase(saved: Path, ident: Identity) -> None:
    info = read_keystore_info(saved)
    assert (info.did, info.address, info.path) == (ident.did, ident.address, saved)


def test_bad_scrypt_cost_is_rejected(tmp_path: Path, ident: Identity) -> None:
    with pytest.raises(KeystoreError, match="power of two"):
        save_keystore(ident, tmp_path / "k.json", "x", scrypt_n=1000)
