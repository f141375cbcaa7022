"""An encrypted keystore file for one :class:`Identity`.

Format (JSON, ``version`` 1)::

    {
      "kind": "chefsplan-keystore", "version": 1,
      "did": "did:key:z6Mk…", "address": "0x…",
      "kdf": "scrypt", "kdfparams": {"n": 131072, "r": 8, "p": 1, "salt": "<hex>"},
      "cipher": "aes-256-gcm", "nonce": "<hex>", "ciphertext": "<hex>"
    }

The DID and address are public so ``chefsplan id show`` needs no passphrase; they are bound to
the ciphertext as AES-GCM associated data, so editing them makes decryption fail. The file is
written with mode 0600 through a temporary file and an atomic rename.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from chefsplan_agents import _json
from chefsplan_agents.errors import IdentityError, KeystoreError
from chefsplan_agents.identity._identity import Identity

__all__ = [
    "PASSPHRASE_ENV",
    "KeystoreInfo",
    "load_keystore",
    "read_keystore_info",
    "save_keystore",
]

PASSPHRASE_ENV = "CHEFSPLAN_KEYSTORE_PASSPHRASE"
_KIND = "chefsplan-keystore"
_VERSION = 1
_SCRYPT_R = 8
_SCRYPT_P = 1
_DEFAULT_SCRYPT_N = 2**17
# scrypt works on 128·r·n bytes per lane, p lanes: what save_keystore writes costs
# 128·8·2**17·1 = 128 MiB. A file may ask for twice that (one doubling of n, for files written
# with a stronger setting) and no more, so a hostile or corrupt keystore cannot make loading
# allocate gigabytes or run for minutes. The cap is checked before scrypt runs.
_MAX_SCRYPT_COST = 256 * 1024 * 1024
_MAX_SCRYPT_N = _MAX_SCRYPT_COST // (128 * _SCRYPT_R * _SCRYPT_P)
# A keystore is well under a kilobyte; read no more than this from the file.
_MAX_KEYSTORE_BYTES = 64 * 1024


@dataclass(frozen=True)
class KeystoreInfo:
    """The public part of a keystore file."""

    path: Path
    did: str
    address: str


def _passphrase(passphrase: str | None) -> bytes:
    value = passphrase if passphrase is not None else os.environ.get(PASSPHRASE_ENV)
    if not value:
        raise KeystoreError(f"no keystore passphrase: pass one or set ${PASSPHRASE_ENV}")
    return value.encode("utf-8")


def _kdf_int(params: Any, name: str) -> int:
    value = params[name]
    # Only whole JSON numbers: int() of a float, a string or a bool would accept look-alikes.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"kdfparams.{name} is {type(value).__name__}, not an integer")
    return value


def _derive(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def _aad(did: str, address: str) -> bytes:
    return f"{_KIND}/{_VERSION}\n{did}\n{address}".encode()


def save_keystore(
    identity: Identity,
    path: str | Path,
    passphrase: str | None = None,
    *,
    overwrite: bool = False,
    scrypt_n: int = _DEFAULT_SCRYPT_N,
) -> Path:
    """Encrypt an identity into a keystore file (mode 0600, atomic write).

    Args:
        identity: The identity to store.
        path: The file to write; parent folders are created (mode 0700).
        passphrase: The passphrase; ``None`` reads ``$CHEFSPLAN_KEYSTORE_PASSPHRASE``.
        overwrite: Replace an existing file. Without it an existing file is an error.
        scrypt_n: scrypt cost (a power of two); lower it only in tests.

    Returns:
        The path written.

    Raises:
        KeystoreError: No passphrase, the file exists, or it cannot be written.
    """
    file = Path(path).expanduser()
    secret = _passphrase(passphrase)
    if scrypt_n < 2 or scrypt_n & (scrypt_n - 1) or scrypt_n > _MAX_SCRYPT_N:
        raise KeystoreError(f"scrypt_n must be a power of two up to {_MAX_SCRYPT_N}")
    if file.exists() and not overwrite:
        raise KeystoreError(f"keystore {file} already exists; use --force to replace it")
    salt = secrets.token_bytes(16)
    nonce = secrets.token_bytes(12)
    key = _derive(secret, salt, scrypt_n, _SCRYPT_R, _SCRYPT_P)
    seed, evm_key = identity.export_secrets()
    plaintext = json.dumps({"ed25519_seed": seed.hex(), "evm_private_key": evm_key.hex()})
    ciphertext = AESGCM(key).encrypt(
        nonce, plaintext.encode("ascii"), _aad(identity.did, identity.address)
    )
    document = {
        "kind": _KIND,
        "version": _VERSION,
        "did": identity.did,
        "address": identity.address,
        "kdf": "scrypt",
        "kdfparams": {"n": scrypt_n, "r": _SCRYPT_R, "p": _SCRYPT_P, "salt": salt.hex()},
        "cipher": "aes-256-gcm",
        "nonce": nonce.hex(),
        "ciphertext": ciphertext.hex(),
    }
    try:
        file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".tmp", dir=file.parent)
        try:
            # mkstemp creates the file 0600 already; chmod guards against odd umasks/filesystems.
            os.chmod(tmp, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(document, handle, indent=2)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        raise KeystoreError(f"cannot write keystore {file}: {err.strerror or err}") from err
    return file


def _read_document(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as handle:
            raw = handle.read(_MAX_KEYSTORE_BYTES + 1)
    except FileNotFoundError as err:
        raise KeystoreError(f"no keystore at {file}; create one with `chefsplan id new`") from err
    except OSError as err:
        raise KeystoreError(f"cannot read keystore {file}: {err}") from err
    if len(raw) > _MAX_KEYSTORE_BYTES:
        raise KeystoreError(
            f"{file} is over {_MAX_KEYSTORE_BYTES} bytes; it is not a chefsplan keystore"
        )
    try:
        document = _json.loads(raw)
    except _json.JsonTooDeep as err:
        raise KeystoreError(f"keystore {file} is corrupt: {err}") from err
    except UnicodeDecodeError as err:
        raise KeystoreError(f"cannot read keystore {file}: {err}") from err
    except ValueError as err:
        raise KeystoreError(f"keystore {file} is corrupt: not JSON") from err
    if not isinstance(document, dict) or document.get("kind") != _KIND:
        raise KeystoreError(f"{file} is not a chefsplan keystore")
    if document.get("version") != _VERSION:
        raise KeystoreError(
            f"keystore {file} has version {document.get('version')!r}; this package reads "
            f"version {_VERSION}"
        )
    if not isinstance(document.get("did"), str) or not isinstance(document.get("address"), str):
        raise KeystoreError(f"keystore {file} is corrupt: missing did or address")
    return document


def read_keystore_info(path: str | Path) -> KeystoreInfo:
    """Read a keystore's public DID and address without the passphrase.

    Raises:
        KeystoreError: The file is missing or not a keystore.
    """
    file = Path(path).expanduser()
    document = _read_document(file)
    return KeystoreInfo(path=file, did=document["did"], address=document["address"])


def load_keystore(path: str | Path, passphrase: str | None = None) -> Identity:
    """Decrypt an identity from a keystore file.

    Args:
        path: The keystore file.
        passphrase: The passphrase; ``None`` reads ``$CHEFSPLAN_KEYSTORE_PASSPHRASE``.

    Returns:
        The identity.

    Raises:
        KeystoreError: The file is missing or corrupt, or the passphrase is wrong.
    """
    file = Path(path).expanduser()
    document = _read_document(file)
    secret = _passphrase(passphrase)
    try:
        if document["kdf"] != "scrypt" or document["cipher"] != "aes-256-gcm":
            raise KeystoreError(
                f"keystore {file} uses {document['kdf']}/{document['cipher']}; "
                "only scrypt/aes-256-gcm is supported"
            )
        params = document["kdfparams"]
        n, r, p = (_kdf_int(params, name) for name in ("n", "r", "p"))
        if n < 2 or n & (n - 1) or r < 1 or p < 1:
            raise KeystoreError(f"keystore {file} is corrupt: scrypt parameters out of range")
        cost = 128 * r * n * p
        if cost > _MAX_SCRYPT_COST:
            raise KeystoreError(
                f"keystore {file} asks scrypt for {cost // 2**20} MiB (n={n}, r={r}, p={p}), "
                f"over the {_MAX_SCRYPT_COST // 2**20} MiB limit; re-create it with "
                "`chefsplan id new`"
            )
        salt = bytes.fromhex(params["salt"])
        nonce = bytes.fromhex(document["nonce"])
        ciphertext = bytes.fromhex(document["ciphertext"])
        key = _derive(secret, salt, n, r, p)
    except KeystoreError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise KeystoreError(f"keystore {file} is corrupt: {type(err).__name__} {err}") from err
    try:
        plaintext = AESGCM(key).decrypt(
            nonce, ciphertext, _aad(document["did"], document["address"])
        )
    except (InvalidTag, ValueError) as err:
        raise KeystoreError(
            f"cannot decrypt keystore {file}: wrong passphrase or the file was modified"
        ) from err
    try:
        secrets_ = _json.loads(plaintext)
        identity = Identity(
            bytes.fromhex(secrets_["ed25519_seed"]), bytes.fromhex(secrets_["evm_private_key"])
        )
    except (KeyError, TypeError, ValueError, IdentityError) as err:
        raise KeystoreError(f"keystore {file} is corrupt: bad key material") from err
    if identity.did != document["did"] or identity.address != document["address"]:
        raise KeystoreError(f"keystore {file} is corrupt: keys do not match its DID/address")
    return identity
