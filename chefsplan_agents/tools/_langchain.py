"""LangChain adapter: the tools as ``langchain_core`` ``StructuredTool``\\ s. No logic here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from langchain_core.tools import StructuredTool, ToolException

from chefsplan_agents.network import Network
from chefsplan_agents.tools._receipts import ToolResult
from chefsplan_agents.tools._spec import ToolSpec, tool_specs

__all__ = ["langchain_tools"]


def _content_and_artifact(result: ToolResult) -> tuple[str, ToolResult]:
    if not result.ok:
        raise ToolException(result.text())
    return result.text(), result


def _structured(spec: ToolSpec, network: Network) -> StructuredTool:
    def run(**arguments: Any) -> tuple[str, ToolResult]:
        return _content_and_artifact(spec.call(network, arguments))

    async def arun(**arguments: Any) -> tuple[str, ToolResult]:
        return _content_and_artifact(await spec.acall(network, arguments))

    invalid: Callable[[Any], str] = lambda err: spec.failure(err).text()  # noqa: E731
    coroutine: Callable[..., Awaitable[tuple[str, ToolResult]]] = arun
    return StructuredTool.from_function(
        func=run,
        coroutine=coroutine,
        name=spec.name,
        description=spec.description,
        args_schema=spec.args_model,
        infer_schema=False,
        response_format="content_and_artifact",
        handle_tool_error=True,
        handle_validation_error=invalid,
    )


def langchain_tools(
    network: Network, names: list[str] | tuple[str, ...] | None = None
) -> list[StructuredTool]:
    """The tools for a LangChain model or agent (``model.bind_tools(langchain_tools(net))``).

    Args:
        network: The network the tools act on.
        names: Only these tools (default: all, see ``TOOL_NAMES``).

    Returns:
        One ``StructuredTool`` per tool (sync and async). The model reads ``receipt.text()``;
        the receipt itself is the ``ToolMessage.artifact``. Errors come back as the
        ``ToolMessage`` content with ``status="error"``.
    """
    return [_structured(spec, network) for spec in tool_specs(names)]
