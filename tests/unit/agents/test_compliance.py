"""The Compliance agent: policy verdicts, on-chain challenges inside the window, releases,
the judge, and the OutputLog record of every verdict."""

from __future__ import annotations

import json

import pytest
from agent_helpers import final_text, run, structured, tool_results
from autogen_agentchat.messages import TextMessage

from chefsplan_agents.agents import (
    ComplianceAgent,
    ComplianceReport,
    LocalModelClient,
    team,
)
from chefsplan_agents.chain.errors import ChallengePending
from chefsplan_agents.config import PolicySettings
from chefsplan_agents.devnet import Devnet
from chefsplan_agents.llm import SCRIPTED_OUTPUT, LlamaCppBackend
from chefsplan_agents.market import ChallengeState, TaskResult
from chefsplan_agents.network import Network
from chefsplan_agents.verify import load_evidence


def _report(result: object) -> ComplianceReport:
    reports = structured(result, ComplianceReport)
    assert reports, "no compliance report"
    return reports[-1]


def test_compliance_blocks_a_violating_output_and_freezes_its_payment_on_chain(
    network: Network, devnet: Devnet
) -> None:
    market = network.market
    network.policy = PolicySettings(forbidden_words=("chefsplan",), challenge_window_s=600)
    # A challenge is decided by a panel of three staked providers drawn from those who took no
    # part in the task: three more registered stakers (offers that no index lists, so no task
    # is routed to them) besides the two nodes that will not run this one.
    registry = devnet.registry
    panelists = _register_stakers(devnet, 3)
    balance_before = network.balance_wei()
    bond = market.challenge_bond
    result = run(
        team(network, max_attempts=1).run(task="trust: low\nmax_tokens: 16\nWhat is for dinner?")
    )
    [verdict] = _report(result).verdicts
    assert verdict.decision == "rejected"
    assert "forbidden word 'chefsplan'" in " ".join(verdict.reasons)
    assert verdict.challenge is not None and verdict.challenge.bond_wei == bond
    [task_id] = verdict.delegation.task_ids
    provider = verdict.delegation.provider_address
    assert provider is not None and verdict.delegation.status == "revealed"

    # The challenge froze settlement: the task stays open, nobody is paid.
    state = market.task_state(task_id)
    assert state.open and state.revealed == 1 and state.challenge is ChallengeState.PENDING
    assert market.challenger_of(task_id) == network.address
    assert market.events("TaskFinalized", task_id=task_id) == []
    # The challenge names its evidence: why, and which revealed result.
    [challenged] = market.events("TaskChallenged", task_id=task_id)
    evidence = load_evidence(network.store, str(challenged.args["evidenceCid"]))
    assert evidence.task_id == task_id and evidence.provider == provider
    assert evidence.check == "policy" and "forbidden word 'chefsplan'" in evidence.reason
    assert evidence.bundle_cid == network.handle_of(task_id).bundle_cid
    assert market.balance_of(provider) == 0
    bounty = verdict.delegation.escrow_wei
    assert network.balance_wei() <= balance_before - bounty - bond  # escrow + bond (+ gas)
    handle = network.handle_of(task_id)
    devnet.chain.advance_time(10_000)  # long past the window: still frozen
    with pytest.raises(ChallengePending):
        market.finalize(handle.params, sender=network.address)

    # The answer says so, and does not pass the blocked output on.
    answer = final_text(result)
    assert "could not get a trustworthy answer" in answer
    assert "challenged on chain" in answer and "payment frozen" in answer
    assert SCRIPTED_OUTPUT not in answer

    # The verdict is on chain: its record's hash in the OutputLog, the record by CID.
    [entry] = network.output_log.entries(subject=task_id)
    record = json.loads(network.store.get(entry.result_cid))
    assert record["verdict"] == "rejected" and record["tasks"] == [task_id]

    # The drawn panel votes by commit-reveal to uphold the challenge; no single party decides.
    record = market.challenge_of(task_id)
    assert record is not None and len(record.panel) == market.panel_size == 3
    assert provider not in record.panel and network.address not in record.panel
    salt = b"\x07" * 32
    voters = [m for m in record.panel if m in panelists or m in _node_addresses(devnet)]
    assert voters == list(record.panel)
    for member in record.panel:
        market.commit_vote(task_id, True, salt, sender=member)
    for member in record.panel:
        market.reveal_vote(task_id, True, salt, sender=member)
    stake_before = registry.stake_of(provider)
    market.resolve(handle.params, sender=devnet.chain.default_account)
    assert market.task_state(task_id).challenge is ChallengeState.UPHELD
    settled = market.settlement(market.finalize(handle.params, sender=devnet.chain.default_account))
    assert settled.result is TaskResult.OVERTURNED and settled.winners == 0
    # The cheater is paid nothing, loses its bond, and its registry stake is slashed too.
    assert market.balance_of(provider) == 0
    slashed_stake = stake_before - registry.stake_of(provider)
    assert slashed_stake > 0
    # The requester, as challenger, gets the bounty and its challenge bond back; the provider's
    # bond and slashed stake go to the requester and the panel's fee, and nothing is lost.
    credit = market.balance_of(network.address)
    fees = sum(market.balance_of(member) for member in record.panel)
    assert credit > bounty + bond
    assert credit + fees == bounty + bond + handle.params.bond + slashed_stake
    # The devnet is shared by the package's tests: the slashed node tops its stake up again.
    assert not registry.is_active(provider)
    registry.add_stake(slashed_stake, sender=provider)
    assert registry.is_active(provider)


def _node_addresses(devnet: Devnet) -> set[str]:
    return {node.address for node in devnet.nodes}


def _register_stakers(devnet: Devnet, count: int) -> list[str]:
    """Register ``count`` spare pre-funded accounts as staked providers (junk offers)."""
    registry = devnet.registry
    taken = _node_addresses(devnet) | {devnet.chain.default_account}
    spare = [a for a in devnet.chain.accounts if a not in taken]
    chosen = []
    for i, who in enumerate(spare):
        if registry.stake_of(who) > 0:
            chosen.append(who)
        elif len(chosen) < count:
            registry.register(
                f"did:key:z6MkPanelStaker{i}",
                f"bafkreipanelstaker{i}",
                bytes(32),
                stake=registry.min_stake,
                sender=who,
            )
            chosen.append(who)
        if len(chosen) == count:
            break
    assert len(chosen) == count
    return chosen


def test_compliance_releases_an_accepted_result_after_its_window(network: Network) -> None:
    network.policy = PolicySettings(challenge_window_s=600)
    result = run(team(network).run(task="trust: low\nmax_tokens: 16\nName a soup."))
    [verdict] = _report(result).verdicts
    assert verdict.accepted and verdict.challenge is None
    assert verdict.delegation.status == "settled" and verdict.delegation.receipt is not None
    [task_id] = verdict.delegation.task_ids
    assert not network.market.task_state(task_id).open
    [finalized] = network.market.events("TaskFinalized", task_id=task_id)
    assert finalized.args["result"] == TaskResult.ACCEPTED
    [released] = tool_results(result, "challenge_or_release")
    assert f"released task {task_id}: settled" in released.content
    assert SCRIPTED_OUTPUT in final_text(result)


def test_challenge_bond_over_the_per_task_cap_is_refused(network: Network) -> None:
    network.policy = PolicySettings(
        forbidden_words=("chefsplan",), challenge_window_s=600, max_spend_per_task_wei=10**14
    )
    result = run(team(network, max_attempts=1).run(task="trust: low\nmax_tokens: 16\nHi"))
    [verdict] = _report(result).verdicts
    assert verdict.decision == "rejected" and verdict.challenge is None
    assert any("max_spend_per_task_wei" in r for r in verdict.reasons)
    [task_id] = verdict.delegation.task_ids
    assert network.market.challenger_of(task_id) is None


def test_compliance_checks_plain_text_with_a_judge(
    network: Network, verifier: LlamaCppBackend
) -> None:
    network.policy = PolicySettings(
        judge_rules=("The text is polite.",), json_schema={"type": "object"}
    )
    judge = LocalModelClient(verifier)
    result = run(ComplianceAgent(network, judge=judge).run(task="You are a fool."))
    [verdict] = _report(result).verdicts
    assert verdict.decision == "rejected"
    assert any("not a JSON document" in r for r in verdict.reasons)
    [ruling] = verdict.judge
    assert ruling.rule == "The text is polite."
    [judged] = tool_results(result, "judge")
    assert "'The text is polite.'" in judged.content and not judged.is_error
    assert verdict.logged is None  # nothing was delegated, so nothing is logged on chain


def test_compliance_without_a_judge_says_the_fuzzy_rules_were_not_checked(
    network: Network,
) -> None:
    network.policy = PolicySettings(judge_rules=("Be nice.",))
    result = run(ComplianceAgent(network).run(task="hello"))
    [verdict] = _report(result).verdicts
    assert verdict.decision == "rejected"
    assert any("no judge model" in r for r in verdict.reasons)
    nothing = run(ComplianceAgent(network).run(task=None))
    assert isinstance(nothing.messages[-1], TextMessage)
    assert "nothing to check" in nothing.messages[-1].content


def test_a_silent_provider_ends_in_a_clear_message_not_a_hang(
    network: Network, devnet: Devnet, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chefsplan_agents.agents import rank_providers
    from chefsplan_agents.tools import find_providers

    best = rank_providers(find_providers(network).providers)[0].provider
    node = next(n for n in devnet.nodes if n.address == best.address)
    monkeypatch.setattr(node, "tick", lambda: 0)  # online in the registry, never acts
    network.policy = PolicySettings(challenge_window_s=600)
    result = run(team(network, max_attempts=1).run(task="trust: low\nmax_tokens: 16\nHi"))
    [verdict] = _report(result).verdicts
    assert verdict.decision == "rejected" and verdict.delegation.status == "failed"
    assert "nothing revealed" in verdict.delegation.error
    assert final_text(result).startswith("I could not get a trustworthy answer: not delegated")
