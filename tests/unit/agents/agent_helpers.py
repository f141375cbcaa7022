"""Helpers to run the agents and read what they did."""

from __future__ import annotations

import asyncio
from typing import Any


def run(awaitable: Any) -> Any:
    return asyncio.run(awaitable)


def final_text(result: Any) -> str:
    """The team's last message: the Copilot's answer."""
    last = result.messages[-1]
    assert last.source == "copilot", [type(m).__name__ for m in result.messages]
    return str(last.content)


def tool_results(result: Any, tool: str) -> list[Any]:
    """Every FunctionExecutionResult of ``tool`` in a run, in order."""
    from autogen_agentchat.messages import ToolCallExecutionEvent

    return [
        r
        for m in result.messages
        if isinstance(m, ToolCallExecutionEvent)
        for r in m.content
        if r.name == tool
    ]


def structured(result: Any, kind: type) -> list[Any]:
    """The contents of every StructuredMessage of ``kind`` in a run."""
    from autogen_agentchat.messages import StructuredMessage

    return [
        m.content
        for m in result.messages
        if isinstance(m, StructuredMessage) and isinstance(m.content, kind)
    ]
