"""Checking a registered offer: fetch it by CID, match its hash, verify its credential.

A provider registers ``(did, offerCid, offerHash)`` on chain. The offer itself is a VC-JWT
(:func:`~chefsplan_agents.bundles.issue_offer`) stored in a content store; ``offerHash`` is
**sha256 of the stored bytes** (the compact JWS as ASCII), the same digest the bundles layer uses
for every other document. :func:`offer_hash` computes it; a node registers
``offer_hash(token.encode())``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from chefsplan_agents import _json
from chefsplan_agents.bundles import Offer, verify_offer
from chefsplan_agents.errors import (
    ContentNotFound,
    ContentTooLarge,
    DidBackendError,
    IdentityError,
    StorageError,
    StoreUnavailable,
)
from chefsplan_agents.identity import DidBackend
from chefsplan_agents.storage import ContentStore

__all__ = [
    "MAX_OFFER_BYTES",
    "OfferRejected",
    "OfferStatus",
    "OfferTerms",
    "OfferUnavailable",
    "check_offer",
    "fetch_offer",
    "offer_hash",
]

MAX_OFFER_BYTES = 64 * 1024
"""An offer credential is a few hundred bytes; anything far larger is refused unread."""


def offer_hash(data: bytes | str) -> bytes:
    """The ``offerHash`` a provider registers: sha256 of the stored offer bytes.

    Args:
        data: The stored offer (the VC-JWT's bytes, or the token itself as text).

    Returns:
        The 32-byte digest.
    """
    raw = data.encode("ascii") if isinstance(data, str) else bytes(data)
    return hashlib.sha256(raw).digest()


class OfferStatus(StrEnum):
    """Where the index stands with a provider's current offer.

    ``pending``: registered, not fetched yet. ``valid``: fetched, hash, signature, issuer and
    address all check out. ``invalid``: a check failed (kept with its reason, never returned by
    queries; re-checked only when the provider registers another offer). ``missing``: it could
    not be checked now (the store does not hold it yet, or the store or the DID backend failed);
    retried on the next resolution.
    """

    PENDING = "pending"
    VALID = "valid"
    INVALID = "invalid"
    MISSING = "missing"


@dataclass(frozen=True)
class OfferTerms:
    """What a verified offer promises.

    Attributes:
        model_name: The served model's name.
        model_sha256: The GGUF file's sha256 (64 hex digits).
        quantization: GGUF file type, e.g. ``Q4_1``.
        context_length: Context window in tokens.
        generation_tokens_per_s: Advertised generation speed.
        prefill_tokens_per_s: Advertised prompt-processing speed.
        price_per_1k_tokens_wei: Price per 1,000 tokens, in wei.
        endpoint: The node's HTTP API, if it runs one.
        expires_at: Unix time the credential expires (``None``: never).
        tags: What the node states about itself (signed with the rest), e.g.
            ``{"jurisdiction": "EU"}``.
    """

    model_name: str
    model_sha256: str
    quantization: str
    context_length: int
    generation_tokens_per_s: float
    prefill_tokens_per_s: float
    price_per_1k_tokens_wei: int
    endpoint: str | None
    expires_at: int | None
    tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_offer(cls, offer: Offer, *, expires_at: int | None = None) -> OfferTerms:
        """The terms of a verified :class:`~chefsplan_agents.bundles.Offer`."""
        return cls(
            model_name=offer.model.name,
            model_sha256=offer.model.sha256,
            quantization=offer.model.quantization,
            context_length=offer.model.context_length,
            generation_tokens_per_s=float(offer.generation_tokens_per_s),
            prefill_tokens_per_s=float(offer.prefill_tokens_per_s),
            price_per_1k_tokens_wei=int(offer.price_per_1k_tokens_wei),
            endpoint=offer.endpoint,
            expires_at=expires_at,
            tags=dict(offer.tags),
        )


class OfferRejected(Exception):
    """An offer failed a check; ``reason`` is the one line the index keeps."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class OfferUnavailable(Exception):
    """The store cannot give the offer now (not held, or unreachable); worth retrying."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def fetch_offer(store: ContentStore, cid: str, *, max_bytes: int = MAX_OFFER_BYTES) -> bytes:
    """Read an offer's bytes by CID (the store re-hashes them against the CID).

    Raises:
        OfferUnavailable: The store does not hold the content or cannot be reached.
        OfferRejected: The CID is malformed, the content does not match it, or is too large.
    """
    try:
        return store.get(cid, max_bytes=max_bytes)
    except (ContentNotFound, StoreUnavailable) as err:
        raise OfferUnavailable(f"offer {cid} not available: {err}") from err
    except ContentTooLarge as err:
        raise OfferRejected(f"offer {cid} is larger than {max_bytes} bytes") from err
    except StorageError as err:  # InvalidCid, CidMismatch
        raise OfferRejected(f"offer {cid} unreadable: {err}") from err


def _expiry(token: str) -> int | None:
    # Only called once the token verified, so the payload is well-formed JSON.
    try:
        payload = token.split(".")[1]
        claims = _json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if not isinstance(exp, int | float) or isinstance(exp, bool) or not math.isfinite(exp):
        return None
    return int(exp)


def check_offer(
    data: bytes,
    *,
    registered_hash: bytes,
    did: str,
    address: str,
    chain_id: int | None = None,
    registry: str | None = None,
    now: datetime | None = None,
    backend: DidBackend | None = None,
) -> OfferTerms:
    """Check fetched offer bytes against what the provider registered.

    Args:
        data: The bytes the store returned for the registered CID.
        registered_hash: The ``offerHash`` on chain.
        did: The DID the provider registered (the offer's issuer must be exactly this).
        address: The provider's EVM address (the offer must name it).
        chain_id: The chain the registration is on; when given, the offer must name it.
        registry: The registry's address; when given, the offer must name it.
        now: The time to check the credential's validity at (default now).
        backend: The DID backend that verifies the signature (default pure Python).

    Returns:
        The offer's terms.

    Raises:
        OfferRejected: The hash differs, the bytes are not a VC-JWT, the credential does not
            verify (signature, expiry, type, schema), the issuer is not the registered DID, or
            the offer names another address, chain or registry (or none where one is given).
        OfferUnavailable: The DID backend failed (not the offer's fault; worth retrying).
    """
    if offer_hash(data) != registered_hash:
        raise OfferRejected(
            f"offer hash mismatch: sha256 of the stored bytes is 0x{offer_hash(data).hex()}, "
            f"registered 0x{registered_hash.hex()}"
        )
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise OfferRejected("offer bytes are not a VC-JWT (not ASCII)") from None
    try:
        offer = verify_offer(token, expected_issuer=did, now=now, backend=backend)
    except DidBackendError as err:  # the verifier failed, not the offer: try again later
        raise OfferUnavailable(f"cannot verify the offer now: {err}") from err
    except IdentityError as err:  # InvalidCredential, InvalidDid, InvalidSignature
        raise OfferRejected(f"offer credential rejected: {err}") from err
    if offer.evm_address.lower() != address.lower():
        raise OfferRejected(f"offer names address {offer.evm_address}, registered by {address}")
    # The DID's key binds the offer to one address, chain and registry: a registration that
    # merely names a DID (anyone may name any DID on chain) proves nothing without it.
    if chain_id is not None and offer.chain_id != chain_id:
        raise OfferRejected(
            f"offer names chain {offer.chain_id}, registered on chain {chain_id}; reissue it "
            "naming this chain and registry"
        )
    if registry is not None and (offer.registry or "").lower() != registry.lower():
        raise OfferRejected(
            f"offer names registry {offer.registry}, registered in {registry}; reissue it "
            "naming this chain and registry"
        )
    terms = OfferTerms.from_offer(offer, expires_at=_expiry(token))
    if terms.price_per_1k_tokens_wei >= 10**78:
        raise OfferRejected("offer price does not fit in a uint256")
    return terms
