"""``chefsplan mcp``: serve the tools to an MCP client over stdio."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Annotated

import typer

from chefsplan_agents.cli._app import app, err
from chefsplan_agents.config import load_settings
from chefsplan_agents.devnet import DEVNET_MODELS, Devnet
from chefsplan_agents.errors import ConfigError
from chefsplan_agents.network import Network, connect
from chefsplan_agents.tools import TOOL_NAMES, serve_mcp_stdio


@contextlib.contextmanager
def _protocol_stdout() -> Iterator[None]:
    """Keep stdout for the protocol alone: anything else written to file descriptor 1 (a
    library's print, llama.cpp's C-level logging) goes to stderr instead."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    saved = sys.stdout
    os.dup2(2, 1)
    sys.stdout = os.fdopen(os.dup(protocol_fd), "w", encoding="utf-8")
    try:
        yield
    finally:
        sys.stdout.close()
        sys.stdout = saved
        os.dup2(protocol_fd, 1)
        os.close(protocol_fd)


def _check_flags(devnet: int, model: str, names: list[str] | None) -> None:
    if not 0 <= devnet <= 16:
        raise ConfigError(f"--devnet must be 0 (no devnet) to 16 nodes (got {devnet})")
    if devnet and model not in DEVNET_MODELS and not model.endswith(".gguf"):
        known = ", ".join(sorted(DEVNET_MODELS))
        raise ConfigError(f"unknown --model {model!r}; use one of: {known}, or a .gguf path")
    unknown = [n for n in names or () if n not in TOOL_NAMES]
    if unknown:
        raise ConfigError(
            f"unknown tool {unknown[0]!r} in --tools; the tools are {', '.join(TOOL_NAMES)}"
        )


@contextlib.contextmanager
def _open_network(devnet: int, model: str, n_threads: int) -> Iterator[Network]:
    if devnet == 0:
        with connect(load_settings()) as net:
            yield net
        return
    with Devnet.create(nodes=devnet, model=model, share_model=True, n_threads=n_threads) as net:
        yield net.network


@app.command("mcp")
def mcp(
    devnet: Annotated[
        int,
        typer.Option(
            "--devnet",
            help="Start an in-process devnet with this many provider nodes (0: connect to the "
            "network in the settings, embedded by default).",
        ),
    ] = 0,
    model: Annotated[
        str, typer.Option("--model", help="The devnet's model: tiny, smollm2, or a .gguf path.")
    ] = "tiny",
    tools: Annotated[
        str | None,
        typer.Option(
            "--tools",
            help=f"Comma-separated tools to serve (default: all of {', '.join(TOOL_NAMES)}).",
        ),
    ] = None,
    n_threads: Annotated[
        int, typer.Option("--n-threads", help="llama.cpp threads of the devnet's nodes.")
    ] = 1,
) -> None:
    """Serve the network tools to an MCP client over stdio (stdout carries only the protocol)."""
    names = [n.strip() for n in tools.split(",") if n.strip()] if tools else None
    _check_flags(devnet, model, names)
    with _protocol_stdout(), _open_network(devnet, model, n_threads) as network:
        where = f"a {devnet}-node devnet ({model})" if devnet else repr(network)
        err.print(f"chefsplan mcp: serving {len(names or TOOL_NAMES)} tools on {where} over stdio")
        try:
            asyncio.run(serve_mcp_stdio(network, names))
        except ImportError as exc:
            raise ConfigError(str(exc)) from exc
