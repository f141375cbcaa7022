"""MarketClient on the in-process EVM: assigned tasks and ``claim_and_finalize``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from eth_utils.crypto import keccak

from chefsplan_agents.chain import EmbeddedChain, deploy_contracts
from chefsplan_agents.chain import errors as E
from chefsplan_agents.errors import ChainError, MarketError
from chefsplan_agents.market import (
    ZERO_ADDRESS,
    MarketClient,
    ReplicaState,
    TaskParams,
    TaskResult,
)
from chefsplan_agents.registry import RegistryClient

MIN_STAKE = 10**16
BOUNTY = 10**15
BOND = 10**14
OUTPUT = keccak(b"the answer is 42")
CID = "bafkreidon73zkcrwdb5iafqtijxildoonbwnpv7dyd6ef3qdgads2jc4su"


class Net:
    def __init__(self, chain: EmbeddedChain) -> None:
        self.chain = chain
        deployment = deploy_contracts(chain, min_stake=MIN_STAKE)
        self.market = MarketClient(deployment.market, from_block=deployment.deployed_at)
        self.registry = RegistryClient(deployment.registry)
        self.requester = chain.accounts[0]
        self.providers = chain.accounts[1:3]
        self.outsider = chain.accounts[3]
        for i, who in enumerate(self.providers):
            self.registry.register(
                f"did:key:z6MkClient{i}",
                f"bafyoffer{i}",
                keccak(b"offer"),
                stake=MIN_STAKE,
                sender=who,
            )

    def task(self, **terms: Any) -> TaskParams:
        return self.market.new_task(
            keccak(b"bundle"), bounty_per_replica=BOUNTY, bond=BOND, **terms
        )


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    with EmbeddedChain(accounts=4) as chain:
        yield Net(chain)


@pytest.fixture()
def fresh(net: Net) -> Iterator[Net]:
    snapshot = net.chain.snapshot()
    yield net
    net.chain.revert(snapshot)


def test_new_task_names_an_assignee(fresh: Net) -> None:
    open_task = fresh.task()
    assert open_task.assignee == ZERO_ADDRESS and not open_task.assigned
    assert open_task.single_shot
    provider = fresh.providers[0]
    assigned = fresh.task(assignee=provider.lower())
    assert assigned.assignee == provider  # checksummed
    assert assigned.assigned and assigned.single_shot and assigned.replicas == 1
    assert not fresh.task(challenge_window=60).single_shot
    assert not fresh.task(replicas=3).single_shot
    # The assignee is part of the terms, so part of the task id.
    market = fresh.market
    assert market.task_id(replace(assigned, assignee=ZERO_ADDRESS)) != market.task_id(assigned)
    assert market.task_id_of(assigned) == market.task_id(assigned)


def test_new_task_refuses_an_assigned_task_with_several_replicas(fresh: Net) -> None:
    provider = fresh.providers[0]
    with pytest.raises(MarketError, match=r"one replica \(got replicas=2\)"):
        fresh.task(assignee=provider, replicas=2)
    with pytest.raises(ChainError, match="assignee"):
        fresh.task(assignee="nobody")
    # Built by hand, the contract refuses it just the same.
    several = replace(fresh.task(assignee=provider), replicas=3, quorum=2)
    with pytest.raises(E.InvalidReplicas) as info:
        fresh.market.post_task(several, "bafybundle")
    assert info.value.args_ == {"replicas": 3, "maxReplicas": 1}


def test_posted_terms_round_trip_the_assignee(fresh: Net) -> None:
    provider = fresh.providers[1]
    params = fresh.task(assignee=provider)
    posted = fresh.market.post_task(params, "bafybundle")
    record = fresh.market.get_task(posted.task_id)
    assert record is not None and record.params == params
    assert record.params.assignee == provider
    raw = dict(posted.receipt.event("TaskPosted").args["params"])
    assert TaskParams.from_abi(raw) == params


def test_claim_and_finalize_pays_the_assignee(fresh: Net) -> None:
    market, chain = fresh.market, fresh.chain
    provider = fresh.providers[0]
    params = fresh.task(assignee=provider)
    market.post_task(params, "bafybundle")
    before = chain.balance(provider)
    receipt = market.claim_and_finalize(params, OUTPUT, CID, sender=provider)
    settled = market.settlement(receipt)
    assert settled.task_id == market.task_id(params)
    assert settled.result is TaskResult.ACCEPTED and settled.winners == 1
    assert (settled.output_hash, settled.result_cid) == (OUTPUT, CID)
    assert settled.payout_per_winner == BOUNTY + BOND and settled.refund == 0
    assert receipt.event("Withdrawn").args == {"account": provider, "amount": BOUNTY + BOND}
    assert chain.balance(provider) == before + BOUNTY - receipt.fee_wei
    assert market.balance_of(provider) == 0 and market.balance_of(fresh.requester) == 0
    assert chain.balance(market.address) == 0
    assert fresh.registry.reputation(provider).won == 1
    assert not market.task_state(market.task_id(params)).open
    assert market.replica(market.task_id(params), provider).state is ReplicaState.NONE
    with pytest.raises(E.UnknownTask):
        market.claim_and_finalize(params, OUTPUT, CID, sender=provider)


def test_claim_and_finalize_reverts_decode_to_named_errors(fresh: Net) -> None:
    market = fresh.market
    assignee, other = fresh.providers
    params = fresh.task(assignee=assignee)
    market.post_task(params, "bafybundle")
    with pytest.raises(E.NotAssignee) as not_assignee:
        market.claim_and_finalize(params, OUTPUT, CID, sender=other)
    assert not_assignee.value.args_ == {"caller": other, "assignee": assignee}
    with pytest.raises(E.NotAssignee):
        market.claim(params, sender=other)
    with pytest.raises(E.WrongValue) as wrong:
        market.claim_and_finalize(params, OUTPUT, CID, sender=assignee, value=BOND + 1)
    assert wrong.value.args_ == {"sent": BOND + 1, "expected": BOND}
    with pytest.raises(E.EmptyCid):
        market.claim_and_finalize(params, OUTPUT, "", sender=assignee)
    windowed = fresh.task(challenge_window=60, assignee=assignee)
    market.post_task(windowed, "bafybundle")
    with pytest.raises(E.NotSingleShot) as not_single:
        market.claim_and_finalize(windowed, OUTPUT, CID, sender=assignee)
    assert not_single.value.args_ == {"taskId": market.task_id(windowed)}
    # An open task carries no commitment: claimAndFinalize could be copied and front-run.
    open_task = fresh.task()
    market.post_task(open_task, "bafybundle")
    with pytest.raises(E.NotAssignedTask) as not_assigned:
        market.claim_and_finalize(open_task, OUTPUT, CID, sender=assignee)
    assert not_assigned.value.args_ == {"taskId": market.task_id(open_task)}
    outsiders = fresh.task(assignee=fresh.outsider)
    market.post_task(outsiders, "bafybundle")
    with pytest.raises(E.NotActiveProvider):
        market.claim_and_finalize(outsiders, OUTPUT, CID, sender=fresh.outsider)
    # The failed attempts changed nothing: the assignee still settles it.
    market.claim_and_finalize(params, OUTPUT, CID, sender=assignee)
