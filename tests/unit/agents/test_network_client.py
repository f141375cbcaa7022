"""NetworkModelClient and NetworkChatModel: completions as delegated, verified tasks on a devnet."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_core import Image
from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import FunctionTool
from langchain_core.messages import HumanMessage
from langchain_core.messages import SystemMessage as LcSystemMessage
from langchain_core.outputs import ChatGeneration

from chefsplan_agents.agents import NetworkChatModel, NetworkCreateResult, NetworkModelClient
from chefsplan_agents.bundles import decode_result_bundle, decode_task_bundle
from chefsplan_agents.devnet import Devnet
from chefsplan_agents.errors import (
    InvalidGenerationParams,
    UnsupportedMessage,
    UnsupportedRequest,
    VerificationError,
)
from chefsplan_agents.llm import SCRIPTED_OUTPUT
from chefsplan_agents.market import DelegationProgress, TaskHandle
from chefsplan_agents.network import Network
from chefsplan_agents.tools import TaskReceipt


@pytest.fixture(scope="module")
def devnet() -> Iterator[Devnet]:
    with Devnet.create(nodes=3, model="tiny", share_model=True, n_threads=1, n_ctx=512) as net:
        yield net


@pytest.fixture
def network(devnet: Devnet) -> Iterator[Network]:
    net = devnet.network
    net.verifier = None
    yield net
    net.verifier = None


def _add(a: int, b: int) -> int:
    return a + b


def test_create_is_a_settled_task_with_its_receipt(network: Network) -> None:
    seen: list[str] = []

    def progress(handle: TaskHandle, now: DelegationProgress) -> None:
        seen.append(now.stage)

    client = NetworkModelClient(network, trust="low", max_tokens=16, on_progress=progress)
    messages = [
        SystemMessage(content="You plan menus."),
        UserMessage(content="Plan dinner", source="user"),
    ]
    result = asyncio.run(client.create(messages))

    assert isinstance(result, NetworkCreateResult)
    assert result.content == SCRIPTED_OUTPUT
    receipt = result.receipt
    assert receipt is client.last_receipt and client.receipts == (receipt,)
    assert receipt.output == SCRIPTED_OUTPUT and receipt.trust == "low"
    # The task the node ran is the conversation, turn for turn.
    task = decode_task_bundle(network.store.get(receipt.bundle_cid))
    assert [(m.role, m.content) for m in task.messages] == [
        ("system", "You plan menus."),
        ("user", "Plan dinner"),
    ]
    assert task.params.max_tokens == 16
    # Usage is the result's own token counts.
    stored = decode_result_bundle(network.store.get(receipt.result_cid))
    assert result.usage.completion_tokens == len(stored.token_ids) > 0
    assert result.usage.prompt_tokens == stored.timings.prompt_tokens > 0
    assert client.total_usage() == result.usage
    assert result.finish_reason == "stop"
    # A devnet's first step may carry a one-replica task all the way: at least its end shows.
    assert seen and seen[-1] == "finalized"


def test_extra_create_args_override_the_defaults(network: Network) -> None:
    client = NetworkModelClient(network, trust="low", max_tokens=16)
    result = asyncio.run(
        client.create(
            [UserMessage(content="Plan lunch", source="user")], extra_create_args={"max_tokens": 3}
        )
    )
    assert isinstance(result, NetworkCreateResult)
    assert result.finish_reason == "length" and result.usage.completion_tokens == 3
    assert decode_task_bundle(network.store.get(result.receipt.bundle_cid)).params.max_tokens == 3
    with pytest.raises(InvalidGenerationParams, match="temperature"):
        asyncio.run(
            client.create(
                [UserMessage(content="x", source="user")], extra_create_args={"temperature": 1.0}
            )
        )


def test_tools_and_json_output_are_refused_before_anything_is_posted(network: Network) -> None:
    client = NetworkModelClient(network, trust="low")
    tool = FunctionTool(_add, description="Add two integers.")
    spent = network.spent_wei
    hello = [UserMessage(content="2 plus 3?", source="user")]
    with pytest.raises(UnsupportedRequest, match="cannot call tools"):
        asyncio.run(client.create(hello, tools=[tool]))
    with pytest.raises(UnsupportedRequest, match="JSON"):
        asyncio.run(client.create(hello, json_output=True))
    with pytest.raises(UnsupportedMessage, match="image"):
        image = Image.from_base64(
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR4nGNgYAAAAAMAASsJTYQAAAAASUVORK5CYII="
        )
        asyncio.run(client.create([UserMessage(content=["look", image], source="user")]))
    assert network.spent_wei == spent
    # AutoGen itself refuses the pairing up front, from model_info.
    with pytest.raises(ValueError, match="function calling"):
        AssistantAgent("cook", model_client=client, tools=[tool])


def test_an_assistant_agent_runs_on_the_network(network: Network) -> None:
    client = NetworkModelClient(network, trust="low", max_tokens=16)
    agent = AssistantAgent("cook", model_client=client)
    result = asyncio.run(agent.run(task="Plan dinner"))
    assert result.messages[-1].content == SCRIPTED_OUTPUT
    assert client.last_receipt is not None
    task = decode_task_bundle(network.store.get(client.last_receipt.bundle_cid))
    assert task.messages[-1].content == "Plan dinner"


def test_stream_yields_the_settled_text_then_the_result(network: Network) -> None:
    client = NetworkModelClient(network, trust="low", max_tokens=16)

    async def collect() -> list[object]:
        return [c async for c in client.create_stream([UserMessage(content="Hi", source="u")])]

    chunks = asyncio.run(collect())
    assert chunks[0] == SCRIPTED_OUTPUT
    assert isinstance(chunks[1], NetworkCreateResult) and chunks[1].content == SCRIPTED_OUTPUT
    assert len(chunks) == 2


def test_history_with_tool_results_is_sent_as_text(network: Network) -> None:
    from autogen_core import FunctionCall

    client = NetworkModelClient(network, trust="low", max_tokens=8)
    history = [
        UserMessage(content="2 plus 3?", source="user"),
        AssistantMessage(
            content=[FunctionCall(id="1", name="add", arguments='{"a": 2, "b": 3}')],
            source="cook",
        ),
        FunctionExecutionResultMessage(
            content=[FunctionExecutionResult(content="5", call_id="1", name="add")]
        ),
    ]
    result = asyncio.run(client.create(history))
    assert isinstance(result, NetworkCreateResult)
    task = decode_task_bundle(network.store.get(result.receipt.bundle_cid))
    assert [m.role for m in task.messages] == ["user", "assistant", "user"]
    assert '"tool": "add"' in task.messages[1].content
    assert task.messages[2].content == "The tool add returned: 5"


def test_a_failed_rescore_raises_and_keeps_the_receipt(
    network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chefsplan_agents.agents import _langchain_model, _network_client
    from chefsplan_agents.tools import RescoreReport, delegate_task

    def forged_verdict(net: Network, **kwargs: object) -> TaskReceipt:
        # The real task, with the verdict a verifier gives a forged result.
        receipt = delegate_task(net, **kwargs)  # type: ignore[arg-type]
        failed = RescoreReport(
            result_cid=receipt.result_cid,
            passed=False,
            top1_fraction=0.1,
            fingerprint_agreement=0.0,
            tokens=receipt.completion_tokens,
            rescore_ms=1.0,
            claimed_generation_ms=1.0,
            reason="only 10% of the claimed tokens are the verifier's first choice",
        )
        return receipt.model_copy(update={"verification": failed})

    monkeypatch.setattr(_network_client, "delegate_task", forged_verdict)
    monkeypatch.setattr(_langchain_model, "delegate_task", forged_verdict)
    client = NetworkModelClient(network, trust="low", max_tokens=8)
    with pytest.raises(VerificationError, match="failed the re-score"):
        asyncio.run(client.create([UserMessage(content="Plan dinner", source="user")]))
    receipt = client.last_receipt
    assert isinstance(receipt, TaskReceipt)
    assert receipt.verification is not None and not receipt.verification.passed
    model = NetworkChatModel(network=network, trust="low", max_tokens=8)
    with pytest.raises(VerificationError, match="do not rely on it"):
        model.invoke("Plan dinner")


def test_langchain_chat_model_returns_the_receipt(network: Network) -> None:
    model = NetworkChatModel(network=network, trust="low", max_tokens=16)
    reply = model.invoke([LcSystemMessage("You plan menus."), HumanMessage("Plan dinner")])
    assert reply.content == SCRIPTED_OUTPUT
    receipt = reply.response_metadata["receipt"]
    assert receipt["output"] == SCRIPTED_OUTPUT and receipt["result_cid"].startswith("b")
    stored = decode_result_bundle(network.store.get(receipt["result_cid"]))
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["output_tokens"] == len(stored.token_ids)
    task = decode_task_bundle(network.store.get(receipt["bundle_cid"]))
    assert [m.role for m in task.messages] == ["system", "user"]

    result = asyncio.run(model.agenerate([[HumanMessage("Plan lunch")]]))
    generation = result.generations[0][0]
    assert isinstance(generation, ChatGeneration)
    assert generation.generation_info is not None
    assert isinstance(generation.generation_info["receipt"], TaskReceipt)
    assert generation.text == SCRIPTED_OUTPUT


def test_langchain_chat_model_refuses_tools_and_stop(network: Network) -> None:
    model = NetworkChatModel(network=network, trust="low", max_tokens=16)
    with pytest.raises(UnsupportedRequest, match="cannot call tools"):
        model.bind_tools([_add])
    with pytest.raises(UnsupportedRequest, match="stop sequences"):
        model.invoke("Plan dinner", stop=["\n"])
    with pytest.raises(InvalidGenerationParams, match="temperature"):
        model.invoke("Plan dinner", temperature=0.5)
