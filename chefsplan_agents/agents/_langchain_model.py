"""``NetworkChatModel``: a LangChain chat model whose replies are delegated, verified tasks.

The LangChain twin of :class:`~chefsplan_agents.agents.NetworkModelClient`: each call is one
:func:`~chefsplan_agents.tools.delegate_task`, and the receipt comes back with the message
(``response_metadata["receipt"]`` as JSON, ``generation_info["receipt"]`` as the object).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from pydantic import ConfigDict, Field

from chefsplan_agents.agents._network_client import (
    DEFAULT_NETWORK_MAX_TOKENS,
    checked,
    delegation_args,
    finish_reason,
    refused_tools_message,
)
from chefsplan_agents.bundles import ChatMessage
from chefsplan_agents.errors import UnsupportedMessage, UnsupportedRequest
from chefsplan_agents.network import Network, ProgressListener, progress_listener
from chefsplan_agents.tools import TaskReceipt, Trust, delegate_task

__all__ = ["NetworkChatModel"]


class NetworkChatModel(BaseChatModel):
    """A LangChain chat model whose replies run as verified tasks on the network.

    Example::

        model = NetworkChatModel(network=devnet.network, trust="low", max_tokens=64)
        reply = model.invoke("Plan dinner")
        print(reply.content, reply.response_metadata["receipt"]["result_cid"])

    Each call delegates the conversation with :func:`~chefsplan_agents.tools.delegate_task`.
    The reply's ``response_metadata`` holds ``receipt`` (the
    :class:`~chefsplan_agents.tools.TaskReceipt` as JSON), ``model_name`` (the model's
    sha256) and ``finish_reason``; ``usage_metadata`` counts the node's prompt tokens and the
    output's tokens; the generation's ``generation_info["receipt"]`` is the receipt object.
    ``invoke(..., max_tokens=, trust=, model=, providers=, max_price_per_1k_wei=)``
    overrides the defaults for one call.

    Not served (each raises :class:`~chefsplan_agents.errors.UnsupportedRequest`):
    ``bind_tools`` and ``stop`` sequences — a delegated task runs a plain chat completion.
    Replies are not token-streamed: ``stream`` yields the whole settled reply at once.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    network: Network = Field(exclude=True)
    trust: Trust = "normal"
    max_tokens: int = DEFAULT_NETWORK_MAX_TOKENS
    model: str | None = None
    providers: list[str] | None = None
    max_price_per_1k_wei: int | None = None
    on_progress: ProgressListener | None = Field(default=None, exclude=True)

    @property
    def _llm_type(self) -> str:
        return "chefsplan-network"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"trust": self.trust, "max_tokens": self.max_tokens, "model": self.model}

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Refused: a node on the network cannot be made to choose among tools.

        Raises:
            UnsupportedRequest: Always.
        """
        raise UnsupportedRequest(refused_tools_message("LangChain"))

    # --- generation ---------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        chat, call = self._prepare(messages, stop, kwargs)
        return self._result(self._delegate(chat, call), int(call["max_tokens"]))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        chat, call = self._prepare(messages, stop, kwargs)
        receipt = await asyncio.to_thread(self._delegate, chat, call)
        return self._result(receipt, int(call["max_tokens"]))

    def _prepare(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[list[ChatMessage], dict[str, Any]]:
        if stop:
            raise UnsupportedRequest(
                "a LangChain model on the network cannot apply stop sequences: the node's "
                "output is settled and hashed as generated; cut the text after it arrives"
            )
        defaults = {
            "trust": self.trust,
            "max_tokens": self.max_tokens,
            "model": self.model,
            "providers": self.providers,
            "max_price_per_1k_wei": self.max_price_per_1k_wei,
        }
        return [_chat_message(m) for m in messages], delegation_args(defaults, kwargs, "LangChain")

    def _delegate(self, chat: list[ChatMessage], call: dict[str, Any]) -> TaskReceipt:
        if self.on_progress is None:
            return delegate_task(self.network, messages=chat, **call)
        with progress_listener(self.on_progress):
            return delegate_task(self.network, messages=chat, **call)

    def _result(self, receipt: TaskReceipt, max_tokens: int) -> ChatResult:
        checked(receipt)
        reason = finish_reason(receipt, max_tokens)
        usage = {
            "input_tokens": receipt.prompt_tokens,
            "output_tokens": receipt.completion_tokens,
            "total_tokens": receipt.prompt_tokens + receipt.completion_tokens,
        }
        message = AIMessage(
            content=receipt.output,
            response_metadata={
                "model_name": receipt.model_sha256,
                "finish_reason": reason,
                "receipt": receipt.model_dump(mode="json"),
            },
            usage_metadata=usage,
        )
        generation = ChatGeneration(
            message=message, generation_info={"finish_reason": reason, "receipt": receipt}
        )
        return ChatResult(generations=[generation], llm_output={"receipt": receipt})


def _text(message: BaseMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    parts: list[str] = []
    for part in message.content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and part.get("type") == "text":
            parts.append(str(part.get("text", "")))
        else:
            raise UnsupportedMessage(
                "a message holds an image or other non-text part, and a network task carries "
                "text only; send the message as text"
            )
    return "\n".join(parts)


def _chat_message(message: BaseMessage) -> ChatMessage:
    if isinstance(message, SystemMessage):
        return ChatMessage(role="system", content=_text(message))
    if isinstance(message, HumanMessage):
        return ChatMessage(role="user", content=_text(message))
    if isinstance(message, AIMessage):
        return ChatMessage(role="assistant", content=_text(message))
    if isinstance(message, ToolMessage):
        verb = "failed" if message.status == "error" else "returned"
        return ChatMessage(role="user", content=f"The tool {message.name} {verb}: {_text(message)}")
    raise UnsupportedMessage(
        f"cannot send a {type(message).__name__} as a network task; send system, human, AI "
        "or tool messages"
    )
