"""``LocalModelClient``: an AutoGen chat completion client over a local llama.cpp model.

Tool calls come from grammar-constrained JSON: with tools offered, the model can only write
``{"tool": <name>, "arguments": {...}}`` (arguments matching that tool's schema) or
``{"answer": "..."}``, so even a small model produces calls that parse. Tool results in the
history are rendered into the model's chat template (as a user turn with a clear prefix when
the template has no tool role). Generation runs on a worker thread, one call at a time per
client, and streams tokens as they are generated.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import (
    AssistantMessage,
    CreateResult,
    FinishReasons,
    FunctionExecutionResultMessage,
    LLMMessage,
    ModelFamily,
    ModelInfo,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from chefsplan_agents._json import JsonTooDeep, loads
from chefsplan_agents.agents._client_base import _ClientBase
from chefsplan_agents.errors import ContextOverflow, InvalidGenerationParams, UnsupportedMessage
from chefsplan_agents.llm import ChatMessage, Generation, GenerationParams, LlamaCppBackend
from chefsplan_agents.llm._models import ModelFile

__all__ = ["DEFAULT_MAX_TOKENS", "LocalModelClient"]

_STREAM_AHEAD = 8

#: Completion tokens per call unless the client's ``params`` or ``extra_create_args`` say else.
DEFAULT_MAX_TOKENS = 512

ToolChoice = Tool | Literal["auto", "required", "none"]
_Mode = Literal["text", "json", "tools"]

_TOOL_KEY = "tool"
_ARGS_KEY = "arguments"
_ANSWER_KEY = "answer"
# The JSON schema converter lets any character but '"' and '\' into a string, raw control
# characters included, which strict JSON parsers (json, pydantic) reject; they must be escaped.
_CHAR_RULE = 'char ::= [^"\\\\] |'
_STRICT_CHAR_RULE = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


class _Stopped(Exception):
    """Raised from the token callback to stop a generation that was cancelled."""


@dataclass
class _Plan:
    """One request, ready to run: the prompt, how to sample, and how to read the output."""

    prompt: str
    params: GenerationParams
    grammar: str | None
    mode: _Mode
    tool_names: frozenset[str] = frozenset()
    counts: list[int] = field(default_factory=lambda: [0, 0])  # prompt, completion tokens


class _AnswerStream:
    """The text of ``{"answer": "..."}`` as the raw JSON grows, piece by piece.

    Decodes JSON string escapes exactly like ``json.loads`` (surrogate pairs included), so the
    pieces it returns join into the parsed answer.
    """

    _PREFIX = re.compile(r'\s*\{\s*"answer"\s*:\s*"')
    _ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}

    def __init__(self) -> None:
        self._raw = ""
        self._pos: int | None = None
        self.done = False

    @property
    def started(self) -> bool:
        """Whether the output is an answer (its opening has been seen)."""
        return self._pos is not None

    def feed(self, piece: str) -> str:
        """Add raw output; return the answer text it completes."""
        self._raw += piece
        if self.done:
            return ""
        if self._pos is None:
            match = self._PREFIX.match(self._raw)
            if match is None:
                return ""
            self._pos = match.end()
        raw, i, out = self._raw, self._pos, []
        while i < len(raw):
            c = raw[i]
            if c == '"':
                self.done = True
                i += 1
                break
            if c != "\\":
                out.append(c)
                i += 1
                continue
            if i + 1 >= len(raw):
                break
            if raw[i + 1] != "u":
                out.append(self._ESCAPES.get(raw[i + 1], raw[i + 1]))
                i += 2
                continue
            if i + 6 > len(raw):
                break
            code = int(raw[i + 2 : i + 6], 16)
            if 0xD800 <= code < 0xDC00:
                # json.loads joins a high surrogate with a following \uDCxx escape.
                after = raw[i + 6 : i + 12]
                if len(after) < 6 and "\\u".startswith(after[:2]):
                    break  # a low surrogate escape may follow
                if after.startswith("\\u"):
                    low = int(after[2:6], 16)
                    if 0xDC00 <= low < 0xE000:
                        out.append(chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)))
                        i += 12
                        continue
            out.append(chr(code))
            i += 6
        self._pos = i
        return "".join(out)


class LocalModelClient(_ClientBase):
    """An AutoGen ``ChatCompletionClient`` that runs a GGUF model in this process.

    Example::

        client = LocalModelClient.from_model("smollm2-135m")
        agent = AssistantAgent("cook", model_client=client, tools=[add])
        result = await agent.run(task="What is 2 plus 3?")
        await client.close()

    Tools are offered through a grammar: the model writes ``{"tool": <name>, "arguments":
    {...}}`` or ``{"answer": "..."}`` and nothing else; one call per turn. With
    ``json_output=True`` the output is a JSON object, with a pydantic model type it follows
    that model's schema. ``extra_create_args`` take :class:`GenerationParams` fields
    (``max_tokens``, ``temperature``, ``seed``, ``stop``, ...); ``max_tokens`` is lowered to
    what the context has left.

    Args:
        backend: The loaded model. The client does not close it unless ``close_backend``.
        params: Default sampling parameters (greedy under the determinism profile, with
            ``max_tokens`` = :data:`DEFAULT_MAX_TOKENS`, when omitted).
        model_info: What to report to AutoGen (text only, function calling, JSON and
            structured output, family ``unknown`` by default).
        close_backend: Close ``backend`` in :meth:`close`.

    Raises:
        ValueError: ``model_info`` lacks a required field.
    """

    def __init__(
        self,
        backend: LlamaCppBackend,
        *,
        params: GenerationParams | None = None,
        model_info: ModelInfo | None = None,
        close_backend: bool = False,
    ) -> None:
        self._backend = backend
        self._params = params or GenerationParams(max_tokens=DEFAULT_MAX_TOKENS)
        super().__init__(
            model_info
            or {
                "vision": False,
                "function_calling": True,
                "json_output": True,
                "family": ModelFamily.UNKNOWN,
                "structured_output": True,
            }
        )
        self._close_backend = close_backend
        self._lock = asyncio.Lock()
        template = backend.chat_template or ""
        # Templates that know a tool role name it in a comparison; a generic ChatML loop does
        # not, and a model trained on it has never seen a tool turn.
        self._tool_role = "'tool'" in template or '"tool"' in template

    @classmethod
    def from_model(
        cls,
        model: ModelFile | str | Path,
        *,
        n_ctx: int = 4096,
        n_threads: int = 2,
        params: GenerationParams | None = None,
        cache_dir: Path | None = None,
    ) -> LocalModelClient:
        """Load ``model`` (a path or a known name such as ``smollm2-135m``) into a client that
        closes it in :meth:`close`.

        Raises:
            ModelNotFound: No such file or name.
            ModelLoadError: llama.cpp cannot load the file.
        """
        backend = LlamaCppBackend(model, n_ctx=n_ctx, n_threads=n_threads, cache_dir=cache_dir)
        return cls(backend, params=params, close_backend=True)

    @property
    def backend(self) -> LlamaCppBackend:
        """The model this client runs."""
        return self._backend

    # --- ChatCompletionClient -----------------------------------------------------------

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: ToolChoice = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        """Generate one reply.

        Returns:
            Text (``finish_reason`` ``stop`` or ``length``) or one ``FunctionCall``
            (``function_calls``), with the call's token usage.

        Raises:
            UnsupportedMessage: A message holds an image or is of an unknown type.
            InvalidGenerationParams: An ``extra_create_args`` key or value is invalid, or a
                tool's schema cannot be turned into a grammar.
            ContextOverflow: The prompt leaves no room in the context.
            GenerationError: llama.cpp failed while generating.
            asyncio.CancelledError: ``cancellation_token`` was cancelled.
        """
        plan = self._plan(messages, tools, tool_choice, json_output, extra_create_args)
        stop = self._stop_event(cancellation_token)
        generation = await self._generate(plan, stop, None)
        return self._result(plan, generation)

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: ToolChoice = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        """Stream a reply: text pieces as tokens are generated, then the :class:`CreateResult`.

        Text replies stream as generated; with tools, the text of an answer streams and a tool
        call comes only in the result. The pieces join into the result's content (unless a
        ``stop`` string cut the text, which the result then lacks). Arguments and errors are as
        for :meth:`create`.
        """
        plan = self._plan(messages, tools, tool_choice, json_output, extra_create_args)
        stop = self._stop_event(cancellation_token)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        answer = _AnswerStream() if plan.mode == "tools" else None

        # Generation runs at most this many pieces ahead of the consumer, so a cancel from the
        # consumer stops it within a bounded number of tokens, however fast the model is.
        credits = threading.Semaphore(_STREAM_AHEAD)

        def emit(piece: str) -> None:
            text = answer.feed(piece) if answer is not None else piece
            if not text:
                return
            while not credits.acquire(timeout=0.05):
                if stop.is_set():
                    raise _Stopped
            loop.call_soon_threadsafe(queue.put_nowait, text)

        task = asyncio.ensure_future(self._generate(plan, stop, emit))
        task.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (piece := await queue.get()) is not None and not stop.is_set():
                credits.release()
                yield piece
            if stop.is_set():
                raise asyncio.CancelledError()
            result = self._result(plan, task.result())
        finally:
            if not task.done():
                # Cancelled, or the consumer stopped early: stop the generation and let the
                # thread finish before the next call may start.
                stop.set()
                credits.release()
                await asyncio.wait([task])
            if not task.cancelled():
                task.exception()  # retrieved: an error here is moot once the consumer left
        if answer is None or answer.started or isinstance(result.content, list):
            yield result
            return
        if result.content:
            # A structured answer (not a string) is not streamed piece by piece.
            yield result.content
        yield result

    async def close(self) -> None:
        """Close the backend if this client owns it (after any running generation)."""
        if self._close_backend:
            async with self._lock:
                self._backend.close()

    def count_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []
    ) -> int:
        """Prompt tokens ``messages`` (with ``tools`` offered) take in the model's template."""
        return len(self._backend.tokenize(self.format_prompt(messages, tools=tools)))

    def remaining_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []
    ) -> int:
        """Context tokens left for the reply after :meth:`count_tokens`."""
        return self._backend.info.n_ctx - self.count_tokens(messages, tools=tools)

    def format_prompt(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: ToolChoice = "auto",
        json_output: bool | type[BaseModel] | None = None,
    ) -> str:
        """The prompt :meth:`create` would send for these arguments, in the model's template.

        Raises:
            UnsupportedMessage: A message holds an image or is of an unknown type.
        """
        return self._plan(messages, tools, tool_choice, json_output, {}, grammar=False).prompt

    # --- planning -----------------------------------------------------------------------

    def _plan(
        self,
        messages: Sequence[LLMMessage],
        tools: Sequence[Tool | ToolSchema],
        tool_choice: ToolChoice,
        json_output: bool | type[BaseModel] | None,
        extra: Mapping[str, Any],
        *,
        grammar: bool = True,
    ) -> _Plan:
        params = self._params
        if extra:
            params = GenerationParams(**{**params.model_dump(), **dict(extra)})
        schemas = [_schema_of(t) for t in tools]
        if isinstance(tool_choice, str):
            if tool_choice not in ("auto", "required", "none"):
                raise InvalidGenerationParams(
                    f"tool_choice {tool_choice!r} is not 'auto', 'required', 'none' or a Tool"
                )
        else:
            name = tool_choice.schema["name"]
            schemas = [s for s in schemas if s["name"] == name] or [tool_choice.schema]
        if tool_choice == "none":
            schemas = []
        if tool_choice == "required" and not schemas:
            raise InvalidGenerationParams("tool_choice='required' needs at least one tool")
        prompt = self._render(messages, schemas, tool_choice, json_output)
        if not grammar:
            return _Plan(prompt=prompt, params=params, grammar=None, mode="text")
        answer_schema: dict[str, Any] | None
        if isinstance(json_output, type) and issubclass(json_output, BaseModel):
            answer_schema = json_output.model_json_schema()
        elif json_output:
            answer_schema = {"type": "object"}
        else:
            answer_schema = None
        if schemas:
            may_answer = tool_choice == "auto"
            root = _tools_schema(schemas, answer_schema if may_answer else None, may_answer)
            return _Plan(
                prompt=prompt,
                params=params,
                grammar=_grammar(root),
                mode="tools",
                tool_names=frozenset(s["name"] for s in schemas),
            )
        if answer_schema is not None:
            return _Plan(prompt=prompt, params=params, grammar=_grammar(answer_schema), mode="json")
        return _Plan(prompt=prompt, params=params, grammar=None, mode="text")

    def _render(
        self,
        messages: Sequence[LLMMessage],
        schemas: Sequence[ToolSchema],
        tool_choice: ToolChoice,
        json_output: bool | type[BaseModel] | None,
    ) -> str:
        chat = [self._chat_message(m) for m in messages]
        notes = []
        if schemas:
            notes.append(_tool_instructions(schemas, required=tool_choice != "auto"))
        elif isinstance(json_output, type) and issubclass(json_output, BaseModel):
            schema = json.dumps(json_output.model_json_schema(), separators=(",", ":"))
            notes.append(f"Reply with one JSON value that follows this JSON schema: {schema}")
        elif json_output:
            notes.append("Reply with one JSON object and nothing else.")
        if notes:
            note = "\n\n".join(notes)
            if chat and chat[0].role == "system":
                chat[0] = ChatMessage(role="system", content=f"{chat[0].content}\n\n{note}")
            else:
                chat.insert(0, ChatMessage(role="system", content=note))
        return self._backend.format_chat(chat)

    def _chat_message(self, message: LLMMessage) -> ChatMessage:
        if isinstance(message, SystemMessage):
            return ChatMessage(role="system", content=message.content)
        if isinstance(message, UserMessage):
            if isinstance(message.content, str):
                return ChatMessage(role="user", content=message.content)
            if not all(isinstance(part, str) for part in message.content):
                raise UnsupportedMessage(
                    f"a message from {message.source} holds an image, and this local model "
                    "reads text only; send the message as text"
                )
            return ChatMessage(role="user", content="\n".join(map(str, message.content)))
        if isinstance(message, AssistantMessage):
            if isinstance(message.content, str):
                text = message.content
            else:
                text = "\n".join(_call_json(call) for call in message.content)
            if message.thought:
                text = f"{message.thought}\n{text}"
            return ChatMessage(role="assistant", content=text)
        if isinstance(message, FunctionExecutionResultMessage):
            # Phrased as a report, not as a record: small models answered "The tool add
            # returned: 5" with the sum, but echoed the call back for "Result of tool add
            # (call call_1): 5". One call per turn, so the name identifies the result.
            lines = [
                f"The tool {r.name} {'failed' if r.is_error else 'returned'}: {r.content}"
                for r in message.content
            ]
            return ChatMessage(role="tool" if self._tool_role else "user", content="\n".join(lines))
        raise UnsupportedMessage(
            f"cannot render a {type(message).__name__} for a local model; send SystemMessage, "
            "UserMessage, AssistantMessage or FunctionExecutionResultMessage"
        )

    # --- running ------------------------------------------------------------------------

    @staticmethod
    def _stop_event(token: CancellationToken | None) -> threading.Event:
        stop = threading.Event()
        if token is not None:
            token.add_callback(stop.set)
        return stop

    async def _generate(
        self, plan: _Plan, stop: threading.Event, emit: Callable[[str], None] | None
    ) -> Generation:
        async with self._lock:
            work = asyncio.ensure_future(asyncio.to_thread(self._run, plan, stop, emit))
            try:
                generation = await asyncio.shield(work)
            except asyncio.CancelledError:
                stop.set()
                await asyncio.wait([work])
                self._add_usage(*plan.counts)
                raise
            except _Stopped:
                self._add_usage(*plan.counts)
                raise asyncio.CancelledError() from None
        plan.counts[:] = [generation.prompt_tokens, generation.completion_tokens]
        self._add_usage(*plan.counts)
        return generation

    def _run(
        self, plan: _Plan, stop: threading.Event, emit: Callable[[str], None] | None
    ) -> Generation:
        """The blocking part, on a worker thread: fit ``max_tokens`` to the context, generate."""
        n_prompt = len(self._backend.tokenize(plan.prompt))
        plan.counts[0] = n_prompt
        room = self._backend.info.n_ctx - n_prompt
        if room < 1:
            raise ContextOverflow(
                f"the conversation takes {n_prompt} tokens of the model's {n_prompt + room}-token "
                "context, leaving no room for a reply; drop old messages or raise n_ctx"
            )
        params = plan.params
        if params.max_tokens > room:
            params = GenerationParams(**{**params.model_dump(), "max_tokens": room})

        def on_token(_token: int, piece: str) -> None:
            if stop.is_set():
                raise _Stopped
            plan.counts[1] += 1
            if emit is not None:
                emit(piece)

        if stop.is_set():
            raise _Stopped
        return self._backend.complete(plan.prompt, params, on_token=on_token, grammar=plan.grammar)

    def _result(self, plan: _Plan, generation: Generation) -> CreateResult:
        usage = RequestUsage(generation.prompt_tokens, generation.completion_tokens)
        finish: FinishReasons = generation.finish_reason
        if plan.mode != "tools":
            return CreateResult(
                finish_reason=finish, content=generation.text, usage=usage, cached=False
            )
        try:
            reply = loads(generation.text)
        except (ValueError, JsonTooDeep):
            # Cut off by max_tokens: keep what the answer had, or the raw text of a call.
            partial = _AnswerStream()
            text = partial.feed(generation.text)
            content = text if partial.started else generation.text
            return CreateResult(finish_reason=finish, content=content, usage=usage, cached=False)
        if isinstance(reply, dict) and reply.get(_TOOL_KEY) in plan.tool_names:
            call = FunctionCall(
                id=f"call_{uuid.uuid4().hex[:24]}",
                name=str(reply[_TOOL_KEY]),
                arguments=json.dumps(reply.get(_ARGS_KEY, {}), ensure_ascii=False),
            )
            return CreateResult(
                finish_reason="function_calls", content=[call], usage=usage, cached=False
            )
        answer = reply.get(_ANSWER_KEY, "") if isinstance(reply, dict) else reply
        text = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
        return CreateResult(finish_reason=finish, content=text, usage=usage, cached=False)


# --- schemas and grammars -----------------------------------------------------------------


def _schema_of(tool: Tool | ToolSchema) -> ToolSchema:
    if isinstance(tool, dict):
        return tool
    return tool.schema


def _arguments_schema(schema: ToolSchema) -> dict[str, Any]:
    params: dict[str, Any] = dict(schema.get("parameters") or {"type": "object"})
    params.setdefault("properties", {})
    # An open object lets the model add keys without end; a tool takes only what it declares.
    params.setdefault("additionalProperties", False)
    return params


def _tools_schema(
    schemas: Sequence[ToolSchema], answer: dict[str, Any] | None, may_answer: bool
) -> dict[str, Any]:
    """A JSON schema for one tool call or, when ``may_answer``, a final answer."""
    defs: dict[str, Any] = {}

    def hoist(schema: dict[str, Any]) -> dict[str, Any]:
        # $refs point at the document root, so each schema's $defs move there.
        schema = dict(schema)
        for name, value in schema.pop("$defs", {}).items():
            if defs.setdefault(name, value) != value:
                raise InvalidGenerationParams(
                    f"two schemas define {name!r} differently; rename one of the models"
                )
        return schema

    options: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {
                _TOOL_KEY: {"const": s["name"]},
                _ARGS_KEY: hoist(_arguments_schema(s)),
            },
            "required": [_TOOL_KEY, _ARGS_KEY],
            "additionalProperties": False,
        }
        for s in schemas
    ]
    if may_answer:
        options.append(
            {
                "type": "object",
                "properties": {_ANSWER_KEY: hoist(answer or {"type": "string"})},
                "required": [_ANSWER_KEY],
                "additionalProperties": False,
            }
        )
    root: dict[str, Any] = options[0] if len(options) == 1 else {"anyOf": options}
    if defs:
        root = {**root, "$defs": defs}
    return root


def _grammar(schema: dict[str, Any]) -> str:
    """GBNF for ``schema``, strings restricted to strict JSON."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        gbnf = str(
            json_schema_to_gbnf(json.dumps(schema), prop_order=[_TOOL_KEY, _ARGS_KEY, _ANSWER_KEY])
        )
    except (AssertionError, KeyError, ValueError, TypeError, RecursionError) as err:
        raise InvalidGenerationParams(
            f"cannot turn the JSON schema into a grammar ({type(err).__name__}: {err}); "
            "simplify the tool's or the output type's schema"
        ) from err
    return gbnf.replace(_CHAR_RULE, _STRICT_CHAR_RULE)


def _call_json(call: FunctionCall) -> str:
    """A past tool call written the way the grammar makes the model write one."""
    try:
        arguments = loads(call.arguments)
    except (ValueError, JsonTooDeep):
        arguments = call.arguments
    return json.dumps({_TOOL_KEY: call.name, _ARGS_KEY: arguments}, ensure_ascii=False)


def _tool_instructions(schemas: Sequence[ToolSchema], *, required: bool) -> str:
    lines = ["Tools you can call:"]
    for s in schemas:
        args = json.dumps(_arguments_schema(s), separators=(",", ":"), ensure_ascii=False)
        description = s.get("description", "").strip() or "(no description)"
        lines.append(f"- {s['name']}: {description} Arguments: {args}")
    call = '{"tool": "<tool name>", "arguments": {<arguments>}}'
    if required:
        lines.append(f"Reply with one JSON object and nothing else: {call} to call a tool.")
    else:
        lines.append(
            f"Reply with one JSON object and nothing else: {call} to call a tool, or "
            '{"answer": "<your reply>"} to reply to the user.'
        )
    return "\n".join(lines)
