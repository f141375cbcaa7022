"""MCP entry points that import the ``mcp`` SDK only when called (the ``[mcp]`` extra)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chefsplan_agents.network import Network

if TYPE_CHECKING:
    from mcp.server.lowlevel import Server

__all__ = ["mcp_server", "serve_mcp_stdio"]

_MISSING = (
    "the MCP server needs the mcp package: pip install 'chefsplan-agents[mcp]' (or 'mcp>=1.20,<2')"
)


def _load() -> Any:
    try:
        from chefsplan_agents.tools import _mcp_server
    except ImportError as err:
        raise ImportError(_MISSING) from err
    return _mcp_server


def mcp_server(
    network: Network, names: list[str] | tuple[str, ...] | None = None, *, name: str = "chefsplan"
) -> Server[Any, Any]:
    """An MCP server (``mcp.server.lowlevel.Server``) exposing the tools on ``network``.

    Input schemas come from the tools' argument models; a result is ``receipt.text()`` with
    the receipt as structured content; a failure is an ``isError`` result with one line;
    tools that wait for tasks send progress notifications when the client asks for them.

    Args:
        network: The network the tools act on.
        names: Only these tools (default: all).
        name: The server's name in the MCP handshake.

    Raises:
        ImportError: The ``mcp`` package is missing (install the ``[mcp]`` extra).
        ToolError: An unknown tool name.
    """
    server: Server[Any, Any] = _load().build_server(network, names, name=name)
    return server


async def serve_mcp_stdio(
    network: Network, names: list[str] | tuple[str, ...] | None = None, *, name: str = "chefsplan"
) -> None:
    """Serve the tools over stdio until the client disconnects (what ``chefsplan mcp`` runs).

    Raises:
        ImportError: The ``mcp`` package is missing (install the ``[mcp]`` extra).
    """
    await _load().serve_stdio(network, names, name=name)
