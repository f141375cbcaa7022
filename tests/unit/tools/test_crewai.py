"""crewai_tools: a real CrewAI agent, run offline by a scripted LLM, uses the network's tools."""

from __future__ import annotations

import json
import os
import re
import sys
import warnings
from typing import Any

import pytest

from chefsplan_agents.llm import SCRIPTED_OUTPUT
from chefsplan_agents.network import Network
from chefsplan_agents.tools import TOOL_NAMES, TaskReceipt, ToolFailure, crewai_tools

# crewai reports usage to its servers unless told not to; nothing here may leave the machine.
os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")

with warnings.catch_warnings():
    # Importing crewai warns that crewai.rag refuses its child module as an attribute.
    warnings.simplefilter("ignore", ImportWarning)
    try:
        import crewai
        from crewai import Agent, Crew, Task
        from crewai.llms.base_llm import BaseLLM
    except ImportError:  # the [crewai] extra is not installed: only the import guard is tested
        crewai = None
        BaseLLM = object

needs_crewai = pytest.mark.skipif(crewai is None, reason="crewai is the [crewai] extra")

# crewai's own code reads its deprecated fields; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:crewai.*")

_RESULT_CID = re.compile(r"result (b[a-z2-7]{20,})")


class ScriptedLLM(BaseLLM):  # type: ignore[misc, valid-type]
    """Stands in for a model: answers in CrewAI's ReAct format, one scripted step per call,
    and writes its final answer from what the last tool returned."""

    steps: list[str]
    calls: list[list[dict[str, Any]]] = []

    def call(
        self,
        messages: str | list[Any],
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
    ) -> str:
        chat = [{"role": "user", "content": messages}] if isinstance(messages, str) else messages
        self.calls.append(list(chat))
        if self.steps:
            return self.steps.pop(0)
        seen = " ".join(str(m.get("content", "")) for m in chat)
        cids = _RESULT_CID.findall(seen)
        cid = cids[-1] if cids else "none"
        return (
            "Thought: I now know the final answer\n"
            f"Final Answer: The network's plan is result {cid}."
        )

    def supports_function_calling(self) -> bool:
        return False  # the ReAct text protocol, which any model can follow


def _action(tool: str, arguments: dict[str, Any]) -> str:
    return f"Thought: I should use {tool}.\nAction: {tool}\nAction Input: {json.dumps(arguments)}"


@needs_crewai
def test_a_crewai_agent_finds_providers_and_delegates(network: Network) -> None:
    tools = crewai_tools(network, ["find_providers", "delegate_task"])
    llm = ScriptedLLM(
        model="scripted",
        steps=[
            _action("find_providers", {"limit": 3}),
            _action("delegate_task", {"prompt": "Plan dinner", "max_tokens": 8, "trust": "low"}),
        ],
        calls=[],
    )
    cook = Agent(
        role="Copilot",
        goal="Get a dinner plan from the network",
        backstory="You delegate work to the network's model nodes.",
        llm=llm,
        tools=tools,
        allow_delegation=False,
        max_iter=5,
        verbose=False,
    )
    task = Task(
        description="Get a dinner plan from the network and cite its result CID.",
        expected_output="The plan and the CID of its result.",
        agent=cook,
    )
    answer = str(Crew(agents=[cook], tasks=[task], verbose=False).kickoff())

    delegate = next(t for t in tools if t.name == "delegate_task")
    receipt = delegate.last_result
    assert isinstance(receipt, TaskReceipt)
    assert receipt.output == SCRIPTED_OUTPUT[: len(receipt.output)] and receipt.output
    assert receipt.result_cid in answer
    find = next(t for t in tools if t.name == "find_providers")
    assert find.last_result is not None and len(find.last_result.providers) == 3
    # The model saw the tools' receipts as text: the providers, then the settled task.
    seen = " ".join(str(m.get("content", "")) for m in llm.calls[-1])
    assert "3 providers, best first" in seen
    assert f"task {receipt.task_id} settled" in seen


@needs_crewai
def test_tools_carry_names_descriptions_and_schemas(network: Network) -> None:
    tools = crewai_tools(network)
    assert [t.name for t in tools] == list(TOOL_NAMES)
    assert all(isinstance(t, crewai.tools.BaseTool) for t in tools)
    delegate = tools[TOOL_NAMES.index("delegate_task")]
    assert "Delegate a task to remote model nodes" in delegate.description
    assert "max_tokens" in delegate.args_schema.model_json_schema()["properties"]


@needs_crewai
def test_bad_arguments_and_errors_come_back_as_one_line(network: Network) -> None:
    (delegate,) = crewai_tools(network, ["delegate_task"])
    text = delegate.run(prompt="Plan dinner", max_tokens="lots")
    assert text.startswith("delegate_task failed (InvalidArguments): argument 'max_tokens'")
    assert isinstance(delegate.last_result, ToolFailure)
    refused = delegate.run(prompt="Plan dinner", max_tokens=8, model="no-such-model")
    assert refused.startswith("delegate_task failed (NoProviderFound): no provider matches")


def test_without_crewai_the_error_names_the_extra(
    network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chefsplan_agents.tools import _crewai

    _crewai._tool_class.cache_clear()
    monkeypatch.setitem(sys.modules, "crewai", None)  # what a missing package looks like
    monkeypatch.setitem(sys.modules, "crewai.tools", None)
    try:
        with pytest.raises(ImportError, match=r"chefsplan-agents\[crewai\]"):
            crewai_tools(network)
    finally:
        _crewai._tool_class.cache_clear()
