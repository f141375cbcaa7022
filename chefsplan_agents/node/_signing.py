"""Signatures on the node HTTP API's requests and responses.

A request is signed by its sender's ``did:key`` over the method, path, raw query string, the
sha256 of the body, a timestamp, a fresh nonce and the DID of the node it is meant for; a node
therefore rejects a request replayed to another node, one signed for another query or body,
and (with :class:`NonceCache`) one replayed to itself. A response is signed by the node over its
status code, the sha256 of its body, the request's nonce and a timestamp, which binds it to the
one request it answers.

Both payloads start with a versioned domain tag, so a signature made here can never be mistaken
for a bundle or credential signature made by the same key.

A server checks a request in two steps: :func:`parse_request_headers` bounds and checks every
header (lengths, forms, the timestamp) before anything is decoded and before the body is read,
then :func:`verify_request_signature` checks the signature over the body. Every header is
bounded in length before it is parsed, so a megabyte-long DID never reaches the base58 decoder.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from chefsplan_agents.errors import InvalidDid, InvalidSignature
from chefsplan_agents.identity import Identity, encode_signature, verify_signature

__all__ = [
    "DEFAULT_MAX_CLOCK_SKEW_S",
    "DEFAULT_MAX_NONCE_DIDS",
    "DEFAULT_MAX_NONCES_PER_DID",
    "HEADER_DID",
    "HEADER_NONCE",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "NonceCache",
    "NonceVerdict",
    "RequestAuthError",
    "SignedHeaders",
    "check_timestamp",
    "parse_request_headers",
    "request_payload",
    "response_payload",
    "sign_request",
    "sign_response",
    "verify_request",
    "verify_request_signature",
    "verify_response",
]

HEADER_DID: Final = "X-Chefsplan-Did"
HEADER_TIMESTAMP: Final = "X-Chefsplan-Timestamp"
HEADER_NONCE: Final = "X-Chefsplan-Nonce"
HEADER_SIGNATURE: Final = "X-Chefsplan-Signature"

DEFAULT_MAX_CLOCK_SKEW_S: Final = 60.0
"""How far a signed timestamp may lie from the verifier's clock, either way."""

_REQUEST_TAG: Final = b"chefsplan-http-request-v1"
_RESPONSE_TAG: Final = b"chefsplan-http-response-v1"
_NONCE_RE: Final = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_TIMESTAMP_RE: Final = re.compile(r"^[0-9]{1,15}$")
# A DID as the API accepts it: ASCII, a method, an identifier (did:key's is ~50 characters).
_DID_RE: Final = re.compile(r"^did:[a-z0-9]{1,32}:[A-Za-z0-9._:%-]{1,200}$")
# An Ed25519 signature in base64url is 86 characters (88 padded).
_SIGNATURE_RE: Final = re.compile(r"^[A-Za-z0-9_-]{86}={0,2}$")
# Longest value read from any signature header, before any other check.
_MAX_HEADER_CHARS: Final = 256

DEFAULT_MAX_NONCES_PER_DID: Final = 2_000
"""Nonces one DID may have remembered at once (requests within twice the clock-skew window)."""

DEFAULT_MAX_NONCE_DIDS: Final = 10_000
"""DIDs whose nonces are remembered at once."""


class RequestAuthError(InvalidSignature):
    """A signed request or response is missing a header, stale, replayed or badly signed.

    ``code`` is the machine-readable reason the HTTP API reports.
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class SignedHeaders:
    """The four signature headers, parsed."""

    did: str
    timestamp: int
    nonce: str
    signature: str

    def as_headers(self) -> dict[str, str]:
        """The HTTP headers carrying these values."""
        return {
            HEADER_DID: self.did,
            HEADER_TIMESTAMP: str(self.timestamp),
            HEADER_NONCE: self.nonce,
            HEADER_SIGNATURE: self.signature,
        }


def _sha256_hex(body: bytes) -> bytes:
    return hashlib.sha256(body).hexdigest().encode("ascii")


def request_payload(
    *,
    method: str,
    path: str,
    query: str,
    body: bytes,
    timestamp: int,
    nonce: str,
    audience_did: str,
) -> bytes:
    """The bytes a request signature covers.

    Args:
        method: HTTP method, upper case.
        path: The URL path, as sent (``/status``).
        query: The raw query string, as sent, without ``?`` (empty when none).
        body: The request body.
        timestamp: Unix seconds.
        nonce: The request's nonce.
        audience_did: The DID of the node the request is meant for.
    """
    fields = (
        _REQUEST_TAG,
        method.upper().encode("ascii"),
        path.encode("utf-8"),
        query.encode("utf-8"),
        _sha256_hex(body),
        str(timestamp).encode("ascii"),
        nonce.encode("ascii"),
        audience_did.encode("ascii"),
    )
    return b"\n".join(fields)


def response_payload(*, status: int, body: bytes, request_nonce: str, timestamp: int) -> bytes:
    """The bytes a response signature covers."""
    fields = (
        _RESPONSE_TAG,
        str(status).encode("ascii"),
        _sha256_hex(body),
        request_nonce.encode("ascii", errors="replace"),
        str(timestamp).encode("ascii"),
    )
    return b"\n".join(fields)


def sign_request(
    identity: Identity,
    *,
    method: str,
    path: str,
    query: str,
    body: bytes,
    audience_did: str,
    now: float | None = None,
) -> SignedHeaders:
    """Sign a request for the node ``audience_did`` with a fresh nonce.

    Returns:
        The headers to send.
    """
    timestamp = int(time.time() if now is None else now)
    nonce = secrets.token_urlsafe(18)
    payload = request_payload(
        method=method,
        path=path,
        query=query,
        body=body,
        timestamp=timestamp,
        nonce=nonce,
        audience_did=audience_did,
    )
    return SignedHeaders(identity.did, timestamp, nonce, encode_signature(identity.sign(payload)))


def sign_response(
    identity: Identity, *, status: int, body: bytes, request_nonce: str, now: float | None = None
) -> SignedHeaders:
    """Sign a response to the request that carried ``request_nonce``.

    Returns:
        The headers to send; their nonce is the request's.
    """
    timestamp = int(time.time() if now is None else now)
    payload = response_payload(
        status=status, body=body, request_nonce=request_nonce, timestamp=timestamp
    )
    return SignedHeaders(
        identity.did, timestamp, request_nonce, encode_signature(identity.sign(payload))
    )


def _header(headers: Mapping[str, str], name: str, what: str) -> str:
    value = headers.get(name)
    if value is None:
        # Header mappings from http.client/http.server are case-insensitive; plain dicts are not.
        lowered = {key.lower(): val for key, val in headers.items()}
        value = lowered.get(name.lower())
    if not value:
        raise RequestAuthError("missing_signature", f"{what} has no {name} header; sign it")
    if not isinstance(value, str) or len(value) > _MAX_HEADER_CHARS:
        raise RequestAuthError(
            "bad_header", f"{what} {name} header is over {_MAX_HEADER_CHARS} characters"
        )
    return value.strip()


def _parse_headers(headers: Mapping[str, str], what: str) -> tuple[str, int, str, str]:
    did = _header(headers, HEADER_DID, what)
    raw_ts = _header(headers, HEADER_TIMESTAMP, what)
    signature = _header(headers, HEADER_SIGNATURE, what)
    if not _DID_RE.match(did):
        raise RequestAuthError("invalid_did", f"{what} {HEADER_DID} is not a DID")
    if not _TIMESTAMP_RE.match(raw_ts):
        raise RequestAuthError(
            "bad_timestamp", f"{what} {HEADER_TIMESTAMP} {raw_ts[:40]!r} is not Unix seconds"
        )
    if not _SIGNATURE_RE.match(signature):
        raise RequestAuthError(
            "bad_signature", f"{what} {HEADER_SIGNATURE} is not a base64url Ed25519 signature"
        )
    return did, int(raw_ts), signature, raw_ts


def check_timestamp(timestamp: int, *, max_skew_s: float, now: float, what: str) -> None:
    """Refuse a timestamp further than ``max_skew_s`` from ``now``.

    Raises:
        RequestAuthError: ``stale_request``.
    """
    drift = timestamp - now
    if abs(drift) > max_skew_s:
        direction = "old" if drift < 0 else "in the future"
        raise RequestAuthError(
            "stale_request",
            f"{what} timestamp is {abs(drift):.0f} s {direction} (allowed ±{max_skew_s:g} s); "
            "check the clock and send a fresh request",
        )


def parse_request_headers(
    headers: Mapping[str, str], *, now: float, max_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S
) -> SignedHeaders:
    """Check a request's signature headers for form and freshness, before its body is read.

    Nothing is decoded here: the signature is checked by :func:`verify_request_signature`.

    Returns:
        The headers, unverified.

    Raises:
        RequestAuthError: A header is missing, too long or malformed (``missing_signature``,
            ``bad_header``, ``invalid_did``, ``bad_timestamp``, ``bad_signature``,
            ``bad_nonce``) or the timestamp is stale (``stale_request``).
    """
    what = "request"
    did, timestamp, signature, _ = _parse_headers(headers, what)
    nonce = _header(headers, HEADER_NONCE, what)
    if not _NONCE_RE.match(nonce):
        raise RequestAuthError(
            "bad_nonce", f"request {HEADER_NONCE} must be 16-128 URL-safe base64 characters"
        )
    check_timestamp(timestamp, max_skew_s=max_skew_s, now=now, what=what)
    return SignedHeaders(did, timestamp, nonce, signature)


def verify_request_signature(
    signed: SignedHeaders,
    *,
    method: str,
    path: str,
    query: str,
    body: bytes,
    audience_did: str,
) -> SignedHeaders:
    """Check the signature of headers that :func:`parse_request_headers` accepted.

    Returns:
        ``signed``, now verified; ``did`` is the requester.

    Raises:
        RequestAuthError: The DID does not resolve (``invalid_did``) or the signature does not
            verify (``bad_signature``).
    """
    did, timestamp, nonce, signature = signed.did, signed.timestamp, signed.nonce, signed.signature
    payload = request_payload(
        method=method,
        path=path,
        query=query,
        body=body,
        timestamp=timestamp,
        nonce=nonce,
        audience_did=audience_did,
    )
    try:
        verify_signature(did, payload, signature)
    except InvalidDid as err:
        raise RequestAuthError("invalid_did", f"request signer: {err}") from err
    except InvalidSignature as err:
        raise RequestAuthError(
            "bad_signature",
            f"request signature does not verify for {did}: tampered, or signed for another "
            "node, path or body",
        ) from err
    return signed


def verify_request(
    headers: Mapping[str, str],
    *,
    method: str,
    path: str,
    query: str,
    body: bytes,
    audience_did: str,
    now: float,
    max_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S,
) -> SignedHeaders:
    """Check a request's signature headers (not its nonce's freshness: see :class:`NonceCache`).

    :func:`parse_request_headers` then :func:`verify_request_signature`.

    Returns:
        The verified headers; ``did`` is the requester.

    Raises:
        RequestAuthError: A header is missing or malformed (``missing_signature``,
            ``bad_header``, ``bad_timestamp``, ``bad_nonce``), the DID does not resolve
            (``invalid_did``), the timestamp is stale (``stale_request``) or the signature does
            not verify (``bad_signature``).
    """
    signed = parse_request_headers(headers, now=now, max_skew_s=max_skew_s)
    return verify_request_signature(
        signed, method=method, path=path, query=query, body=body, audience_did=audience_did
    )


def verify_response(
    headers: Mapping[str, str],
    *,
    status: int,
    body: bytes,
    request_nonce: str,
    node_did: str,
    now: float,
    max_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S,
) -> None:
    """Check that a response was signed by ``node_did`` for the request ``request_nonce``.

    Raises:
        RequestAuthError: Unsigned, signed by another DID, stale, or the signature does not
            cover this status, body and request.
    """
    what = "response"
    did, timestamp, signature, _ = _parse_headers(headers, what)
    if did != node_did:
        raise RequestAuthError(
            "wrong_signer", f"response is signed by {did}, not by the node asked ({node_did})"
        )
    check_timestamp(timestamp, max_skew_s=max_skew_s, now=now, what=what)
    payload = response_payload(
        status=status, body=body, request_nonce=request_nonce, timestamp=timestamp
    )
    try:
        verify_signature(did, payload, signature)
    except (InvalidDid, InvalidSignature) as err:
        raise RequestAuthError(
            "bad_signature",
            f"response signature does not verify for {node_did}: the response was altered "
            "in transit or does not answer this request",
        ) from err


NonceVerdict = Literal["fresh", "replayed", "over_quota", "full"]
"""What :meth:`NonceCache.admit` says of a nonce: new and recorded; seen before; its DID has its
quota of nonces remembered already; or the cache holds as many DIDs or entries as it may."""


class NonceCache:
    """Remembers request nonces long enough to refuse replays, with a quota per DID.

    A request older than the clock-skew window is refused on its timestamp, so a nonce only has
    to be remembered for twice that window. Memory is bounded three ways: nonces per DID, DIDs,
    and entries in all; one DID that floods the node with validly signed requests uses up its
    own quota, not everyone's. Thread-safe.

    Args:
        ttl_s: How long to remember a nonce.
        max_entries: Refuse new nonces rather than grow past this many in all.
        max_per_did: Refuse new nonces of a DID that has this many remembered.
        max_dids: Refuse nonces of a new DID while this many DIDs are remembered.
    """

    def __init__(
        self,
        ttl_s: float,
        *,
        max_entries: int = 100_000,
        max_per_did: int = DEFAULT_MAX_NONCES_PER_DID,
        max_dids: int = DEFAULT_MAX_NONCE_DIDS,
    ) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._max_per_did = max_per_did
        self._max_dids = max_dids
        self._by_did: dict[str, set[str]] = {}
        # Insertion order is expiry order: every entry gets the same ttl.
        self._expiry: deque[tuple[float, str, str]] = deque()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)

    @property
    def dids(self) -> int:
        """DIDs with a nonce remembered now."""
        with self._lock:
            return len(self._by_did)

    def _expire(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            _, did, nonce = self._expiry.popleft()
            nonces = self._by_did.get(did)
            if nonces is not None:
                nonces.discard(nonce)
                if not nonces:
                    del self._by_did[did]

    def admit(self, did: str, nonce: str, *, now: float, priority: bool = False) -> NonceVerdict:
        """Record a nonce of ``did`` unless it is a replay or over a bound.

        Args:
            did: The (verified) requester.
            nonce: Its request's nonce.
            now: Unix seconds.
            priority: ``did`` is one the operator named (a short list): it is not refused
                because strangers filled the cache, only for its own quota.

        Returns:
            ``"fresh"`` when recorded; otherwise why not (see :data:`NonceVerdict`).
        """
        with self._lock:
            self._expire(now)
            nonces = self._by_did.get(did)
            if nonces is not None and nonce in nonces:
                return "replayed"
            if nonces is not None and len(nonces) >= self._max_per_did:
                return "over_quota"
            if not priority and (
                (nonces is None and len(self._by_did) >= self._max_dids)
                or len(self._expiry) >= self._max_entries
            ):
                return "full"
            if nonces is None:
                nonces = self._by_did[did] = set()
            nonces.add(nonce)
            self._expiry.append((now + self._ttl_s, did, nonce))
            return "fresh"

    def check_and_add(self, did: str, nonce: str, *, now: float) -> bool:
        """Record a nonce; ``False`` when it was seen before (a replay) or a bound is reached."""
        return self.admit(did, nonce, now=now) == "fresh"
