"""VC-JWT issue and verify with the default (pure-Python) backend."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chefsplan_agents.errors import InvalidCredential
from chefsplan_agents.identity import (
    VC_CONTEXT,
    Identity,
    PythonDidBackend,
    default_backend,
    encode_signature,
    issue_credential,
    verify_credential,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    head, body, sig = token.split(".")
    return json.loads(_unb64(head)), json.loads(_unb64(body)), sig


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _resign(ident: Identity, header: dict[str, Any], claims: dict[str, Any]) -> str:
    signing_input = f"{_b64(header)}.{_b64(claims)}"
    return f"{signing_input}.{encode_signature(ident.sign(signing_input.encode()))}"


@pytest.fixture(scope="module")
def ident() -> Identity:
    return Identity.generate()


@pytest.fixture(scope="module")
def token(ident: Identity) -> str:
    return issue_credential(
        ident,
        {"id": "did:example:subject", "model": "smollm2", "nested": {"n": [1, 2.5]}},
        types=["TestCredential"],
        issued_at=T0,
        valid_for=timedelta(days=10),
        credential_id="urn:test:1",
    )


def test_default_backend_is_pure_python() -> None:
    assert isinstance(default_backend(), PythonDidBackend)


def test_token_shape(token: str, ident: Identity) -> None:
    header, claims, _ = _parts(token)
    assert header == {"alg": "EdDSA", "kid": ident.key_id, "typ": "JWT"}
    assert claims["iss"] == ident.did
    assert claims["nbf"] == int(T0.timestamp())
    assert claims["exp"] == int((T0 + timedelta(days=10)).timestamp())
    assert claims["jti"] == "urn:test:1"
    assert claims["sub"] == "did:example:subject"
    assert claims["vc"]["@context"] == [VC_CONTEXT]
    assert claims["vc"]["type"] == ["VerifiableCredential", "TestCredential"]
    assert claims["vc"]["issuanceDate"] == "2026-01-01T00:00:00Z"


def test_verify_returns_the_checked_credential(token: str, ident: Identity) -> None:
    cred = verify_credential(
        token, expected_issuer=ident.did, expected_type="TestCredential", now=T0 + timedelta(1)
    )
    assert cred.issuer == ident.did
    assert cred.types == ("VerifiableCredential", "TestCredential")
    assert cred.subject["nested"] == {"n": [1, 2.5]}
    assert cred.issued_at == T0
    assert cred.expires_at == T0 + timedelta(days=10)
    assert cred.id == "urn:test:1"
    assert token not in repr(cred)


def test_never_expiring_credential(ident: Identity) -> None:
    tok = issue_credential(ident, {"a": 1}, issued_at=T0, valid_for=None)
    assert verify_credential(tok, now=T0 + timedelta(days=10_000)).expires_at is None


def test_expired(token: str) -> None:
    with pytest.raises(InvalidCredential, match="expired at 2026-01-11T00:00:00Z"):
        verify_credential(token, now=T0 + timedelta(days=11))


def test_not_yet_valid(token: str) -> None:
    with pytest.raises(InvalidCredential, match="not valid before"):
        verify_credential(token, now=T0 - timedelta(hours=1))


def test_wrong_expected_issuer(token: str) -> None:
    other = Identity.generate()
    with pytest.raises(InvalidCredential, match="expected " + other.did):
        verify_credential(token, expected_issuer=other.did, now=T0)


def test_wrong_expected_type(token: str) -> None:
    with pytest.raises(InvalidCredential, match="is not a OfferCredential"):
        verify_credential(token, expected_type="OfferCredential", now=T0)


def test_tampered_payload_fails(token: str) -> None:
    header, claims, sig = _parts(token)
    claims["vc"]["credentialSubject"]["model"] = "gpt-9"
    forged = f"{_b64(header)}.{_b64(claims)}.{sig}"
    with pytest.raises(InvalidCredential, match="signature does not verify"):
        verify_credential(forged, now=T0)


def test_tampered_signature_fails(token: str) -> None:
    head, body, sig = token.split(".")
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    with pytest.raises(InvalidCredential):
        verify_credential(f"{head}.{body}.{flipped}", now=T0)


def test_issuer_claimed_by_another_key_fails(token: str, ident: Identity) -> None:
    # The attacker signs with their own key but claims the victim's DID as issuer.
    attacker = Identity.generate()
    header, claims, _ = _parts(token)
    forged = _resign(attacker, {**header, "kid": attacker.key_id}, claims)
    with pytest.raises(InvalidCredential, match="does not belong to issuer"):
        verify_credential(forged, now=T0)
    # Claiming the victim's kid too makes the signature fail.
    forged = _resign(attacker, header, claims)
    with pytest.raises(InvalidCredential, match="signature does not verify"):
        verify_credential(forged, now=T0)


def test_vc_issuer_must_match_iss(token: str, ident: Identity) -> None:
    header, claims, _ = _parts(token)
    claims["vc"]["issuer"] = Identity.generate().did
    with pytest.raises(InvalidCredential, match="vc.issuer differs"):
        verify_credential(_resign(ident, header, claims), now=T0)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda h, c: h.update(alg="ES256K"), "not EdDSA"),
        (lambda h, c: h.pop("kid"), "no kid"),
        (lambda h, c: c.pop("vc"), "no vc claim"),
        (lambda h, c: c["vc"].update(type=["TestCredential"]), "VerifiableCredential"),
        (lambda h, c: c["vc"].update(credentialSubject="x"), "credentialSubject"),
        (lambda h, c: c.update(nbf="yesterday"), "not a timestamp"),
    ],
)
def test_malformed_claims(token: str, ident: Identity, mutate: Any, needle: str) -> None:
    header, claims, _ = _parts(token)
    mutate(header, claims)
    with pytest.raises(InvalidCredential, match=needle) as info:
        verify_credential(_resign(ident, header, claims), now=T0)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("bad", ["", "a.b", "a.b.c.d", "!!!.???.###", 42])
def test_not_a_jws(bad: Any) -> None:
    with pytest.raises(InvalidCredential):
        verify_credential(bad)


def test_issuer_that_is_not_a_did_key(token: str, ident: Identity) -> None:
    header, claims, _ = _parts(token)
    claims["iss"] = "did:web:example.com"
    claims["vc"]["issuer"] = "did:web:example.com"
    header["kid"] = "did:web:example.com#key-1"
    with pytest.raises(InvalidCredential, match="cannot be resolved"):
        verify_credential(_resign(ident, header, claims), now=T0)
