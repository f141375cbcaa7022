"""``NetworkModelClient``: an AutoGen chat completion client whose completions are delegated,
verified tasks on the network.

Each ``create`` is one :func:`~chefsplan_agents.tools.delegate_task` call at the client's trust
level: the conversation becomes a chat TaskBundle, a provider node (or three) runs it, the task
settles on chain and the requester verifies the result before the text comes back. The
:class:`~chefsplan_agents.tools.TaskReceipt` rides on the result (:class:`NetworkCreateResult`)
and is kept on the client (:attr:`NetworkModelClient.last_receipt`, :attr:`receipts`).

A task runs a plain chat completion on a node: there is no grammar in a TaskBundle, so a node
cannot be made to pick among tools or to write JSON that follows a schema. Tools and JSON output
are refused with :class:`~chefsplan_agents.errors.UnsupportedRequest` rather than half-served.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal

from autogen_core import CancellationToken
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

from chefsplan_agents.agents._client_base import _ClientBase
from chefsplan_agents.bundles import ChatMessage
from chefsplan_agents.errors import (
    InvalidGenerationParams,
    UnsupportedMessage,
    UnsupportedRequest,
    VerificationError,
)
from chefsplan_agents.network import Network, ProgressListener, progress_listener
from chefsplan_agents.tools import TaskReceipt, Trust, delegate_task

__all__ = ["DEFAULT_NETWORK_MAX_TOKENS", "NetworkCreateResult", "NetworkModelClient"]

#: Completion tokens per delegated task unless the client or ``extra_create_args`` say else.
DEFAULT_NETWORK_MAX_TOKENS = 256

#: ``extra_create_args`` a call may override: the delegation's own knobs.
_CALL_ARGS = frozenset({"max_tokens", "trust", "model", "providers", "max_price_per_1k_wei"})

# No tokenizer runs here (the model is remote): token counts before a call are estimates.
_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 4


class NetworkCreateResult(CreateResult):
    """A :class:`~autogen_core.models.CreateResult` with the receipt of the task behind it.

    Attributes:
        receipt: The settled, verified task that produced ``content``.
    """

    receipt: TaskReceipt


def refused_tools_message(framework: str) -> str:
    """The one-line refusal for tools offered to a network model."""
    return (
        f"a {framework} model on the network cannot call tools: a delegated task runs a plain "
        "chat completion and a node cannot be made to choose among tools; give this model no "
        "tools, or run the tools (autogen_tools/langchain_tools) with a local or app model"
    )


def refused_json_message(framework: str) -> str:
    """The one-line refusal for constrained JSON output asked of a network model."""
    return (
        f"a {framework} model on the network cannot guarantee JSON output: a delegated task "
        "carries no grammar; ask for JSON in the prompt and validate it with check_policy"
    )


def delegation_args(
    defaults: Mapping[str, Any], overrides: Mapping[str, Any], framework: str
) -> dict[str, Any]:
    """``delegate_task`` keyword arguments: the client's defaults, then a call's overrides.

    Raises:
        InvalidGenerationParams: An override the network cannot honour.
    """
    unknown = sorted(set(overrides) - _CALL_ARGS)
    if unknown:
        raise InvalidGenerationParams(
            f"{framework} network model: unknown argument {unknown[0]!r}; a delegated task "
            f"takes {', '.join(sorted(_CALL_ARGS))} (sampling is the determinism profile)"
        )
    return {**defaults, **overrides}


def checked(receipt: TaskReceipt) -> TaskReceipt:
    """``receipt`` if nothing says not to rely on its output.

    Raises:
        VerificationError: The local verifier's re-score of the result failed.
    """
    if receipt.verification is not None and not receipt.verification.passed:
        raise VerificationError(
            f"task {receipt.task_id}'s result {receipt.result_cid} failed the re-score "
            f"({receipt.verification.reason}); do not rely on it: retry at trust='high' or ask "
            "second_opinion"
        )
    return receipt


def finish_reason(receipt: TaskReceipt, max_tokens: int) -> Literal["stop", "length"]:
    """``length`` when the node generated all the tokens the task allowed."""
    return "length" if receipt.completion_tokens >= max_tokens else "stop"


class NetworkModelClient(_ClientBase):
    """An AutoGen ``ChatCompletionClient`` whose completions run as verified tasks on the network.

    Example::

        with Devnet.create(nodes=3, model="tiny") as devnet:
            client = NetworkModelClient(devnet.network, trust="low", max_tokens=64)
            agent = AssistantAgent("cook", model_client=client)
            result = await agent.run(task="Plan dinner")
            print(client.last_receipt.result_cid)

    Every :meth:`create` is one :func:`~chefsplan_agents.tools.delegate_task` with the
    conversation as chat messages. The result is a :class:`NetworkCreateResult` (its
    ``receipt`` holds task id, result CID, transactions, gas and verification); the client
    also keeps :attr:`last_receipt` and every receipt in :attr:`receipts`, since an agent
    keeps only the text. Usage counts the winning node's prompt tokens and the accepted
    output's tokens.

    Not served (each raises :class:`~chefsplan_agents.errors.UnsupportedRequest`): tools
    (unless ``tool_choice="none"``) and ``json_output``. ``model_info`` says so, so
    ``AssistantAgent(tools=...)`` refuses this client up front.

    Args:
        network: The network to delegate on.
        trust: ``low``, ``normal`` or ``high`` (see ``delegate_task``).
        max_tokens: Most new tokens per completion.
        model: Model name or GGUF sha256 (default: the best-ranked provider's).
        providers: Provider addresses to choose from.
        max_price_per_1k_wei: Highest price per 1,000 tokens.
        on_progress: Called with ``(handle, progress)`` as each task moves (claimed,
            committed, revealed, finalized), on the worker thread that waits.
        context_tokens: The context size :meth:`remaining_tokens` counts against.
        model_info: What to report to AutoGen (text only, no tools or JSON, by default).

    Raises:
        ValueError: ``model_info`` lacks a required field.
    """

    def __init__(
        self,
        network: Network,
        *,
        trust: Trust = "normal",
        max_tokens: int = DEFAULT_NETWORK_MAX_TOKENS,
        model: str | None = None,
        providers: Sequence[str] | None = None,
        max_price_per_1k_wei: int | None = None,
        on_progress: ProgressListener | None = None,
        context_tokens: int = 2048,
        model_info: ModelInfo | None = None,
    ) -> None:
        self.network = network
        self._defaults: dict[str, Any] = {
            "trust": trust,
            "max_tokens": max_tokens,
            "model": model,
            "providers": list(providers) if providers is not None else None,
            "max_price_per_1k_wei": max_price_per_1k_wei,
        }
        self._on_progress = on_progress
        self._context_tokens = context_tokens
        super().__init__(
            model_info
            or {
                "vision": False,
                "function_calling": False,
                "json_output": False,
                "family": ModelFamily.UNKNOWN,
                "structured_output": False,
            }
        )
        self._receipts: list[TaskReceipt] = []
        self._lock = threading.Lock()

    # --- receipts -----------------------------------------------------------------------

    @property
    def last_receipt(self) -> TaskReceipt | None:
        """The receipt of the latest settled completion (also of one that failed its
        re-score), or ``None`` before the first."""
        with self._lock:
            return self._receipts[-1] if self._receipts else None

    @property
    def receipts(self) -> tuple[TaskReceipt, ...]:
        """Every settled completion's receipt, oldest first."""
        with self._lock:
            return tuple(self._receipts)

    # --- ChatCompletionClient -----------------------------------------------------------

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> NetworkCreateResult:
        """Delegate one completion and return it with its receipt.

        Cancelling stops the wait; a task already posted still settles (its escrow is spent).

        Returns:
            The accepted output as text (``finish_reason`` ``stop``, or ``length`` when the
            node used every allowed token), with usage and the receipt.

        Raises:
            UnsupportedRequest: Tools offered (``tool_choice`` other than ``none``) or
                ``json_output`` asked for.
            UnsupportedMessage: A message holds an image or is of an unknown type.
            InvalidGenerationParams: An ``extra_create_args`` key the network cannot honour.
            VerificationError: The verifier's re-score failed (the receipt is still kept).
            ToolError, PolicyViolation, InsufficientFunds, MarketError: As ``delegate_task``.
            asyncio.CancelledError: ``cancellation_token`` was cancelled.
        """
        if tools and tool_choice != "none":
            raise UnsupportedRequest(refused_tools_message("AutoGen"))
        if json_output:
            raise UnsupportedRequest(refused_json_message("AutoGen"))
        chat = [chat_message(m) for m in messages]
        kwargs = delegation_args(self._defaults, extra_create_args, "AutoGen")
        work = asyncio.ensure_future(self._delegate(chat, kwargs))
        if cancellation_token is not None:
            cancellation_token.link_future(work)
        receipt = await work
        usage = RequestUsage(receipt.prompt_tokens, receipt.completion_tokens)
        self._add_usage(usage.prompt_tokens, usage.completion_tokens)
        checked(receipt)
        reason: FinishReasons = finish_reason(receipt, int(kwargs["max_tokens"]))
        return NetworkCreateResult(
            finish_reason=reason, content=receipt.output, usage=usage, cached=False, receipt=receipt
        )

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        """The whole reply as one piece once the task has settled, then the result.

        A delegated task is not token-streamed: the node commits and reveals a finished output,
        and the text is only known (and verified) at settlement. Watch a task's progress with
        ``on_progress``. Arguments and errors are as for :meth:`create`.
        """
        result = await self.create(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            json_output=json_output,
            extra_create_args=extra_create_args,
            cancellation_token=cancellation_token,
        )
        if result.content:
            yield str(result.content)
        yield result

    async def close(self) -> None:
        """Nothing to close: the network belongs to the caller."""

    def count_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []
    ) -> int:
        """An estimate of the prompt tokens (about four characters a token): the tokenizer
        runs on the remote node, so the exact count is known only from the receipt."""
        chat = [chat_message(m) for m in messages]
        chars = sum(len(m.content) for m in chat)
        return -(-chars // _CHARS_PER_TOKEN) + _TOKENS_PER_MESSAGE * len(chat)

    def remaining_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []
    ) -> int:
        """``context_tokens`` less the estimate of :meth:`count_tokens`."""
        return self._context_tokens - self.count_tokens(messages, tools=tools)

    # --- running ------------------------------------------------------------------------

    async def _delegate(self, chat: list[ChatMessage], kwargs: dict[str, Any]) -> TaskReceipt:
        receipt = await asyncio.to_thread(self._delegate_blocking, chat, kwargs)
        with self._lock:
            self._receipts.append(receipt)
        return receipt

    def _delegate_blocking(self, chat: list[ChatMessage], kwargs: dict[str, Any]) -> TaskReceipt:
        if self._on_progress is None:
            return delegate_task(self.network, messages=chat, **kwargs)
        with progress_listener(self._on_progress):
            return delegate_task(self.network, messages=chat, **kwargs)


def chat_message(message: LLMMessage) -> ChatMessage:
    """An AutoGen message as a TaskBundle chat turn.

    Raises:
        UnsupportedMessage: An image, or an unknown message type.
    """
    if isinstance(message, SystemMessage):
        return ChatMessage(role="system", content=message.content)
    if isinstance(message, UserMessage):
        if isinstance(message.content, str):
            return ChatMessage(role="user", content=message.content)
        if not all(isinstance(part, str) for part in message.content):
            raise UnsupportedMessage(
                f"a message from {message.source} holds an image, and a network task carries "
                "text only; send the message as text"
            )
        return ChatMessage(role="user", content="\n".join(map(str, message.content)))
    if isinstance(message, AssistantMessage):
        if isinstance(message.content, str):
            text = message.content
        else:
            text = "\n".join(
                json.dumps({"tool": c.name, "arguments": c.arguments}, ensure_ascii=False)
                for c in message.content
            )
        return ChatMessage(role="assistant", content=text)
    if isinstance(message, FunctionExecutionResultMessage):
        lines = [
            f"The tool {r.name} {'failed' if r.is_error else 'returned'}: {r.content}"
            for r in message.content
        ]
        return ChatMessage(role="user", content="\n".join(lines))
    raise UnsupportedMessage(
        f"cannot send a {type(message).__name__} as a network task; send SystemMessage, "
        "UserMessage, AssistantMessage or FunctionExecutionResultMessage"
    )
