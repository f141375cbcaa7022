"""MarketClient and RegistryClient for challenges decided by a panel, on the in-process EVM."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eth_utils.crypto import keccak

from chefsplan_agents.chain import EmbeddedChain, deploy_contracts
from chefsplan_agents.chain import errors as E
from chefsplan_agents.market import (
    ChallengeState,
    MarketClient,
    TaskResult,
    VoteState,
    vote_commitment,
)
from chefsplan_agents.registry import RegistryClient

MIN_STAKE = 10**16
BOUNTY = 10**15
BOND = 10**14
OUTPUT = keccak(b"the answer is 42")
CID = "bafkreidon73zkcrwdb5iafqtijxildoonbwnpv7dyd6ef3qdgads2jc4su"


@pytest.fixture(scope="module")
def net() -> Iterator[tuple[EmbeddedChain, MarketClient, RegistryClient]]:
    with EmbeddedChain(accounts=7) as chain:
        deployment = deploy_contracts(chain, min_stake=MIN_STAKE)
        market = MarketClient(deployment.market, from_block=deployment.deployed_at)
        registry = RegistryClient(deployment.registry)
        for i, who in enumerate(chain.accounts[1:6]):
            registry.register(
                f"did:key:z6MkPanel{i}", f"bafyoffer{i}", keccak(b"o"), stake=MIN_STAKE, sender=who
            )
        yield chain, market, registry


def test_client_drives_a_panel_that_upholds_a_challenge(
    net: tuple[EmbeddedChain, MarketClient, RegistryClient],
) -> None:
    chain, market, registry = net
    snapshot = chain.snapshot()
    requester, provider, outsider = chain.accounts[0], chain.accounts[1], chain.accounts[6]
    params = market.new_task(
        keccak(b"bundle"), bounty_per_replica=BOUNTY, bond=BOND, challenge_window=600
    )
    market.post_task(params, "bafybundle")
    assert params.requester == requester
    tid = market.task_id(params)
    market.claim(params, sender=provider)
    market.reveal(params, OUTPUT, CID, b"\x00" * 32, sender=provider)
    with pytest.raises(E.SelfChallenge) as own:
        market.challenge(params, "bafkreievidence", sender=provider)
    assert own.value.args_ == {"taskId": tid, "challenger": provider}
    assert "SelfChallenge" in str(own.value) and "\n" not in str(own.value)
    market.challenge(params, "bafkreievidence", sender=outsider)
    record = market.challenge_of(tid)
    assert record is not None and record.challenger == outsider
    assert len(set(record.panel)) == market.panel_size == 3
    assert not {requester, provider, outsider} & set(record.panel)
    assert market.task_state(tid).challenge is ChallengeState.PENDING
    salt = keccak(b"vote salt")
    for member in record.panel:
        market.commit_vote(tid, True, salt, sender=member)
        assert market.vote_commitment_of(True, salt, member) == vote_commitment(True, salt, member)
    with pytest.raises(E.VoteMismatch):
        market.reveal_vote(tid, False, salt, sender=record.panel[0])
    for member in record.panel:
        market.reveal_vote(tid, True, salt, sender=member)
    after = market.challenge_of(tid)
    assert after is not None and after.votes == (VoteState.UPHOLD,) * 3
    market.resolve(params, sender=outsider)
    assert market.task_state(tid).challenge is ChallengeState.UPHELD
    chain.advance_time(max(0, market.settle_time(params) - chain.block_timestamp("pending")))
    settled = market.settlement(market.finalize(params, sender=outsider))
    assert settled.result is TaskResult.OVERTURNED
    assert registry.stake_of(provider) == MIN_STAKE - BOND
    assert not registry.is_active(provider)  # below the minimum stake
    with pytest.raises(E.NotMarket) as not_market:
        registry.slash_stake(outsider, 1, sender=outsider)
    assert not_market.value.args_ == {"caller": outsider}
    assert market.challenge_of(tid) is None
    chain.revert(snapshot)
