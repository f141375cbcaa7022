"""MCP adapter: the tools served by an MCP server (the ``mcp`` SDK's low-level ``Server``).

No tool logic here: each call runs :class:`~chefsplan_agents.tools.ToolSpec`'s safe path. The
input schema of a tool is its args model's JSON schema; a result is the receipt's text plus the
receipt as structured content; a failure is an ``isError`` result with the one-line message.
While a task is waited for, its progress (posted, claimed, committed, revealed, finalized) goes
to the client as progress notifications when the request carries a progress token.

Imported only through :func:`chefsplan_agents.tools.mcp_server`, which names the extra when the
``mcp`` package is missing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import mcp.types as types
from mcp.server.lowlevel import Server

from chefsplan_agents.market import DelegationProgress, TaskHandle
from chefsplan_agents.network import Network, progress_listener
from chefsplan_agents.tools._receipts import ToolResult
from chefsplan_agents.tools._spec import ToolSpec, tool_specs

__all__ = ["LONG_RUNNING_TOOLS", "build_server", "serve_stdio"]

log = logging.getLogger(__name__)

#: Tools that wait for tasks on the network, and so report progress.
LONG_RUNNING_TOOLS = frozenset(
    {"delegate_task", "split_and_delegate", "get_result", "second_opinion"}
)

_STAGES = {
    "posted": "posted; waiting for a provider to claim it",
    "claimed": "claimed; the model is running",
    "committed": "result committed; waiting for the reveal",
    "revealed": "result revealed; settling",
    "finalized": "settled; fetching and verifying the result",
}


def _describe(handle: TaskHandle, now: DelegationProgress) -> str:
    return (
        f"task 0x{handle.task_id.hex()[:12]}… {_STAGES.get(now.stage, now.stage)} "
        f"({now.claimed}/{now.replicas} claimed, {now.committed} committed, "
        f"{now.revealed} revealed)"
    )


def _call_result(result: ToolResult) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=result.text())],
        structuredContent=result.model_dump(mode="json"),
        isError=not result.ok,
    )


def _tool(spec: ToolSpec) -> types.Tool:
    return types.Tool(
        name=spec.name,
        description=spec.description,
        inputSchema=spec.args_model.model_json_schema(),
    )


class _Progress:
    """Progress notifications for one call, sent in order from the event loop."""

    def __init__(self, server: Server[Any, Any], token: str | int | None) -> None:
        self._session = server.request_context.session if token is not None else None
        self._token = token
        self._count = 0
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()

    def listen(self, handle: TaskHandle, now: DelegationProgress) -> None:
        """A :data:`~chefsplan_agents.network.ProgressListener` (runs on the worker thread)."""
        self._loop.call_soon_threadsafe(self._queue.put_nowait, _describe(handle, now))

    async def send(self, message: str) -> None:
        if self._session is None or self._token is None:
            return
        self._count += 1
        try:
            await self._session.send_progress_notification(
                self._token, float(self._count), None, message
            )
        except Exception:  # a client gone away must not fail the call
            log.debug("progress notification not delivered", exc_info=True)

    async def forward(self) -> None:
        """Send queued progress until :meth:`finish` (the sentinel)."""
        while (message := await self._queue.get()) is not None:
            await self.send(message)

    def finish(self) -> None:
        self._queue.put_nowait(None)


def build_server(
    network: Network, names: list[str] | tuple[str, ...] | None = None, *, name: str = "chefsplan"
) -> Server[Any, Any]:
    """An MCP server exposing the tools on ``network`` (not yet running).

    Args:
        network: The network the tools act on.
        names: Only these tools (default: all).
        name: The server's name in the MCP handshake.

    Returns:
        The low-level ``mcp.server.lowlevel.Server``; run it on any transport.

    Raises:
        ToolError: An unknown tool name.
    """
    specs = {spec.name: spec for spec in tool_specs(names)}
    server: Server[Any, Any] = Server(
        name, instructions="Tools for a decentralized network of local LLM nodes."
    )

    @server.list_tools()  # type: ignore[no-untyped-call, untyped-decorator, misc, unused-ignore]
    async def list_tools() -> list[types.Tool]:
        return [_tool(spec) for spec in specs.values()]

    # The safe path validates arguments itself and answers with one line per bad argument.
    @server.call_tool(validate_input=False)  # type: ignore[untyped-decorator, misc, unused-ignore]
    async def call_tool(tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
        spec = specs.get(tool)
        if spec is None:
            return types.CallToolResult(
                content=[
                    types.TextContent(
                        type="text",
                        text=f"unknown tool {tool!r}; the tools are {', '.join(specs)}",
                    )
                ],
                isError=True,
            )
        if tool not in LONG_RUNNING_TOOLS:
            return _call_result(await spec.acall(network, arguments))
        meta = server.request_context.meta
        progress = _Progress(server, meta.progressToken if meta is not None else None)
        await progress.send(f"{tool} started")
        forwarding = asyncio.ensure_future(progress.forward())
        try:
            with progress_listener(progress.listen):
                result = await spec.acall(network, arguments)
        finally:
            progress.finish()
            await forwarding
        await progress.send(f"{tool} {'done' if result.ok else 'failed'}")
        return _call_result(result)

    return server


async def serve_stdio(
    network: Network, names: list[str] | tuple[str, ...] | None = None, *, name: str = "chefsplan"
) -> None:
    """Serve the tools over stdio until the client closes the connection.

    Nothing else may write to stdout meanwhile: it carries the protocol.
    """
    from mcp.server.stdio import stdio_server

    server = build_server(network, names, name=name)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())
