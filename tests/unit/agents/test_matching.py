"""The Matching agent: ranking, trust levels, parallel chunks, sensitive data routing."""

from __future__ import annotations

import pytest
from agent_helpers import run, structured
from autogen_agentchat.messages import (
    StructuredMessage,
    TextMessage,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
)

from chefsplan_agents.agents import (
    DelegationMessage,
    DelegationReport,
    MatchingAgent,
    Plan,
    build_plan,
    parse_request,
    rank_providers,
    sensitive_refusal,
)
from chefsplan_agents.bundles import decode_task_bundle
from chefsplan_agents.config import PolicySettings
from chefsplan_agents.devnet import Devnet
from chefsplan_agents.errors import PolicyViolation
from chefsplan_agents.llm import SCRIPTED_OUTPUT
from chefsplan_agents.network import Network
from chefsplan_agents.tools import ProviderInfo, delegate_task


def _provider(n: int, **changes: object) -> ProviderInfo:
    fields: dict[str, object] = {
        "address": f"0x{n:040x}",
        "did": f"did:key:z{n}",
        "model_name": "soup-7b",
        "model_sha256": "ab" * 32,
        "quantization": "Q4_1",
        "context_length": 2048,
        "generation_tokens_per_s": 100.0,
        "prefill_tokens_per_s": 200.0,
        "price_per_1k_tokens_wei": 10,
        "stake_wei": 10**18,
        "reputation_score": 0.5,
        "tasks_won": 0,
        "tasks_slashed": 0,
        "endpoint": None,
    }
    return ProviderInfo.model_validate(fields | changes)


def test_ranking_weighs_fit_speed_price_reputation_and_stake() -> None:
    base = _provider(1)
    fast = _provider(2, generation_tokens_per_s=400.0)
    cheap = _provider(3, price_per_1k_tokens_wei=0)
    other_model = _provider(4, model_name="stew-1b", generation_tokens_per_s=900.0)
    trusted = _provider(5, reputation_score=1.0)
    ranked = rank_providers([base, fast, cheap, other_model, trusted], model="soup-7b")
    order = [r.provider.address for r in ranked]
    assert order[-1] == other_model.address  # the fastest, but it does not serve the model
    assert not ranked[-1].model_fit and ranked[0].model_fit
    assert order.index(fast.address) < order.index(base.address)
    assert order.index(cheap.address) < order.index(base.address)
    assert order.index(trusted.address) < order.index(base.address)
    # Equal scores keep the registry's order.
    twins = rank_providers([_provider(7), _provider(6)])
    assert [r.provider.address for r in twins] == [_provider(7).address, _provider(6).address]
    assert rank_providers([]) == []


def test_sensitive_criteria() -> None:
    p = _provider(1)
    assert "no criteria" in str(sensitive_refusal(p, PolicySettings()))
    assert sensitive_refusal(p, PolicySettings(sensitive_providers=(p.did,))) is None
    assert sensitive_refusal(p, PolicySettings(sensitive_providers=(p.address.upper(),))) is None
    assert "sensitive_providers" in str(
        sensitive_refusal(p, PolicySettings(sensitive_providers=("did:key:zOther",)))
    )
    assert sensitive_refusal(p, PolicySettings(sensitive_models=("soup-7b",))) is None
    assert "soup-7b is not in policy.sensitive_models" in str(
        sensitive_refusal(p, PolicySettings(sensitive_models=("stew",)))
    )
    assert "over 5" in str(sensitive_refusal(p, PolicySettings(sensitive_max_price_per_1k_wei=5)))
    eu = _provider(2, tags={"jurisdiction": "EU", "hardware": "cpu"})
    wants_eu = PolicySettings(sensitive_tags={"jurisdiction": "EU"})
    assert sensitive_refusal(eu, wants_eu) is None
    assert sensitive_refusal(p, wants_eu) == (
        "its signed offer states no jurisdiction, policy.sensitive_tags wants jurisdiction=EU"
    )
    us = _provider(3, tags={"jurisdiction": "US"})
    assert "states jurisdiction=US" in str(sensitive_refusal(us, wants_eu))
    both = PolicySettings(sensitive_tags={"jurisdiction": "EU", "hardware": "gpu"})
    assert "wants hardware=gpu" in str(sensitive_refusal(eu, both))


def _plan_message(text: str, policy: PolicySettings, **options: object) -> StructuredMessage[Plan]:
    request = parse_request(text, policy, **options)  # type: ignore[arg-type]
    return StructuredMessage[Plan](content=build_plan(request, policy), source="copilot")


def test_matching_splits_a_long_document_across_three_nodes_and_merges(
    network: Network, devnet: Devnet
) -> None:
    paragraphs = [f"Paragraph number {i} is about dish number {i}." for i in range(4)]
    text = "Summarise:\ntrust: low\nmax_tokens: 16\n---\n" + "\n\n".join(paragraphs)
    message = _plan_message(text, network.policy, max_chunk_chars=50)
    assert [p.kind for p in message.content.parts] == ["chunk"] * 4
    result = run(MatchingAgent(network).run(task=message))
    [report] = structured(result, DelegationReport)
    assert [d.part for d in report.delegations] == [0, 1, 2, 3]
    assert all(d.status == "settled" and d.output == SCRIPTED_OUTPUT for d in report.delegations)
    assert report.providers == 3
    assert {d.provider_address for d in report.delegations} == {n.address for n in devnet.nodes}
    assert report.merged == "\n\n".join(d.output for d in report.delegations)
    for paragraph, d in zip(paragraphs, report.delegations, strict=True):
        assert d.receipt is not None
        bundle = decode_task_bundle(network.store.get(d.receipt.bundle_cid))
        assert (bundle.messages or ())[0].content == f"Summarise:\n\n{paragraph}"
    # Every chunk was posted (its call shown) before any result came back.
    kinds = [
        type(m).__name__
        for m in result.messages
        if isinstance(m, ToolCallRequestEvent | ToolCallExecutionEvent)
        and m.content[0].name == "delegate_task"
    ]
    assert kinds == ["ToolCallRequestEvent"] * 4 + ["ToolCallExecutionEvent"] * 4


def test_matching_takes_plain_text(network: Network) -> None:
    result = run(MatchingAgent(network).run(task="trust: low\nmax_tokens: 16\nName a soup."))
    [report] = structured(result, DelegationReport)
    assert report.delegations[0].output == SCRIPTED_OUTPUT
    assert "answered, 1 of 1 agreed" in report.text()
    empty = run(MatchingAgent(network).run(task="   "))
    assert isinstance(empty.messages[-1], TextMessage)
    assert "the request is empty" in empty.messages[-1].content


def _claimers(network: Network, task_id: str) -> set[str]:
    return {
        str(e.args["provider"]).lower()
        for e in network.market.events("ReplicaClaimed", task_id=task_id)
    }


def test_sensitive_data_reaches_only_qualifying_nodes(network: Network, devnet: Devnet) -> None:
    allowed = devnet.nodes[1:]
    network.policy = PolicySettings(
        sensitive_providers=tuple(n.did for n in allowed),
        sensitive_patterns=(r"\b\d{3}-\d{2}-\d{4}\b",),
    )
    # The pattern marks the request sensitive; three subtasks spread over the allowed nodes.
    text = "trust: low\nmax_tokens: 16\nFor patient 123-45-6789:\n- soup\n- salad\n- bread"
    message = _plan_message(text, network.policy)
    assert message.content.request.sensitive
    result = run(MatchingAgent(network).run(task=message))
    [report] = structured(result, DelegationReport)
    assert len(report.delegations) == 3
    allowed_addresses = {n.address.lower() for n in allowed}
    for d in report.delegations:
        assert d.status == "settled"
        for task_id in d.task_ids:
            claimed = _claimers(network, task_id)
            assert claimed and claimed <= allowed_addresses
            params = network.market.get_task(task_id)
            assert params is not None and params.params.assignee.lower() in allowed_addresses
    ranking = next(
        r.content
        for m in result.messages
        if isinstance(m, ToolCallExecutionEvent)
        for r in m.content
        if r.name == "find_providers"
    )
    assert devnet.nodes[0].did in ranking and "not in policy.sensitive_providers" in ranking


def test_sensitive_data_goes_only_to_nodes_whose_signed_offer_has_the_tags(
    network: Network, devnet: Devnet
) -> None:
    # Node 0's offer states jurisdiction=US, nodes 1 and 2 state EU (see conftest).
    network.policy = PolicySettings(
        sensitive_tags={"jurisdiction": "EU"},
        sensitive_patterns=(r"\b\d{3}-\d{2}-\d{4}\b",),
    )
    text = "trust: low\nmax_tokens: 16\nFor patient 123-45-6789:\n- soup\n- salad\n- bread"
    message = _plan_message(text, network.policy)
    assert message.content.request.sensitive
    result = run(MatchingAgent(network).run(task=message))
    [report] = structured(result, DelegationReport)
    allowed = {n.address.lower() for n in devnet.nodes[1:]}
    assert len(report.delegations) == 3
    for d in report.delegations:
        assert d.status == "settled"
        for task_id in d.task_ids:
            claimed = _claimers(network, task_id)
            assert claimed and claimed <= allowed
    ranking = next(
        r.content
        for m in result.messages
        if isinstance(m, ToolCallExecutionEvent)
        for r in m.content
        if r.name == "find_providers"
    )
    assert devnet.nodes[0].did in ranking and "states jurisdiction=US" in ranking


def test_sensitive_tags_nobody_states_refuse_the_task(network: Network) -> None:
    before = network.spent_wei
    network.policy = PolicySettings(sensitive_tags={"jurisdiction": "CH"})
    result = run(MatchingAgent(network).run(task="sensitive: yes\ntrust: low\nMy diagnosis."))
    [report] = structured(result, DelegationReport)
    [failed] = report.delegations
    assert "no provider qualifies for sensitive data" in str(failed.error)
    assert "jurisdiction=CH" in str(failed.error)
    assert network.spent_wei == before


def test_sensitive_data_with_nobody_qualifying_is_refused(network: Network) -> None:
    before = network.spent_wei
    result = run(MatchingAgent(network).run(task="sensitive: yes\ntrust: low\nMy diagnosis."))
    [report] = structured(result, DelegationReport)
    [failed] = report.delegations
    assert failed.status == "failed" and not failed.task_ids
    assert "no provider qualifies for sensitive data" in str(failed.error)
    assert "names no criteria" in str(failed.error)
    assert network.spent_wei == before  # nothing posted


def test_high_trust_sensitive_needs_three_qualifying_nodes(
    network: Network, devnet: Devnet
) -> None:
    network.policy = PolicySettings(sensitive_providers=(devnet.nodes[0].did,))
    result = run(MatchingAgent(network).run(task="sensitive: yes\ntrust: high\nMy diagnosis."))
    [report] = structured(result, DelegationReport)
    assert "needs 3 providers" in str(report.delegations[0].error)


def test_the_per_task_cap_refuses_before_anything_is_posted(network: Network) -> None:
    network.policy = PolicySettings(max_spend_per_task_wei=0)
    spent = network.spent_wei
    result = run(MatchingAgent(network).run(task="trust: low\nmax_tokens: 16\nName a soup."))
    [report] = structured(result, DelegationReport)
    [failed] = report.delegations
    assert failed.status == "failed" and "over the per-task cap of 0 wei" in str(failed.error)
    # The cap holds on the tools' path too: Network.delegate checks it for every task.
    with pytest.raises(PolicyViolation, match="max_spend_per_task_wei=0"):
        delegate_task(network, "Name a soup.", max_tokens=16, trust="low")
    assert network.spent_wei == spent


def test_reports_read_as_text(network: Network) -> None:
    result = run(MatchingAgent(network).run(task="trust: low\nmax_tokens: 16\nName a soup."))
    message = result.messages[-1]
    assert isinstance(message, DelegationMessage)
    assert message.to_text().startswith("part 1: node did:key:") and "{" not in message.to_text()
