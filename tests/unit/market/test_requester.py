"""The requester verifies what the market settled: a provider that lies gets no receipt.

A registered provider is driven by hand (claim, reveal) so that it can reveal results a honest
node never would; the requester must refuse each one with a clear VerificationError.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chefsplan_agents.bundles import GenerationParams, ResultBundle, encode_bundle, sign_bundle
from chefsplan_agents.bundles import output_hash as hash_output
from chefsplan_agents.devnet import Devnet
from chefsplan_agents.errors import VerificationError
from chefsplan_agents.identity import Identity
from chefsplan_agents.market import TaskHandle, make_commitment

BOUNTY = 10**15
BOND = 2 * 10**15
# A well-formed CID of content nobody stored.
MISSING_CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"


@pytest.fixture(scope="module")
def net() -> Iterator[Devnet]:
    with Devnet.create(nodes=1, model="tiny", n_threads=1, n_ctx=256) as devnet:
        yield devnet


def _post(net: Devnet, prompt: str) -> TaskHandle:
    bundle = net.requester.bundle(
        prompt, model=net.model_sha256, params=GenerationParams(max_tokens=8)
    )
    return net.requester.delegate(bundle, replicas=1, bounty_per_replica=BOUNTY, bond=BOND)


def _honest_result(net: Devnet, handle: TaskHandle) -> ResultBundle:
    return net.nodes[0].run_bundle(handle.bundle, handle.bundle_cid)


def _reveal_by_hand(net: Devnet, handle: TaskHandle, result: ResultBundle) -> None:
    """The node's account claims and reveals ``result`` (stored as given), settling the task."""
    provider = net.nodes[0].address
    cid = net.store.put(encode_bundle(result))
    net.market.claim(handle.params, sender=provider)
    net.market.reveal_and_finalize(
        handle.params, result.output_hash, cid, b"\x00" * 32, sender=provider
    )


def _wait(net: Devnet, handle: TaskHandle) -> object:
    return net.requester.wait_result(handle, 30, step=lambda: None, poll_interval=0.0)


def test_honest_result_revealed_by_hand_verifies(net: Devnet) -> None:
    handle = _post(net, "Honest")
    result = _honest_result(net, handle)
    _reveal_by_hand(net, handle, result)
    receipt = net.requester.wait_result(handle, 30, step=lambda: None, poll_interval=0.0)
    assert receipt.output == result.output
    [replica] = receipt.replicas
    assert replica.did == net.nodes[0].did
    # Revealed straight from the claim: the reveal is also the commitment.
    assert replica.commit_tx == replica.reveal_tx == receipt.finalize_tx


def test_result_signed_by_an_outsider_is_refused(net: Devnet) -> None:
    handle = _post(net, "Outsider")
    outsider = Identity.generate()
    forged = sign_bundle(
        _honest_result(net, handle).model_copy(update={"node_did": outsider.did}), outsider
    )
    _reveal_by_hand(net, handle, forged)
    with pytest.raises(VerificationError, match=f"signed by {outsider.did}"):
        _wait(net, handle)


def test_stale_provider_did_is_read_again_before_refusing(net: Devnet) -> None:
    # A DID remembered from an earlier task no longer matches: the requester reads the
    # registry again instead of refusing a valid result.
    net.requester._dids[net.nodes[0].address] = Identity.generate().did
    handle = _post(net, "Stale")
    _reveal_by_hand(net, handle, _honest_result(net, handle))
    receipt = net.requester.wait_result(handle, 30, step=lambda: None, poll_interval=0.0)
    assert receipt.replicas[0].did == net.nodes[0].did


def test_result_for_another_task_is_refused(net: Devnet) -> None:
    first = _post(net, "First task")
    other = _honest_result(net, first)  # a genuine, signed answer, but to the first task
    second = _post(net, "Second task")
    _reveal_by_hand(net, second, other)
    with pytest.raises(VerificationError, match="answers task"):
        _wait(net, second)


def test_settled_hash_that_the_result_does_not_have_is_refused(net: Devnet) -> None:
    handle = _post(net, "Mismatch")
    result = _honest_result(net, handle)
    provider = net.nodes[0].address
    cid = net.store.put(encode_bundle(result))
    net.market.claim(handle.params, sender=provider)
    # The chain settles a hash the stored result does not carry.
    lie = hash_output(result.output + " (edited)")
    net.market.reveal_and_finalize(handle.params, lie, cid, b"\x00" * 32, sender=provider)
    with pytest.raises(VerificationError, match="the chain settled"):
        _wait(net, handle)


def test_result_cid_whose_content_is_not_a_result_is_refused(net: Devnet) -> None:
    handle = _post(net, "Garbage")
    provider = net.nodes[0].address
    cid = net.store.put(b'{"not": "a result bundle"}')
    net.market.claim(handle.params, sender=provider)
    fake = hash_output("anything")
    net.market.reveal_and_finalize(handle.params, fake, cid, b"\x00" * 32, sender=provider)
    with pytest.raises(VerificationError, match="is unusable"):
        _wait(net, handle)


def _co_winner(net: Devnet) -> str:
    """A second registered provider (DID and offer are not checked by the market)."""
    ident = Identity.generate()
    address = net.chain.add_account(ident.export_secrets()[1])
    net.chain.transfer(address, 10**18)
    net.registry.register(
        ident.did, "bafyoffer", b"\x01" * 32, stake=net.registry.min_stake, sender=address
    )
    return address


def _settle_with_junk_cid(net: Devnet, handle: TaskHandle, junk_cid: str) -> str:
    """Two replicas reveal the honest output hash; the co-winner's CID is junk, and the
    settlement emits it. Returns the honest result's CID."""
    honest, junk = net.nodes[0].address, _co_winner(net)
    result = _honest_result(net, handle)
    cid = net.store.put(encode_bundle(result))
    salt = b"\x07" * 32
    net.market.claim(
        handle.params, make_commitment(result.output_hash, salt, honest), sender=honest
    )
    net.market.claim(handle.params, sender=junk)
    net.market.reveal(handle.params, result.output_hash, junk_cid, b"\x00" * 32, sender=junk)
    receipt = net.market.reveal_and_finalize(
        handle.params, result.output_hash, cid, salt, sender=honest, winning_cid=junk_cid
    )
    assert net.market.settlement(receipt).result_cid == junk_cid
    return cid


@pytest.mark.parametrize("junk", ["missing", "oversized", "not a CID"])
def test_a_co_winners_junk_cid_falls_back_to_another_winners_result(
    net: Devnet, junk: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = net.requester.bundle(
        f"Co-winners {junk}", model=net.model_sha256, params=GenerationParams(max_tokens=8)
    )
    handle = net.requester.delegate(
        bundle, replicas=2, quorum=2, bounty_per_replica=BOUNTY, bond=BOND
    )
    junk_cid = {
        "missing": MISSING_CID,
        "oversized": net.store.put(b"x" * 70_000),
        "not a CID": "not-a-cid",
    }[junk]
    # Results are fetched with a size limit: a huge "result" is refused unread.
    monkeypatch.setattr(net.requester, "max_result_bytes", 64 * 1024, raising=False)
    cid = _settle_with_junk_cid(net, handle, junk_cid)
    receipt = _wait(net, handle)
    assert receipt.result_cid == cid != junk_cid
    assert receipt.result.node_did == net.nodes[0].did
    assert receipt.settlement.result_cid == junk_cid


def test_no_usable_result_among_the_winners_is_refused(net: Devnet) -> None:
    handle = _post(net, "Nothing usable")
    provider = net.nodes[0].address
    net.market.claim(handle.params, sender=provider)
    fake = hash_output("anything")
    missing = MISSING_CID
    net.market.reveal_and_finalize(handle.params, fake, missing, b"\x00" * 32, sender=provider)
    with pytest.raises(VerificationError, match=f"winning result {missing} is unusable"):
        _wait(net, handle)


def test_results_are_fetched_with_a_size_limit(
    net: Devnet, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = _post(net, "Too large")
    _reveal_by_hand(net, handle, _honest_result(net, handle))
    monkeypatch.setattr(net.requester, "max_result_bytes", 100)
    with pytest.raises(VerificationError, match="is unusable: .*100"):
        _wait(net, handle)
