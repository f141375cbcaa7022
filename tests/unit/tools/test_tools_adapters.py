"""The AutoGen and LangChain adapters, driven by scripted models on a real devnet."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import ToolCallExecutionEvent, ToolCallSummaryMessage
from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import CreateResult, ModelFamily, ModelInfo, RequestUsage
from autogen_core.tools import FunctionTool
from autogen_ext.models.replay import ReplayChatCompletionClient
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import StructuredTool

from chefsplan_agents.config import PolicySettings
from chefsplan_agents.devnet import Devnet
from chefsplan_agents.llm import SCRIPTED_OUTPUT
from chefsplan_agents.network import Network
from chefsplan_agents.tools import (
    TOOL_NAMES,
    TaskReceipt,
    ToolFailure,
    autogen_tools,
    delegate_task,
    get_result,
    langchain_tools,
)

MODEL_INFO = ModelInfo(
    vision=False,
    function_calling=True,
    json_output=False,
    family=ModelFamily.UNKNOWN,
    structured_output=False,
)
CID = re.compile(r"\bbaf[a-z2-7]{50,}\b")
DINNER = {"prompt": "Plan dinner", "max_tokens": 16, "trust": "low"}
TASK_ID = re.compile(r"\btask (0x[0-9a-f]{64})\b")


def _call(name: str, arguments: dict[str, Any] | str, call_id: str) -> CreateResult:
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return CreateResult(
        finish_reason="function_calls",
        content=[FunctionCall(id=call_id, name=name, arguments=raw)],
        usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
        cached=False,
    )


def _agent(
    network: Network, script: Sequence[CreateResult | str], iterations: int
) -> AssistantAgent:
    return AssistantAgent(
        "copilot",
        model_client=ReplayChatCompletionClient(list(script), model_info=MODEL_INFO),
        tools=autogen_tools(network, ["find_providers", "delegate_task"]),
        max_tool_iterations=iterations,
        reflect_on_tool_use=False,  # the final message is the last tool result, summarised
        tool_call_summary_format="Delegated. {result}",
    )


# ---------------------------------------------------------------------------- AutoGen


def test_autogen_tools_carry_descriptions_and_schemas(network: Network) -> None:
    tools = autogen_tools(network)
    assert [t.name for t in tools] == list(TOOL_NAMES)
    assert all(isinstance(t, FunctionTool) for t in tools)
    delegate = next(t for t in tools if t.name == "delegate_task")
    schema = delegate.schema
    assert schema["description"].startswith("Delegate a task to remote model nodes")
    props = schema["parameters"]["properties"]
    assert set(props) == {
        "prompt",
        "messages",
        "max_tokens",
        "trust",
        "model",
        "providers",
        "max_price_per_1k_wei",
    }
    assert props["trust"]["description"].startswith("low: one provider")
    assert props["max_tokens"]["description"] == "Most new tokens the answer may have"
    assert "network" not in props and schema["parameters"]["required"] == []


def test_autogen_agent_finds_delegates_and_cites_the_result_cid(network: Network) -> None:
    agent = _agent(
        network,
        [
            _call("find_providers", {"model": "chefsplan-tiny-scripted"}, "1"),
            _call("delegate_task", DINNER, "2"),
        ],
        iterations=2,
    )
    result = asyncio.run(agent.run(task="Get a dinner plan from the network"))
    executions = [m for m in result.messages if isinstance(m, ToolCallExecutionEvent)]
    assert [e.content[0].name for e in executions] == ["find_providers", "delegate_task"]
    assert "providers, best first" in executions[0].content[0].content
    final = result.messages[-1]
    assert isinstance(final, ToolCallSummaryMessage)
    [task_id] = TASK_ID.findall(final.content)
    [cid] = CID.findall(final.content)
    receipt = get_result(network, task_id)  # the CID in the message is the settled one
    assert cid == receipt.result_cid and receipt.output == SCRIPTED_OUTPUT
    assert final.content.startswith(f"Delegated. task {task_id} settled")


def test_autogen_malformed_arguments_come_back_and_the_conversation_goes_on(
    network: Network,
) -> None:
    agent = _agent(
        network,
        [
            _call("delegate_task", {"prompt": "Plan dinner", "max_tokens": "lots"}, "1"),
            _call("delegate_task", "{not json", "2"),
            "Sorry, I could not delegate that.",
        ],
        iterations=3,
    )
    result = asyncio.run(agent.run(task="Get a dinner plan"))
    errors = [m.content[0] for m in result.messages if isinstance(m, ToolCallExecutionEvent)]
    assert errors[0].content.startswith("delegate_task failed (InvalidArguments): ")
    assert "'max_tokens'" in errors[0].content and "\n" not in errors[0].content
    assert errors[1].is_error  # unparsable JSON: AutoGen's own error result
    assert result.messages[-1].content == "Sorry, I could not delegate that."


def test_autogen_run_json_returns_receipts_and_failures(network: Network) -> None:
    [tool] = autogen_tools(network, ["find_providers"])
    token = CancellationToken()
    found = asyncio.run(tool.run_json({"limit": 2}, token))
    assert len(found.providers) == 2 and tool.return_value_as_string(found) == found.text()
    failure = asyncio.run(tool.run_json({"limit": "x"}, token))
    assert isinstance(failure, ToolFailure) and failure.error == "InvalidArguments"
    failure = asyncio.run(tool.run_json({"model": "gpt-4"}, token))
    assert tool.return_value_as_string(failure).startswith("find_providers failed (NoProvider")


# ---------------------------------------------------------------------------- LangChain


class ScriptedToolModel(BaseChatModel):
    """A chat model whose every turn is a function of the conversation so far."""

    script: list[Callable[[list[BaseMessage]], AIMessage]]
    turn: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted-tool-model"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        message = self.script[self.turn](messages)
        self.turn += 1
        return ChatResult(generations=[ChatGeneration(message=message)])


def _tool_call(name: str, args: dict[str, Any], call_id: str) -> Callable[..., AIMessage]:
    return lambda _messages: AIMessage(
        content="", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}]
    )


def _cite_last_tool_result(messages: list[BaseMessage]) -> AIMessage:
    last = next(m for m in reversed(messages) if isinstance(m, ToolMessage))
    return AIMessage(content=f"Here is what the network said: {last.content}")


def _run_agent(
    model: ScriptedToolModel, tools: list[StructuredTool], question: str
) -> list[BaseMessage]:
    """The tool-calling loop of a LangChain agent: call the model, run its tool calls, repeat."""
    by_name = {t.name: t for t in tools}
    bound = model.bind_tools(tools)
    messages: list[BaseMessage] = [HumanMessage(content=question)]
    while True:
        reply = bound.invoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            return messages
        for call in reply.tool_calls:
            messages.append(by_name[call["name"]].invoke(call))


def test_langchain_agent_finds_delegates_and_cites_the_result_cid(network: Network) -> None:
    model = ScriptedToolModel(
        script=[
            _tool_call("find_providers", {"model": "chefsplan-tiny-scripted"}, "a"),
            _tool_call("delegate_task", DINNER, "b"),
            _cite_last_tool_result,
        ]
    )
    messages = _run_agent(model, langchain_tools(network), "Get a dinner plan")
    tool_messages = [m for m in messages if isinstance(m, ToolMessage)]
    assert [m.name for m in tool_messages] == ["find_providers", "delegate_task"]
    receipt = tool_messages[1].artifact
    assert isinstance(receipt, TaskReceipt) and receipt.output == SCRIPTED_OUTPUT
    assert tool_messages[1].content == receipt.text() and tool_messages[1].status == "success"
    final = messages[-1]
    assert isinstance(final, AIMessage) and not final.tool_calls
    assert CID.findall(str(final.content)) == [receipt.result_cid]


def test_langchain_malformed_arguments_and_errors_come_back_as_messages(network: Network) -> None:
    model = ScriptedToolModel(
        script=[
            _tool_call("delegate_task", {"prompt": "Plan", "max_tokens": "lots"}, "a"),
            _tool_call("delegate_task", {"prompt": "Plan", "model": "gpt-4"}, "b"),
            lambda _m: AIMessage(content="I could not get that done."),
        ]
    )
    messages = _run_agent(model, langchain_tools(network), "Plan dinner")
    bad, missing = [m for m in messages if isinstance(m, ToolMessage)]
    assert bad.status == "error" and "'max_tokens'" in bad.content and "\n" not in bad.content
    assert missing.status == "error" and missing.artifact is None
    assert missing.content.startswith("delegate_task failed (NoProviderFound): ")
    assert messages[-1].content == "I could not get that done."


def test_langchain_tools_are_async_too(network: Network) -> None:
    tools = {t.name: t for t in langchain_tools(network)}
    assert list(tools) == list(TOOL_NAMES)
    call = {
        "name": "delegate_task",
        "args": {"prompt": "Hi", "max_tokens": 8, "trust": "low"},
        "id": "x",
        "type": "tool_call",
    }
    message = asyncio.run(tools["delegate_task"].ainvoke(call))
    assert isinstance(message, ToolMessage) and isinstance(message.artifact, TaskReceipt)
    schema = tools["find_providers"].tool_call_schema.model_json_schema()
    assert schema["properties"]["min_reputation"]["description"].startswith("Least reputation")


# ---------------------------------------------------------------------------- sensitive data


def test_a_model_driving_the_tools_cannot_send_sensitive_data_to_an_unqualified_node(
    network: Network, devnet: Devnet
) -> None:
    # Node 0's signed offer states jurisdiction=US, nodes 1 and 2 EU (see devnet_helpers).
    network.policy = PolicySettings(
        sensitive_tags={"jurisdiction": "EU"}, sensitive_patterns=(r"\bpatient\b",)
    )
    us = devnet.nodes[0].address
    posted_before = len(network.market.events("TaskPosted"))
    secret = {"prompt": "Menu for patient 7", "max_tokens": 16, "trust": "low"}
    agent = _agent(
        network,
        [
            _call("delegate_task", {**secret, "providers": [us]}, "1"),  # the model picks US
            _call("delegate_task", {**secret, "trust": "high"}, "2"),  # open to anyone
            _call("delegate_task", secret, "3"),  # left to the tool: a qualifying node
        ],
        iterations=3,
    )
    result = asyncio.run(agent.run(task="Plan a menu for patient 7"))
    answers = [
        r.content
        for m in result.messages
        if isinstance(m, ToolCallExecutionEvent)
        for r in m.content
    ]
    assert "is sensitive" in answers[0] and "states jurisdiction=US" in answers[0]
    assert "is sensitive" in answers[1] and "trust='high'" in answers[1]
    [task_id] = TASK_ID.findall(answers[2])
    # Only the third call posted anything, and an EU node ran it.
    assert len(network.market.events("TaskPosted")) == posted_before + 1
    claimers = {
        str(e.args["provider"]).lower()
        for e in network.market.events("ReplicaClaimed", task_id=task_id)
    }
    assert claimers and claimers <= {n.address.lower() for n in devnet.nodes[1:]}


def test_text_without_a_sensitive_pattern_goes_anywhere(network: Network, devnet: Devnet) -> None:
    network.policy = PolicySettings(
        sensitive_tags={"jurisdiction": "EU"}, sensitive_patterns=(r"\bpatient\b",)
    )
    us = devnet.nodes[0].address
    receipt = delegate_task(
        network, prompt="Plan dinner", max_tokens=16, trust="low", providers=[us]
    )
    assert {c.address.lower() for c in receipt.committers} == {us.lower()}
