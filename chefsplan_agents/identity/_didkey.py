"""``did:key`` for Ed25519 keys, resolved offline from the DID string itself.

A ``did:key`` is ``did:key:`` + multibase base58btc (``z``) of the multicodec ``ed25519-pub``
prefix (varint ``0xed 0x01``) followed by the 32 raw public-key bytes, so every Ed25519 DID
starts ``did:key:z6Mk``. The verification method's fragment is the same multibase string.
"""

from __future__ import annotations

import base64
import functools

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from multiformats import multibase

from chefsplan_agents.errors import InvalidDid, InvalidSignature

__all__ = [
    "did_from_public_key",
    "key_id",
    "public_key_from_did",
    "verify_signature",
]

_DID_KEY_PREFIX = "did:key:"
_ED25519_PUB_CODEC = b"\xed\x01"
_ED25519_KEY_LEN = 32
_MAX_MULTIKEY_CHARS = 128


def did_from_public_key(public_key: Ed25519PublicKey | bytes) -> str:
    """The ``did:key`` of an Ed25519 public key.

    Args:
        public_key: The key, or its 32 raw bytes.

    Returns:
        ``did:key:z6Mk…``.
    """
    raw = (
        public_key
        if isinstance(public_key, bytes)
        else public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    if len(raw) != _ED25519_KEY_LEN:
        raise InvalidDid(f"an Ed25519 public key has 32 bytes, got {len(raw)}")
    return _DID_KEY_PREFIX + multibase.encode(_ED25519_PUB_CODEC + raw, "base58btc")


def _split(did: str) -> tuple[str, str]:
    base, _, fragment = did.partition("#")
    return base, fragment


def public_key_from_did(did: str) -> Ed25519PublicKey:
    """Resolve an Ed25519 ``did:key`` (optionally with a ``#fragment``) to its public key.

    Args:
        did: ``did:key:z6Mk…`` or a DID URL ``did:key:z6Mk…#z6Mk…``.

    Returns:
        The public key.

    Raises:
        InvalidDid: Not a ``did:key``, not base58btc, not an Ed25519 key, or the fragment names
            another key.
    """
    if not isinstance(did, str):
        raise InvalidDid(f"a DID is a string, got {type(did).__name__}")
    # Verifying a bundle or an offer resolves the same few DIDs again and again.
    return _resolve_did_key(did)


@functools.lru_cache(maxsize=4096)
def _resolve_did_key(did: str) -> Ed25519PublicKey:
    base, fragment = _split(did)
    if not base.startswith(_DID_KEY_PREFIX):
        raise InvalidDid(f"{did!r} is not a did:key; only did:key DIDs resolve offline")
    multikey = base[len(_DID_KEY_PREFIX) :]
    # base58 decoding takes quadratic time; an Ed25519 did:key has 48 characters after the
    # prefix, so anything far longer is refused before it is decoded.
    if len(multikey) > _MAX_MULTIKEY_CHARS or len(fragment) > _MAX_MULTIKEY_CHARS:
        raise InvalidDid(
            f"did:key of {len(did)} characters is too long for an Ed25519 key (48 after 'did:key:')"
        )
    if not multikey.startswith("z"):
        raise InvalidDid(f"{did!r} is not base58btc-encoded (a did:key starts 'did:key:z')")
    try:
        decoded = multibase.decode(multikey)
    except Exception as err:  # multibase raises several unrelated types on bad input
        raise InvalidDid(f"{did!r} is not valid base58btc: {err}") from err
    if not decoded.startswith(_ED25519_PUB_CODEC):
        raise InvalidDid(f"{did!r} is not an Ed25519 did:key (expected it to start 'z6Mk')")
    raw = decoded[len(_ED25519_PUB_CODEC) :]
    if len(raw) != _ED25519_KEY_LEN:
        raise InvalidDid(f"{did!r} holds a {len(raw)}-byte key; Ed25519 keys have 32 bytes")
    if fragment and fragment != multikey:
        raise InvalidDid(f"{did!r}: fragment #{fragment} does not name the DID's key")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_id(did: str) -> str:
    """The verification method of a ``did:key``: ``did#<multibase key>`` (a JWS ``kid``)."""
    public_key_from_did(did)
    base, _ = _split(did)
    return f"{base}#{base[len(_DID_KEY_PREFIX) :]}"


def verify_signature(did: str, message: bytes, signature: bytes | str) -> None:
    """Check an Ed25519 signature against the key a ``did:key`` names.

    Args:
        did: The signer's ``did:key``.
        message: The signed bytes.
        signature: 64 raw bytes, or base64url text (padding optional).

    Raises:
        InvalidDid: ``did`` does not resolve.
        InvalidSignature: The signature is malformed or does not verify.
    """
    public_key = public_key_from_did(did)
    raw = decode_signature(signature)
    try:
        public_key.verify(raw, message)
    except _CryptoInvalidSignature as err:
        raise InvalidSignature(f"signature does not verify for {did}") from err


def encode_signature(signature: bytes) -> str:
    """Base64url text without padding, the form signatures take in JSON."""
    return base64.urlsafe_b64encode(signature).rstrip(b"=").decode("ascii")


def decode_signature(signature: bytes | str) -> bytes:
    """Raw signature bytes from raw bytes or base64url text."""
    if isinstance(signature, bytes):
        raw = signature
    else:
        try:
            raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        except (ValueError, TypeError) as err:
            raise InvalidSignature("signature is not base64url text") from err
    if len(raw) != 64:
        raise InvalidSignature(f"an Ed25519 signature has 64 bytes, got {len(raw)}")
    return raw
