"""Canary tasks on a five-node devnet: posted like real tasks, passed by honest nodes (also at
another thread count than the verifier's), failed by cheaters — who are challenged on chain
with ``check="canary"`` evidence and, once the drawn panel upholds it, slashed."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from devnet_helpers import tiny_devnet

from chefsplan_agents.bundles import ChatMessage, GenerationParams, TaskBundle, output_hash
from chefsplan_agents.chain import Event
from chefsplan_agents.config import PolicySettings
from chefsplan_agents.devnet import Devnet
from chefsplan_agents.errors import VerificationError
from chefsplan_agents.identity import Identity
from chefsplan_agents.llm import LlamaCppBackend
from chefsplan_agents.market import ChallengeState, TaskHandle, TaskResult, Timeouts
from chefsplan_agents.network import Network
from chefsplan_agents.node import NodePolicy
from chefsplan_agents.testing import ChangeToken, Lazy, WrongModel, honest_result
from chefsplan_agents.tools._core import _bounty
from chefsplan_agents.verify import (
    CanaryPolicy,
    CanaryPool,
    CanaryVerdict,
    KnownAnswer,
    ProviderStats,
    RescoreVerdict,
    canary_bounty,
    canary_evidence,
    check_canary,
    known_answer,
    load_evidence,
    rescore_result,
)

WINDOW = 600
PRICE = 10**12
HONEST, WRONG, LAZY, SWAP = 0, 2, 3, 4
PROMPTS = ("Plan a vegetarian dinner for four.", "Which wine goes with risotto?")


@pytest.fixture(scope="module")
def devnet(random_llm: LlamaCppBackend) -> Iterator[Devnet]:
    # The nodes run two threads, the verifier one: honest answers must pass across them.
    with tiny_devnet(
        5,
        n_threads=2,
        # WRONG runs another (random-weight) model and claims the pinned one.
        cheaters={WRONG: WrongModel(random_llm), LAZY: Lazy(), SWAP: ChangeToken()},
        # A price whose bounty for 16 tokens is a whole number of wei: rounding must agree.
        policy=NodePolicy(price_per_1k_tokens_wei=PRICE),
    ) as net:
        yield net


@pytest.fixture
def network(devnet: Devnet, scripted: LlamaCppBackend) -> Iterator[Network]:
    net = devnet.network
    net.verifier = scripted
    net.policy = PolicySettings(challenge_window_s=WINDOW)
    net.canaries.pool = CanaryPool()
    net.canaries.enabled = False
    net.canaries.outcomes.clear()
    yield net
    assert net.pending_canaries() == []  # every test checks the canaries it sent
    net.verifier = None
    net.policy = PolicySettings()
    net.canaries.enabled = False


def _real_bundle(network: Network, prompt: str, max_tokens: int) -> TaskBundle:
    """A task as the tools and the Matching agent build one."""
    return TaskBundle(
        kind="chat",
        messages=(ChatMessage(role="user", content=prompt),),
        params=GenerationParams(max_tokens=max_tokens),
        model={"sha256": network.verifier.info.sha256},  # type: ignore[union-attr]
        requester_did=network.identity.did,
    )


def _real_task(network: Network, provider: str, prompt: str, max_tokens: int = 16) -> TaskHandle:
    listed = network.index.provider(provider)
    assert listed is not None
    bundle = _real_bundle(network, prompt, max_tokens)
    return network.delegate(
        bundle,
        model=bundle.model,
        bounty_per_replica=_bounty([listed], max_tokens),
        assignee=provider,
        timeouts=Timeouts(challenge_window=WINDOW),
    )


def _posted(network: Network, handle: TaskHandle) -> Event:
    [event] = network.market.events("TaskPosted", task_id=handle.task_id)
    return event


def _shape(value: Any) -> Any:
    """The JSON structure without its values: keys and types."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


def _address(devnet: Devnet, i: int) -> str:
    return devnet.nodes[i].address


# ---------------------------------------------------------------------------- the wire


def test_a_canary_is_posted_like_a_real_task(
    devnet: Devnet, network: Network, scripted: LlamaCppBackend
) -> None:
    provider = _address(devnet, HONEST)
    network.refresh_providers()
    real = _real_task(network, provider, "Suggest a soup for a cold evening.")
    network.canaries.pool.add_prompt(scripted, PROMPTS[0], max_tokens=16)
    canary = network.send_canary(provider, max_tokens=16)

    real_post, canary_post = _posted(network, real), _posted(network, canary)
    assert real_post.args.keys() == canary_post.args.keys()
    assert canary_post.args["requester"] == real_post.args["requester"] == network.address
    r, c = real.params, canary.params
    # Every term a provider sees is a real task's, bar the ones that always differ.
    same = ("requester", "assignee", "replicas", "quorum", "bounty_per_replica", "bond")
    assert {k: getattr(c, k) for k in same} == {k: getattr(r, k) for k in same}
    assert c.challenge_window == r.challenge_window == WINDOW
    assert c.commit_timeout == r.commit_timeout
    posted_at = {h.task_id: devnet.chain.block_timestamp(h.posted_block) for h in (real, canary)}
    assert c.claim_deadline - posted_at[canary.task_id] == (
        r.claim_deadline - posted_at[real.task_id]
    )
    assert c.reveal_deadline - c.claim_deadline == r.reveal_deadline - r.claim_deadline
    assert c.nonce != r.nonce and c.bundle_hash != r.bundle_hash
    listed = network.index.provider(provider)
    assert listed is not None and listed.offer is not None
    assert listed.offer.price_per_1k_tokens_wei == PRICE
    assert c.bounty_per_replica == canary_bounty(PRICE, 16) == PRICE * 16 // 1000

    real_json = json.loads(devnet.store.get(real.bundle_cid))
    canary_json = json.loads(devnet.store.get(canary.bundle_cid))
    assert _shape(canary_json) == _shape(real_json)
    differ = {k for k in real_json if real_json[k] != canary_json[k]}
    assert differ == {"messages", "nonce", "created_at", "signature"}
    assert canary_json["messages"][0]["role"] == real_json["messages"][0]["role"] == "user"

    # Both settle; the canary's check found the known answer.
    network.wait(real)
    [outcome] = network.canaries.outcomes
    assert outcome.task_id == "0x" + canary.task_id.hex() and outcome.status == "match"
    network.wait(canary)
    # The provider has run that prompt now: the pool never sends it to it again.
    with pytest.raises(VerificationError, match="has not seen"):
        network.send_canary(provider, max_tokens=16)


def test_a_new_provider_gets_a_canary_with_its_first_real_task_only(
    devnet: Devnet, network: Network, scripted: LlamaCppBackend, caplog: pytest.LogCaptureFixture
) -> None:
    provider = _address(devnet, 1)
    network.refresh_providers()
    for prompt in PROMPTS:
        network.canaries.pool.add_prompt(scripted, prompt, max_tokens=16)
    network.canaries.policy = CanaryPolicy(
        new_provider_canaries=1 + network.canaries.sent_to(provider)
    )
    network.canaries.enabled = True

    first = _real_task(network, provider, "What goes into a ratatouille?")
    [canary] = network.pending_canaries()
    assert canary.params.assignee == provider and canary.task_id != first.task_id
    # Posted next to the real task, on its terms (before or after it, by a coin flip).
    assert abs(canary.posted_block - first.posted_block) == 1
    assert canary.params.bounty_per_replica == first.params.bounty_per_replica
    assert canary.params.challenge_window == first.params.challenge_window == WINDOW
    receipt = network.wait(first)
    assert receipt.output and network.pending_canaries() == []
    [outcome] = network.canaries.outcomes
    assert outcome.passed and outcome.status == "match" and outcome.challenge_tx is None
    assert outcome.source == "verifier"
    assert network.market.challenger_of(canary.task_id) is None
    network.wait(canary)  # a passed canary settles like any task: the provider is paid
    [settled] = network.market.events("TaskFinalized", task_id=canary.task_id)
    assert settled.args["result"] == TaskResult.ACCEPTED

    second = _real_task(network, provider, "Name a spice for lentils.")
    assert network.pending_canaries() == []  # no longer new to this requester's canaries
    network.wait(second)

    # With room under the spending cap for one task only, the real task goes and the canary
    # does not, whether it was due to go first or second (a coin flip each time).
    network.canaries.policy = CanaryPolicy(new_provider_canaries=10**6)
    room = first.params.bounty_per_replica
    for i in range(6):
        network.canaries.pool.add_prompt(scripted, f"Dinner idea number {i}?", max_tokens=16)
    caplog.set_level(logging.INFO, logger="chefsplan_agents.network")
    for _ in range(6):
        network.policy = PolicySettings(
            challenge_window_s=WINDOW, spending_cap_wei=network.spent_wei + room
        )
        real = _real_task(network, provider, "Name a herb for fish.")
        assert network.pending_canaries() == []
        network.wait(real)
    dropped = [
        r
        for r in caplog.records
        if r.getMessage().startswith(("no canary with this task", "canary to"))
    ]
    assert len(dropped) == 6  # a canary was due each time, and none was sent


# ---------------------------------------------------------------------------- honest nodes


def test_an_honest_answer_that_drifts_from_the_known_one_is_not_challenged(
    devnet: Devnet, network: Network, scripted: LlamaCppBackend
) -> None:
    """The verifier's own answer may break a near tie the other way than a node on other
    hardware: a different answer the full re-score accepts passes (``drift``)."""
    provider = _address(devnet, HONEST)
    network.refresh_providers()
    honest = known_answer(scripted, PROMPTS[1], max_tokens=16)
    # The known answer as a verifier that broke the last near tie the other way would hold.
    other = honest.token_ids[:-1] + (honest.token_ids[-2],)
    text = scripted.detokenize(other)
    drifted = KnownAnswer(
        messages=honest.messages,
        params=honest.params,
        model_sha256=honest.model_sha256,
        token_ids=other,
        text=text,
        output_hash=output_hash(text),
        source="verifier",
    )
    canary = network.send_canary(provider, answer=drifted)
    outcome = network.check_canary(canary)
    assert outcome.status == "drift" and outcome.passed, outcome.reason
    assert "re-score accepts" in outcome.reason
    assert network.market.challenger_of(canary.task_id) is None
    network.wait(canary)


# ---------------------------------------------------------------------------- cheaters


def _drive_panel(devnet: Devnet, handle: TaskHandle, upheld: bool) -> None:
    """The drawn panel votes (until nodes vote on their own, the test votes for them)."""
    market = devnet.market
    record = market.challenge_of(handle.task_id)
    assert record is not None and len(record.panel) == market.panel_size
    assert handle.params.assignee not in record.panel
    salt = b"\x05" * 32
    for member in record.panel:
        market.commit_vote(handle.task_id, upheld, salt, sender=member)
    for member in record.panel:
        market.reveal_vote(handle.task_id, upheld, salt, sender=member)
    market.resolve(handle.params, sender=devnet.chain.default_account)


def test_a_lazy_node_fails_its_canary_and_the_panel_slashes_it(
    devnet: Devnet, network: Network, scripted: LlamaCppBackend
) -> None:
    market, registry = devnet.market, devnet.registry
    cheater = _address(devnet, LAZY)
    network.refresh_providers()
    network.canaries.pool.add_prompt(scripted, PROMPTS[0], max_tokens=16)
    before = registry.reputation(cheater)
    stake_before = registry.stake_of(cheater)

    canary = network.send_canary(cheater)
    outcome = network.check_canary(canary)
    assert outcome.status == "failed" and not outcome.passed
    assert outcome.challenge_tx is not None and outcome.bond_wei == market.challenge_bond
    assert network.canaries.outcomes == [outcome]

    # On chain: the requester challenged inside the window, naming the evidence.
    tid = "0x" + canary.task_id.hex()
    assert market.task_state(tid).challenge is ChallengeState.PENDING
    assert market.challenger_of(tid) == network.address
    [challenged] = market.events("TaskChallenged", task_id=tid)
    assert challenged.args["evidenceCid"] == outcome.evidence_cid
    # Anyone can load the evidence and re-run the check from public data.
    evidence = load_evidence(devnet.store, challenged.args["evidenceCid"])
    assert evidence.check == "canary" and evidence.task_id == tid
    assert evidence.provider == cheater and evidence.result_cid == outcome.result_cid
    assert evidence.bundle_cid == canary.bundle_cid and evidence.mode == "full"
    assert evidence.model_sha256 == scripted.info.sha256
    [revealed] = market.events("ResultRevealed", task_id=tid)
    assert evidence.output_hash == "0x" + bytes(revealed.args["outputHash"]).hex()

    _drive_panel(devnet, canary, upheld=True)
    assert market.task_state(tid).challenge is ChallengeState.UPHELD
    chain = devnet.chain
    chain.advance_time(max(1, market.settle_time(canary.params) - chain.block_timestamp() + 1))
    settled = market.settlement(market.finalize(canary.params, sender=devnet.chain.default_account))
    assert settled.result is TaskResult.OVERTURNED and settled.winners == 0
    after = registry.reputation(cheater)
    assert after.audits_failed == before.audits_failed + 1
    assert registry.stake_of(cheater) < stake_before  # its registry stake is slashed
    assert market.balance_of(cheater) == 0  # and its bond: nothing to withdraw
    # The devnet is shared by this module's tests: top the stake up again.
    registry.add_stake(stake_before - registry.stake_of(cheater), sender=cheater)


@pytest.mark.parametrize("index", [SWAP, WRONG], ids=["change-token", "wrong-model"])
def test_a_cheating_node_fails_its_canary_and_is_challenged(
    devnet: Devnet, network: Network, scripted: LlamaCppBackend, index: int
) -> None:
    cheater = _address(devnet, index)
    network.refresh_providers()
    network.canaries.pool.add_prompt(scripted, PROMPTS[1], max_tokens=16)
    canary = network.send_canary(cheater)
    outcome = network.check_canary(canary)
    assert outcome.status == "failed" and outcome.evidence_cid is not None
    assert "full re-score fails" in outcome.reason
    evidence = load_evidence(devnet.store, outcome.evidence_cid)
    assert evidence.check == "canary" and evidence.provider == cheater
    assert devnet.market.challenger_of(canary.task_id) == network.address
    # A panel that finds the result honest rejects the challenge; here it upholds it.
    _drive_panel(devnet, canary, upheld=True)
    assert devnet.market.task_state(canary.task_id).challenge is ChallengeState.UPHELD


def test_a_challenge_bond_over_the_policy_cap_is_not_posted(
    devnet: Devnet, network: Network, scripted: LlamaCppBackend
) -> None:
    cheater = _address(devnet, SWAP)
    network.refresh_providers()
    network.canaries.pool.add_prompt(scripted, PROMPTS[0], max_tokens=16)
    canary = network.send_canary(cheater)
    network.policy = PolicySettings(
        challenge_window_s=WINDOW, max_spend_per_task_wei=devnet.market.challenge_bond - 1
    )
    outcome = network.check_canary(canary)
    assert outcome.status == "failed" and outcome.challenge_tx is None
    assert "max_spend_per_task_wei" in outcome.reason
    assert devnet.market.challenger_of(canary.task_id) is None
    network.wait(canary)


# ---------------------------------------------------------------------------- the pool, policy


def test_the_pool_never_sends_a_provider_a_prompt_it_has_run(
    scripted: LlamaCppBackend, make_task: Any, cheater: Identity
) -> None:
    pool = CanaryPool()
    sha = scripted.info.sha256
    a, b = "0x" + "a" * 40, "0x" + "b" * 40
    answer = pool.add_prompt(scripted, PROMPTS[0], max_tokens=16)
    assert answer.source == "verifier" and answer.output_hash == output_hash(answer.text)
    assert pool.draw(a, sha) == answer
    assert pool.draw(a, sha) == answer  # drawn, not sent: still fresh to it
    pool.mark_seen(answer, a)
    assert pool.draw(a, sha) is None  # sent once: never again
    assert pool.draw(b, sha) == answer and pool.draw(b, "0" * 64) is None
    pool.mark_seen(answer, b.upper().replace("0X", "0x"))
    assert pool.seen_by(answer) == {a, b}

    # A real result that passed a full re-score is a free known answer, but never for the
    # provider that produced it.
    task = TaskBundle(
        kind="chat",
        messages=(ChatMessage(role="user", content=PROMPTS[1]),),
        params=GenerationParams(max_tokens=16),
        model={"sha256": sha},
        requester_did=cheater.did,
    )
    result = honest_result(task, "bafkreiexample", scripted, cheater)
    verdict = rescore_result(scripted, task, result, task_cid="bafkreiexample")
    free = pool.add_rescored(task, result, verdict, provider=a)
    assert free.source == "rescored" and free.text == result.output
    assert pool.draw(a, sha) is None
    assert pool.draw("0x" + "c" * 40, sha, max_tokens=16) in (answer, free)


def test_a_canary_is_priced_as_the_tools_price_a_real_task() -> None:
    for price, max_tokens in [(0, 16), (1, 1), (999, 3), (10**12, 16), (10**12 + 7, 256)]:
        offer = SimpleNamespace(offer=SimpleNamespace(price_per_1k_tokens_wei=price))
        assert canary_bounty(price, max_tokens) == _bounty([offer], max_tokens)  # type: ignore[list-item]


def test_the_policy_audits_new_providers_then_samples_at_its_rate() -> None:
    policy = CanaryPolicy(rate=0.1, new_provider_canaries=2, salt=b"s" * 16)
    new = ProviderStats(reputation=0.1, stake_wei=10**18, tasks_won=0)
    old = ProviderStats(reputation=0.9, stake_wei=10**18, tasks_won=50)
    who = "0x" + "d" * 40
    assert policy.due(who, new, 0, b"t") and policy.due(who, None, 1, b"t")
    assert not policy.due(who, new, 2, b"t")
    draws = sum(policy.due(who, old, 99, i.to_bytes(32, "big")) for i in range(2000))
    assert 120 < draws < 280  # a fixed salt: the same count every run
    assert not any(
        CanaryPolicy(rate=0.0).due(who, old, 0, i.to_bytes(32, "big")) for i in range(200)
    )
    slashed = ProviderStats(reputation=0.9, stake_wei=10**18, tasks_won=50, slashed=1)
    assert policy.due(who, slashed, 0, b"t")  # a slash makes a provider new again


# ---------------------------------------------------------------------------- bad input


def _one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(err.value)
    assert message and "\n" not in message
    return message


def test_malformed_canary_inputs_give_one_line_errors(
    devnet: Devnet, network: Network, scripted: LlamaCppBackend
) -> None:
    with pytest.raises(VerificationError) as err:
        known_answer(scripted, "   ")
    assert "empty" in _one_line(err)
    with pytest.raises(VerificationError) as err:
        known_answer(scripted, "hi", max_tokens=0)
    assert "max_tokens" in _one_line(err)
    with pytest.raises(VerificationError) as err:
        CanaryPolicy(rate=1.5)
    assert "rate" in _one_line(err)
    with pytest.raises(VerificationError) as err:
        CanaryPool(max_size=0)
    _one_line(err)
    answer = known_answer(scripted, PROMPTS[0], max_tokens=8)
    with pytest.raises(VerificationError) as err:
        KnownAnswer(
            messages=answer.messages,
            params=GenerationParams(max_tokens=8, temperature=0.7),
            model_sha256=answer.model_sha256,
            token_ids=answer.token_ids,
            text=answer.text,
            output_hash=answer.output_hash,
            source="verifier",
        )
    assert "greedy" in _one_line(err)
    with pytest.raises(VerificationError) as err:
        KnownAnswer(**{**answer.__dict__, "output_hash": "0x" + "0" * 64})
    _one_line(err)
    failed = RescoreVerdict(
        passed=False,
        top1_fraction=0,
        fingerprint_agreement=0,
        tokens=0,
        rescore_ms=0,
        claimed_generation_ms=0,
        reason="x",
        check="token",
    )
    with pytest.raises(VerificationError) as err:
        CanaryPool().add_rescored(answer.bundle(network.identity.did), None, failed, "0x")  # type: ignore[arg-type]
    assert "full re-score" in _one_line(err)

    provider = _address(devnet, HONEST)
    network.refresh_providers()
    with pytest.raises(VerificationError) as err:
        network.send_canary(provider)  # an empty pool
    assert "network.canaries.pool" in _one_line(err)
    network.policy = PolicySettings()
    with pytest.raises(VerificationError) as err:
        network.send_canary(provider, answer=answer)
    assert "policy.challenge_window_s" in _one_line(err)
    network.policy = PolicySettings(challenge_window_s=WINDOW)
    with pytest.raises(VerificationError) as err:
        network.send_canary("0x" + "e" * 40, answer=answer)
    assert "no verified offer" in _one_line(err)
    real = _real_task(network, provider, "Is basil a herb?")
    with pytest.raises(VerificationError) as err:
        network.check_canary(real)
    assert "not a pending canary" in _one_line(err)
    network.wait(real)
    with pytest.raises(VerificationError) as err:
        check_canary(answer, real.bundle, _changed(answer, scripted, real), None)
    assert "no verifier" in _one_line(err)


def _changed(answer: KnownAnswer, llm: LlamaCppBackend, real: TaskHandle) -> Any:
    """A result whose answer differs from ``answer``."""
    identity = Identity.generate()
    result = honest_result(real.bundle, real.bundle_cid, llm, identity)
    return result.model_copy(update={"token_ids": (*result.token_ids, 1)})


def test_a_canary_result_revealed_under_a_malformed_cid_still_makes_evidence() -> None:
    """The CID is the provider's to choose: one no evidence may name used to raise a pydantic
    ValidationError out of the requester's canary check (and leave the canary pending)."""
    evidence = canary_evidence(
        chain_id=1,
        market="0x" + "11" * 20,
        task_id="0x" + "22" * 32,
        bundle_cid="bafkreigbtj4x7ip5legnfznufuopl4sg4knzc2cof6duas4b3q2fy6swua",
        provider="0x" + "33" * 20,
        result_cid="bafk/not:a cid\n" + "x" * 1000,
        output_hash="0x" + "44" * 32,
        model_sha256="55" * 32,
        verdict=CanaryVerdict("failed", "the revealed result is unusable"),
    )
    assert evidence.result_cid is None
    assert "bafk/not:a cid" in evidence.reason and len(evidence.reason) <= 500
    assert evidence.reason.endswith("the revealed result is unusable")
