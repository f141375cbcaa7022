"""A node's or agent's identity: an Ed25519 ``did:key`` plus a secp256k1 EVM account."""

from __future__ import annotations

import base64
import hmac
import secrets
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from eth_account import Account
from eth_account.messages import encode_defunct

from chefsplan_agents.errors import IdentityError
from chefsplan_agents.identity._didkey import did_from_public_key, key_id

__all__ = ["Identity"]


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class Identity:
    """An Ed25519 signing key (its ``did:key``) and an EVM account, held in memory.

    Secrets never appear in ``repr()``/``str()``; they leave the object only through
    :meth:`export_secrets` (used by the keystore) and :meth:`private_jwk` (used by the didkit
    backend, over a pipe to a child process).

    Example:
        >>> ident = Identity.generate()
        >>> ident.did.startswith("did:key:z6Mk")
        True
    """

    __slots__ = ("_account", "_ed25519", "_did", "_address")

    def __init__(self, ed25519_seed: bytes, evm_private_key: bytes) -> None:
        """Build an identity from its two secrets.

        Args:
            ed25519_seed: The 32-byte Ed25519 private key seed.
            evm_private_key: The 32-byte secp256k1 private key.

        Raises:
            IdentityError: A secret has the wrong length or is not a valid key.
        """
        if len(ed25519_seed) != 32:
            raise IdentityError(f"an Ed25519 seed has 32 bytes, got {len(ed25519_seed)}")
        if len(evm_private_key) != 32:
            raise IdentityError(f"an EVM private key has 32 bytes, got {len(evm_private_key)}")
        self._ed25519 = Ed25519PrivateKey.from_private_bytes(ed25519_seed)
        try:
            self._account = Account.from_key(evm_private_key)
        except (ValueError, TypeError) as err:
            # The library's message may echo the key; keep it out of ours.
            raise IdentityError("the EVM private key is not a valid secp256k1 key") from err
        self._did = did_from_public_key(self._ed25519.public_key())
        self._address: str = str(self._account.address)

    @classmethod
    def generate(cls) -> Identity:
        """A fresh identity from the operating system's CSPRNG."""
        while True:
            evm = secrets.token_bytes(32)
            try:
                return cls(secrets.token_bytes(32), evm)
            except IdentityError:  # pragma: no cover - astronomically unlikely key out of range
                continue

    @property
    def did(self) -> str:
        """The ``did:key:z6Mk…`` of the Ed25519 key."""
        return self._did

    @property
    def key_id(self) -> str:
        """The verification method URL (``did#fragment``), used as a JWS ``kid``."""
        return key_id(self._did)

    @property
    def address(self) -> str:
        """The EVM account's checksummed ``0x`` address."""
        return self._address

    @property
    def public_key_bytes(self) -> bytes:
        """The 32 raw bytes of the Ed25519 public key."""
        return self._ed25519.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, message: bytes) -> bytes:
        """Sign bytes with the Ed25519 key; returns the 64-byte signature."""
        return self._ed25519.sign(message)

    def sign_evm_message(self, text: str) -> bytes:
        """EIP-191 ``personal_sign`` of a text message by the EVM key (65 bytes, r‖s‖v)."""
        signed = self._account.sign_message(encode_defunct(text=text))
        return bytes(signed.signature)

    def sign_evm_hash(self, message_hash: bytes) -> bytes:
        """Sign a raw 32-byte hash with the EVM key (no EIP-191 prefix), r‖s‖v."""
        signed = self._account.unsafe_sign_hash(message_hash)
        return bytes(signed.signature)

    @property
    def evm_account(self) -> Any:
        """The ``eth_account`` local account, for signing transactions."""
        return self._account

    def export_secrets(self) -> tuple[bytes, bytes]:
        """The Ed25519 seed and EVM private key; for the keystore, never for display."""
        seed = self._ed25519.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return seed, bytes(self._account.key)

    def private_jwk(self) -> dict[str, str]:
        """The Ed25519 key as an OKP JWK with its private part (``d``)."""
        seed, _ = self.export_secrets()
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": _b64url(self.public_key_bytes),
            "d": _b64url(seed),
        }

    def __repr__(self) -> str:
        return f"Identity(did={self._did!r}, address={self._address!r}, secrets=<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Identity):
            return NotImplemented
        mine, theirs = self.export_secrets(), other.export_secrets()
        return hmac.compare_digest(b"".join(mine), b"".join(theirs))

    def __hash__(self) -> int:
        return hash((self._did, self._address))

    def __reduce__(self) -> Any:
        # Pickling would write secrets wherever the pickle goes; use the keystore instead.
        raise TypeError("Identity cannot be pickled; save it with save_keystore()")
