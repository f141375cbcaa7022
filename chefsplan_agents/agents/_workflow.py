"""The base of the agents whose workflow is data: steps run as visible tool calls.

Each step a :class:`WorkflowAgent` takes is shown as a ``ToolCallRequestEvent`` (the step's
tool and arguments) and a ``ToolCallExecutionEvent`` (the result's one-line text, flagged
as an error when the call failed), so a UI renders it as it renders a model's tool calls.
Every step runs on the tools' safe path: an error is a :class:`~chefsplan_agents.tools.ToolFailure`,
never an exception out of the agent.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any

from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import (
    BaseAgentEvent,
    BaseChatMessage,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
)
from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import FunctionExecutionResult
from pydantic import ValidationError

from chefsplan_agents.errors import ChefsplanError
from chefsplan_agents.network import Network
from chefsplan_agents.tools import ToolFailure, ToolResult

__all__ = ["WorkflowAgent", "one_line"]

log = logging.getLogger(__name__)

_MAX_LINE = 500
_ids = itertools.count(1)


def one_line(text: str, limit: int = _MAX_LINE) -> str:
    """``text`` on one line, cut at ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def failure(tool: str, err: BaseException) -> ToolFailure:
    """An exception as the one-line failure a step reports."""
    if isinstance(err, ValidationError):
        problem = err.errors()[0]
        where = ".".join(str(p) for p in problem["loc"]) or "arguments"
        return ToolFailure(
            tool=tool, error="InvalidArguments", message=f"argument {where!r}: {problem['msg']}"
        )
    if isinstance(err, ChefsplanError):
        return ToolFailure(tool=tool, error=type(err).__name__, message=one_line(str(err)))
    return ToolFailure(
        tool=tool,
        error="InternalError",
        message=one_line(f"{type(err).__name__}: {err}") + " (a bug; see the app's log)",
    )


StreamItem = BaseAgentEvent | BaseChatMessage | Response


class WorkflowAgent(BaseChatAgent):
    """An agent that follows steps given as data and shows each as a tool call.

    Args:
        name: The agent's name in a team.
        description: What it does (a selector reads it).
        network: The network its tools act on.
    """

    def __init__(self, name: str, description: str, network: Network) -> None:
        super().__init__(name, description)
        self.network = network

    async def on_messages(
        self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken
    ) -> Response:
        result: Response | None = None
        inner: list[BaseAgentEvent | BaseChatMessage] = []
        async for item in self.on_messages_stream(messages, cancellation_token):
            if isinstance(item, Response):
                result = item
            else:
                inner.append(item)
        assert result is not None  # every stream ends with a Response
        return Response(chat_message=result.chat_message, inner_messages=inner)

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        return None

    def on_messages_stream(
        self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken
    ) -> AsyncGenerator[StreamItem, None]:
        return self._stream(messages, cancellation_token)

    async def _stream(
        self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken
    ) -> AsyncGenerator[StreamItem, None]:
        raise NotImplementedError
        yield  # pragma: no cover

    # ------------------------------------------------------------------ steps as tool calls

    def call_event(self, tool: str, arguments: dict[str, Any]) -> ToolCallRequestEvent:
        """The event announcing a step (its id pairs it with :meth:`result_event`)."""
        call = FunctionCall(
            id=f"{self.name}-{next(_ids)}",
            name=tool,
            arguments=json.dumps(arguments, default=str, ensure_ascii=False),
        )
        return ToolCallRequestEvent(content=[call], source=self.name)

    def result_event(
        self, request: ToolCallRequestEvent, result: ToolResult | str
    ) -> BaseAgentEvent:
        """The event reporting a step's result."""
        call = request.content[0]
        text = result if isinstance(result, str) else result.text()
        error = isinstance(result, ToolResult) and not result.ok
        return ToolCallExecutionEvent(
            content=[
                FunctionExecutionResult(
                    content=text, name=call.name, call_id=call.id, is_error=error
                )
            ],
            source=self.name,
        )

    async def run_step(self, tool: str, func: Callable[[], ToolResult]) -> ToolResult:
        """Run ``func`` in a worker thread; every error comes back as a :class:`ToolFailure`."""
        return await asyncio.to_thread(self.call_safely, tool, func)

    def call_safely(self, tool: str, func: Callable[[], ToolResult]) -> ToolResult:
        """Run ``func`` here; every error comes back as a :class:`ToolFailure`."""
        try:
            return func()
        except (ChefsplanError, ValidationError) as err:
            log.info("%s: step %s refused: %s", self.name, tool, err)
            return failure(tool, err)
        except Exception as err:  # an agent must never raise into the team
            log.exception("%s: step %s failed unexpectedly", self.name, tool)
            return failure(tool, err)
