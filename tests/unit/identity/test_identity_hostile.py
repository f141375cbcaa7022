"""Identity inputs from strangers: deep JSON, oversized DIDs and costly keystores are refused."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chefsplan_agents.errors import DidBackendError, InvalidCredential, InvalidDid, KeystoreError
from chefsplan_agents.identity import (
    DidkitBackend,
    Identity,
    _keystore,
    issue_credential,
    load_keystore,
    public_key_from_did,
    save_keystore,
    verify_credential,
)

DEEP = b"[" * 200_000
# Keystores are refused unread over 64 KiB; this still nests deeper than the C stack holds once
# the recursion limit is raised (a crash needs ~20 000 levels).
DEEP_SMALL = b"[" * 30_000


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# --- VC-JWT ----------------------------------------------------------------------------------


@pytest.mark.parametrize("part", ["header", "payload"])
def test_a_deeply_nested_jws_part_is_an_invalid_credential(part: str) -> None:
    token = issue_credential(Identity.generate(), {"x": 1})
    head, body, signature = token.split(".")
    if part == "header":
        head = _b64(DEEP)
    else:
        body = _b64(DEEP)
    with pytest.raises(InvalidCredential, match="levels deep") as info:
        verify_credential(f"{head}.{body}.{signature}")
    _one_line(info)


@pytest.mark.parametrize("when", [1e300, float("inf"), -(10**20)])
def test_a_timestamp_outside_the_calendar_is_an_invalid_credential(when: float) -> None:
    identity = Identity.generate()
    head, body, signature = issue_credential(identity, {"x": 1}).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["exp"] = when
    forged = _b64(json.dumps(claims).encode())
    with pytest.raises(InvalidCredential, match="exp .* is not a timestamp"):
        verify_credential(f"{head}.{forged}.{signature}")


def test_a_huge_did_is_refused_before_base58_decoding() -> None:
    did = "did:key:z" + "6" * 60_000
    with pytest.raises(InvalidDid, match="too long") as info:
        public_key_from_did(did)
    _one_line(info)


# --- keystore --------------------------------------------------------------------------------


def _write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document))
    return path


def _keystore_with(
    tmp_path: Path, plaintext: bytes, *, n: int = 2**4, r: int = 8, p: int = 1
) -> Path:
    """A keystore whose ciphertext decrypts, under passphrase "pw", to ``plaintext``."""
    identity = Identity.generate()
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    key = _keystore._derive(b"pw", salt, n, r, p)
    aad = _keystore._aad(identity.did, identity.address)
    return _write(
        tmp_path / "k.json",
        {
            "kind": "chefsplan-keystore",
            "version": 1,
            "did": identity.did,
            "address": identity.address,
            "kdf": "scrypt",
            "kdfparams": {"n": n, "r": r, "p": p, "salt": salt.hex()},
            "cipher": "aes-256-gcm",
            "nonce": nonce.hex(),
            "ciphertext": AESGCM(key).encrypt(nonce, plaintext, aad).hex(),
        },
    )


def test_a_deeply_nested_keystore_file_is_a_keystore_error(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_bytes(DEEP_SMALL)
    with pytest.raises(KeystoreError, match="corrupt: JSON nests") as info:
        load_keystore(path, "pw")
    _one_line(info)


def test_a_deeply_nested_secret_inside_a_keystore_is_a_keystore_error(tmp_path: Path) -> None:
    path = _keystore_with(tmp_path, DEEP_SMALL)
    with pytest.raises(KeystoreError, match="bad key material") as info:
        load_keystore(path, "pw")
    _one_line(info)


def test_an_oversized_keystore_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_bytes(b" " * (1 << 20) + b"{}")
    with pytest.raises(KeystoreError, match="over 65536 bytes"):
        load_keystore(path, "pw")


@pytest.mark.parametrize(
    ("n", "r", "p"),
    [
        (2**20, 8, 1),  # 1 GiB: the old limit
        (2**18, 32, 1),  # 1 GiB through r
        (2**18, 8, 2),  # 256 MiB per lane, two lanes
        (2**17, 8, 16),
        (2**40, 1, 1),
    ],
)
def test_scrypt_parameters_over_the_cost_cap_are_refused_before_scrypt_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int, r: int, p: int
) -> None:
    good = load_keystore(
        save_keystore(Identity.generate(), tmp_path / "g.json", "pw", scrypt_n=16), "pw"
    )
    assert good is not None
    document = json.loads((tmp_path / "g.json").read_text())
    document["kdfparams"].update(n=n, r=r, p=p)
    path = _write(tmp_path / "k.json", document)
    ran: list[int] = []
    monkeypatch.setattr(_keystore, "_derive", lambda *args: ran.append(1) or b"\0" * 32)
    with pytest.raises(KeystoreError, match="over the 256 MiB limit") as info:
        load_keystore(path, "pw")
    _one_line(info)
    assert ran == []


@pytest.mark.parametrize("bad", [{"n": "1024"}, {"r": 8.0}, {"p": True}, {"n": 1000}, {"r": 0}])
def test_scrypt_parameters_must_be_whole_positive_numbers(
    tmp_path: Path, bad: dict[str, object]
) -> None:
    save_keystore(Identity.generate(), tmp_path / "g.json", "pw", scrypt_n=16)
    document = json.loads((tmp_path / "g.json").read_text())
    document["kdfparams"].update(bad)
    path = _write(tmp_path / "k.json", document)
    with pytest.raises(KeystoreError, match="corrupt"):
        load_keystore(path, "pw")


def test_what_chefsplan_id_new_writes_is_within_the_cap(tmp_path: Path) -> None:
    # The default cost (n=2**17, r=8, p=1: 128 MiB) must load; the cap leaves it one doubling.
    identity = Identity.generate()
    path = save_keystore(identity, tmp_path / "k.json", "pw")
    assert json.loads(path.read_text())["kdfparams"]["n"] == 2**17
    assert load_keystore(path, "pw") == identity
    with pytest.raises(KeystoreError, match="power of two up to 262144"):
        save_keystore(identity, tmp_path / "k2.json", "pw", scrypt_n=2**19)


# --- the didkit worker's reply ---------------------------------------------------------------


def test_a_deeply_nested_worker_reply_is_a_backend_error(tmp_path: Path) -> None:
    # A stand-in interpreter that answers any request with 200 000 '['.
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nhead -c 200000 /dev/zero | tr '\\0' '['\n")
    fake.chmod(0o755)
    backend = DidkitBackend(python=str(fake), timeout_s=30)
    with pytest.raises(DidBackendError, match="no JSON reply") as info:
        backend.did_for(Identity.generate())
    _one_line(info)


def test_deep_identity_inputs_do_not_kill_a_process_that_imported_the_chain(
    tmp_path: Path,
) -> None:
    deep_file = tmp_path / "deep.json"
    deep_file.write_bytes(DEEP_SMALL)
    deep_secret = _keystore_with(tmp_path, DEEP_SMALL).rename(tmp_path / "secret.json")
    head, _, signature = issue_credential(Identity.generate(), {"x": 1}).split(".")
    token = tmp_path / "token"
    token.write_text(f"{head}.{_b64(DEEP)}.{signature}")
    program = (
        "import sys\n"
        "from pathlib import Path\n"
        "import chefsplan_agents.chain\n"
        "from chefsplan_agents.errors import InvalidCredential, KeystoreError\n"
        "from chefsplan_agents.identity import load_keystore, verify_credential\n"
        "assert sys.getrecursionlimit() >= 100000\n"
        "for path in sys.argv[1:3]:\n"
        "    try:\n"
        "        load_keystore(path, 'pw')\n"
        "    except KeystoreError:\n"
        "        print('keystore refused')\n"
        "try:\n"
        "    verify_credential(Path(sys.argv[3]).read_text())\n"
        "except InvalidCredential:\n"
        "    print('credential refused')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, str(deep_file), str(deep_secret), str(token)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["keystore refused"] * 2 + ["credential refused"]
