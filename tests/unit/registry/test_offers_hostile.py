"""Registered offers from strangers: deep or oversized credentials are rejected, not crashes."""

from __future__ import annotations

import base64

import pytest

from chefsplan_agents.identity import Identity
from chefsplan_agents.registry._offers import OfferRejected, check_offer, fetch_offer, offer_hash
from chefsplan_agents.storage import MemoryCidStore


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@pytest.mark.parametrize("part", [0, 1])
def test_a_deeply_nested_offer_is_rejected(part: int) -> None:
    node = Identity.generate()
    pieces = [_b64(b'{"alg":"EdDSA"}'), _b64(b"{}"), "sig"]
    pieces[part] = _b64(b"[" * 40_000)  # within the 64 KiB offer limit once encoded
    data = ".".join(pieces).encode()
    assert len(data) < 64 * 1024
    with pytest.raises(OfferRejected, match="levels deep") as info:
        check_offer(data, registered_hash=offer_hash(data), did=node.did, address=node.address)
    assert "\n" not in info.value.reason


def test_an_offer_over_the_size_limit_is_refused_unread() -> None:
    with MemoryCidStore() as store:
        cid = store.put(b"[" * (64 * 1024 + 1))
        with pytest.raises(OfferRejected, match="larger than 65536 bytes"):
            fetch_offer(store, cid)
