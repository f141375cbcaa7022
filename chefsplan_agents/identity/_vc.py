"""Verifiable Credentials as VC-JWT (JWS compact, ``alg`` EdDSA, ``kid`` = ``did#fragment``).

The credential follows the VC Data Model 1.1 JSON-LD shape (``@context``
``https://www.w3.org/2018/credentials/v1``) and its JWT encoding: ``iss`` = issuer, ``nbf`` =
issuance, ``exp`` = expiry, ``jti`` = id, ``sub`` = subject id, and the whole credential under
``vc``. That is also what didkit produces, so tokens verify across both backends.

Backends (see :class:`DidBackend`) only sign and check signatures; the checks that a token is
well formed, names its issuer consistently, is in its validity window and carries the expected
type are done here, once, for every backend.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from chefsplan_agents import _json
from chefsplan_agents.errors import InvalidCredential, InvalidDid, InvalidSignature
from chefsplan_agents.identity._didkey import (
    did_from_public_key,
    encode_signature,
    key_id,
    verify_signature,
)
from chefsplan_agents.identity._identity import Identity

__all__ = [
    "VC_CONTEXT",
    "DidBackend",
    "PythonDidBackend",
    "VerifiedCredential",
    "default_backend",
    "issue_credential",
    "verify_credential",
]

logger = logging.getLogger(__name__)

VC_CONTEXT = "https://www.w3.org/2018/credentials/v1"
_BASE_TYPE = "VerifiableCredential"
_LEEWAY = timedelta(seconds=30)


@runtime_checkable
class DidBackend(Protocol):
    """Computes ``did:key`` DIDs and signs/verifies VC-JWTs.

    Implementations: :class:`PythonDidBackend` (default, pure Python) and
    :class:`~chefsplan_agents.identity.DidkitBackend` (through didkit, extra ``did``).
    """

    name: str

    def did_for(self, identity: Identity) -> str:
        """The ``did:key`` of an identity's Ed25519 key."""
        ...

    def sign_credential(self, identity: Identity, credential: dict[str, Any]) -> str:
        """Encode and sign a VC (data model 1.1 JSON) as a VC-JWT."""
        ...

    def check_signature(self, token: str) -> None:
        """Raise :class:`InvalidCredential` unless the token's JWS verifies for its ``kid``."""
        ...


def _b64url_json(value: dict[str, Any]) -> str:
    raw = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def jwt_claims(credential: dict[str, Any]) -> dict[str, Any]:
    """The VC-JWT claims for a credential (``iss``, ``nbf``, ``exp``, ``jti``, ``sub``, ``vc``)."""
    claims: dict[str, Any] = {"iss": _issuer_of(credential.get("issuer"))}
    claims["nbf"] = int(_parse_time(credential["issuanceDate"], "issuanceDate").timestamp())
    if "expirationDate" in credential:
        claims["exp"] = int(_parse_time(credential["expirationDate"], "expirationDate").timestamp())
    if "id" in credential:
        claims["jti"] = credential["id"]
    subject = credential.get("credentialSubject")
    if isinstance(subject, dict) and isinstance(subject.get("id"), str):
        claims["sub"] = subject["id"]
    claims["vc"] = credential
    return claims


class PythonDidBackend:
    """did:key and VC-JWT with ``cryptography`` and ``multiformats``; the default backend."""

    name = "python"

    def did_for(self, identity: Identity) -> str:
        return did_from_public_key(identity.public_key_bytes)

    def sign_credential(self, identity: Identity, credential: dict[str, Any]) -> str:
        header = {"alg": "EdDSA", "kid": key_id(identity.did), "typ": "JWT"}
        signing_input = f"{_b64url_json(header)}.{_b64url_json(jwt_claims(credential))}"
        return f"{signing_input}.{encode_signature(identity.sign(signing_input.encode('ascii')))}"

    def check_signature(self, token: str) -> None:
        header, _, _ = _split_token(token)
        signing_input, _, signature = token.rpartition(".")
        try:
            verify_signature(header["kid"], signing_input.encode("ascii"), signature)
        except InvalidSignature as err:
            raise InvalidCredential(f"credential signature does not verify: {err}") from err

    def __repr__(self) -> str:
        return "PythonDidBackend()"


_DEFAULT = PythonDidBackend()


def default_backend() -> DidBackend:
    """The backend used when none is passed: the pure-Python one."""
    return _DEFAULT


@dataclass(frozen=True)
class VerifiedCredential:
    """A credential whose signature, issuer and validity window have been checked."""

    issuer: str
    types: tuple[str, ...]
    subject: dict[str, Any]
    issued_at: datetime
    expires_at: datetime | None
    id: str | None
    token: str = field(repr=False)


def _issuer_of(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("id")
    if not isinstance(value, str):
        raise InvalidCredential("credential has no issuer")
    return value


def _parse_time(value: Any, name: str) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            pass  # out of datetime's range, or NaN
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if moment.tzinfo is not None:
                return moment.astimezone(UTC)
    raise InvalidCredential(f"credential {name} {value!r} is not a timestamp")


def _split_token(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    if not isinstance(token, str) or token.count(".") != 2:
        raise InvalidCredential("credential is not a compact JWS (header.payload.signature)")
    head, body, signature = token.split(".")
    try:
        header = _json.loads(_b64url_decode(head))
        claims = _json.loads(_b64url_decode(body))
    except _json.JsonTooDeep as err:
        raise InvalidCredential(f"credential JWS header or payload is refused: {err}") from err
    except ValueError as err:  # binascii.Error, UnicodeDecodeError, JSONDecodeError
        raise InvalidCredential("credential JWS header or payload is not base64url JSON") from err
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidCredential("credential JWS header and payload must be JSON objects")
    if header.get("alg") != "EdDSA":
        raise InvalidCredential(f"credential alg {header.get('alg')!r} is not EdDSA")
    if not isinstance(header.get("kid"), str):
        raise InvalidCredential("credential JWS header has no kid")
    return header, claims, signature


def issue_credential(
    identity: Identity,
    subject: dict[str, Any],
    *,
    types: list[str] | tuple[str, ...] = (),
    issued_at: datetime | None = None,
    valid_for: timedelta | None = timedelta(days=365),
    credential_id: str | None = None,
    backend: DidBackend | None = None,
) -> str:
    """Issue a VC-JWT signed by an identity's DID.

    Args:
        identity: The issuer.
        subject: The ``credentialSubject`` (any JSON object; an ``id`` becomes the ``sub``).
        types: Credential types after ``VerifiableCredential``.
        issued_at: Issuance time (default now; whole seconds are kept).
        valid_for: Lifetime; ``None`` issues a credential that never expires.
        credential_id: ``id`` of the credential (default a random ``urn:uuid``-like URN).
        backend: Which implementation signs (default :func:`default_backend`).

    Returns:
        The compact JWS.

    Raises:
        IdentityError: The backend failed (:class:`~chefsplan_agents.errors.DidBackendError`).
    """
    start = (issued_at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    credential: dict[str, Any] = {
        "@context": [VC_CONTEXT],
        "id": credential_id or f"urn:chefsplan:vc:{secrets.token_hex(16)}",
        "type": [_BASE_TYPE, *[t for t in types if t != _BASE_TYPE]],
        "issuer": identity.did,
        "issuanceDate": _iso(start),
        "credentialSubject": dict(subject),
    }
    if valid_for is not None:
        credential["expirationDate"] = _iso(start + valid_for)
    chosen = backend or default_backend()
    token = chosen.sign_credential(identity, credential)
    logger.debug("issued credential %s by %s via %s", credential["id"], identity.did, chosen.name)
    return token


def verify_credential(
    token: str,
    *,
    expected_issuer: str | None = None,
    expected_type: str | None = None,
    now: datetime | None = None,
    backend: DidBackend | None = None,
) -> VerifiedCredential:
    """Verify a VC-JWT: signature, issuer consistency, validity window and type.

    Args:
        token: The compact JWS.
        expected_issuer: If given, the issuer DID must be exactly this.
        expected_type: If given, the credential's ``type`` must include it.
        now: The time to check validity at (default now).
        backend: Which implementation checks the signature (default :func:`default_backend`).

    Returns:
        The checked credential.

    Raises:
        InvalidCredential: Malformed, tampered, expired, not yet valid, wrong issuer or type.
    """
    header, claims, _ = _split_token(token)
    issuer = _issuer_of(claims.get("iss"))
    kid = header["kid"]
    if kid.partition("#")[0] != issuer:
        raise InvalidCredential(f"credential kid {kid!r} does not belong to issuer {issuer!r}")
    try:
        key_id(issuer)
    except InvalidDid as err:
        raise InvalidCredential(f"credential issuer cannot be resolved: {err}") from err
    vc = claims.get("vc")
    if not isinstance(vc, dict):
        raise InvalidCredential("credential JWT has no vc claim")
    if "issuer" in vc and _issuer_of(vc["issuer"]) != issuer:
        raise InvalidCredential("credential vc.issuer differs from the JWT iss")
    types_ = vc.get("type")
    if isinstance(types_, str):
        types_ = [types_]
    if not isinstance(types_, list) or not all(isinstance(t, str) for t in types_):
        raise InvalidCredential("credential type must be a list of strings")
    if _BASE_TYPE not in types_:
        raise InvalidCredential(f"credential type does not include {_BASE_TYPE}")
    subject = vc.get("credentialSubject")
    if not isinstance(subject, dict):
        raise InvalidCredential("credential has no credentialSubject object")

    if "nbf" in claims:
        issued = _parse_time(claims["nbf"], "nbf")
    elif "issuanceDate" in vc:
        issued = _parse_time(vc["issuanceDate"], "issuanceDate")
    else:
        raise InvalidCredential("credential has no issuance time")
    if "exp" in claims:
        expires: datetime | None = _parse_time(claims["exp"], "exp")
    elif "expirationDate" in vc:
        expires = _parse_time(vc["expirationDate"], "expirationDate")
    else:
        expires = None
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    if moment + _LEEWAY < issued:
        raise InvalidCredential(f"credential is not valid before {_iso(issued)}")
    if expires is not None and moment >= expires:
        raise InvalidCredential(
            f"credential expired at {_iso(expires)}; ask the issuer for a new one"
        )

    if expected_issuer is not None and issuer != expected_issuer:
        raise InvalidCredential(f"credential was issued by {issuer}, expected {expected_issuer}")
    if expected_type is not None and expected_type not in types_:
        raise InvalidCredential(f"credential is not a {expected_type} (types: {', '.join(types_)})")
    # Structure and dates first so the message is the same whichever backend checks the JWS.
    chosen = backend or default_backend()
    try:
        chosen.check_signature(token)
    except InvalidCredential:
        raise
    except (InvalidSignature, InvalidDid) as err:
        raise InvalidCredential(f"credential signature does not verify: {err}") from err
    cred_id = claims.get("jti", vc.get("id"))
    return VerifiedCredential(
        issuer=issuer,
        types=tuple(types_),
        subject=dict(subject),
        issued_at=issued,
        expires_at=expires,
        id=cred_id if isinstance(cred_id, str) else None,
        token=token,
    )
