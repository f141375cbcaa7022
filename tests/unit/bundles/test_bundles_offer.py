"""Offers: schema, and issue/verify as VC-JWTs (both DID backends)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from chefsplan_agents.bundles import (
    OFFER_CREDENTIAL_TYPE,
    Offer,
    OfferedModel,
    check_tags,
    issue_offer,
    parse_tags,
    verify_offer,
)
from chefsplan_agents.errors import BundleError, InvalidCredential, InvalidOfferTags
from chefsplan_agents.identity import (
    DidkitBackend,
    Identity,
    didkit_available,
    issue_credential,
    verify_credential,
)

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
WEI = 123_456_789_000_000_000_000_000  # beyond 2**53: carried as a decimal string


@pytest.fixture(scope="module")
def node() -> Identity:
    return Identity.generate()


def make_offer(node: Identity, **overrides: Any) -> Offer:
    fields: dict[str, Any] = {
        "model": OfferedModel(
            name="smollm2-135m", sha256="ab" * 32, quantization="Q4_1", context_length=2048
        ),
        "generation_tokens_per_s": 85.5,
        "prefill_tokens_per_s": 230.0,
        "price_per_1k_tokens_wei": WEI,
        "endpoint": "http://127.0.0.1:8750",
        "evm_address": node.address.lower(),
        "did": node.did,
    }
    fields.update(overrides)
    return Offer(**fields)


def test_offer_normalizes_address_and_carries_wei_as_string(node: Identity) -> None:
    offer = make_offer(node)
    assert offer.evm_address == node.address
    dumped = offer.model_dump(mode="json")
    assert dumped["price_per_1k_tokens_wei"] == str(WEI)
    assert Offer.model_validate(dumped) == offer


def test_issue_and_verify(node: Identity) -> None:
    offer = make_offer(node)
    token = issue_offer(offer, node, issued_at=T0)
    assert verify_offer(token, expected_issuer=node.did) == offer
    cred = verify_credential(token)
    assert OFFER_CREDENTIAL_TYPE in cred.types
    assert cred.expires_at == T0 + timedelta(days=30)


def test_expired_offer(node: Identity) -> None:
    token = issue_offer(make_offer(node), node, issued_at=T0, valid_for=timedelta(days=1))
    with pytest.raises(InvalidCredential, match="expired"):
        verify_offer(token, now=T0 + timedelta(days=2))


def test_offer_from_another_node_is_refused_at_issue(node: Identity) -> None:
    other = Identity.generate()
    with pytest.raises(BundleError, match="offer names"):
        issue_offer(make_offer(other), node)
    with pytest.raises(BundleError, match="offer names"):
        issue_offer(make_offer(node, evm_address=other.address), node)


def test_offer_naming_another_did_than_its_issuer_is_rejected(node: Identity) -> None:
    victim = Identity.generate()
    subject = make_offer(victim).model_dump(mode="json")
    token = issue_credential(node, subject, types=[OFFER_CREDENTIAL_TYPE])
    with pytest.raises(InvalidCredential, match="but was issued by"):
        verify_offer(token)


def test_wrong_issuer(node: Identity) -> None:
    token = issue_offer(make_offer(node), node)
    with pytest.raises(InvalidCredential, match="expected"):
        verify_offer(token, expected_issuer=Identity.generate().did)


def test_credential_that_is_not_an_offer(node: Identity) -> None:
    token = issue_credential(node, {"hello": "world"}, types=["Other"])
    with pytest.raises(InvalidCredential, match=f"not a {OFFER_CREDENTIAL_TYPE}"):
        verify_offer(token)
    token = issue_credential(node, {"hello": "world"}, types=[OFFER_CREDENTIAL_TYPE])
    with pytest.raises(InvalidCredential, match="offer credential field"):
        verify_offer(token)


def test_tampered_offer(node: Identity) -> None:
    token = issue_offer(make_offer(node), node)
    head, body, sig = token.split(".")
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    with pytest.raises(InvalidCredential):
        verify_offer(f"{head}.{body}.{flipped}")


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"price_per_1k_tokens_wei": "-5"}, "non-negative"),
        ({"price_per_1k_tokens_wei": -5}, "negative"),
        ({"price_per_1k_tokens_wei": 1.5}, "wei amount"),
        ({"endpoint": "ftp://x"}, "http"),
        ({"evm_address": "0x1234"}, "EVM address"),
        ({"generation_tokens_per_s": 0}, "greater than 0"),
        ({"did": "did:key:nope"}, "base58btc"),
    ],
)
def test_offer_schema_rules(node: Identity, overrides: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        make_offer(node, **overrides)


@pytest.mark.skipif(
    not didkit_available(), reason="didkit is not installed (chefsplan-agents[did])"
)
def test_offer_issued_by_didkit_verifies_in_python_and_back(node: Identity) -> None:
    didkit = DidkitBackend()
    offer = make_offer(node)
    assert verify_offer(issue_offer(offer, node, backend=didkit)) == offer
    assert verify_offer(issue_offer(offer, node), backend=didkit) == offer


# ---------------------------------------------------------------------------- tags


def test_offer_without_tags_keeps_its_bytes(node: Identity) -> None:
    offer = make_offer(node)
    assert offer.tags == {}
    assert "tags" not in offer.model_dump(mode="json")  # the wire form offers had before


def test_tags_are_signed_and_verified(node: Identity) -> None:
    offer = make_offer(node, tags={"jurisdiction": "EU", "hardware": "cpu"})
    assert offer.model_dump(mode="json")["tags"] == {"hardware": "cpu", "jurisdiction": "EU"}
    back = verify_offer(issue_offer(offer, node), expected_issuer=node.did)
    assert back.tags == {"hardware": "cpu", "jurisdiction": "EU"}


@pytest.mark.parametrize(
    ("tags", "needle"),
    [
        ({"Jurisdiction": "EU"}, "tag key 'Jurisdiction'"),
        ({"k" * 33: "v"}, "tag key"),
        ({"region": ""}, "tag region=''"),
        ({"region": "eu\nwest"}, "tag region="),
        ({"region": "x" * 65}, "tag region="),
        ({f"k{i}": "v" for i in range(17)}, "17 tags, at most 16"),
    ],
)
def test_bad_tags_are_refused(node: Identity, tags: dict[str, str], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        make_offer(node, tags=tags)
    with pytest.raises(InvalidOfferTags, match=needle) as err:
        check_tags(tags)
    assert "\n" not in str(err.value)


def test_a_credential_with_bad_tags_is_refused(node: Identity) -> None:
    subject = make_offer(node).model_dump(mode="json") | {"tags": {"BAD": "x"}}
    token = issue_credential(node, subject, types=[OFFER_CREDENTIAL_TYPE])
    with pytest.raises(InvalidCredential, match="offer credential field 'tags'"):
        verify_offer(token)


def test_parse_tags_from_the_command_line() -> None:
    assert parse_tags(["jurisdiction=EU", "hardware = cpu"]) == {
        "hardware": "cpu",
        "jurisdiction": "EU",
    }
    assert parse_tags([]) == {}
    for items, needle in [
        (["jurisdiction"], "is not key=value"),
        (["a=1", "a=2"], "given twice"),
        (["=EU"], "tag key ''"),
    ]:
        with pytest.raises(InvalidOfferTags, match=needle):
            parse_tags(items)
