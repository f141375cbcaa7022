"""The ``chefsplan`` command: demo, devnet, registry, task, verify, watch, node, chain, id,
cid."""

from __future__ import annotations

import sys

# Importing a command module registers its commands on the app.
from chefsplan_agents.cli import (  # noqa: F401
    _chain,
    _chat,
    _cid,
    _demo,
    _devnet,
    _identity,
    _mcp,
    _node,
    _registry,
    _task,
    _verify,
    _watch,
)
from chefsplan_agents.cli._app import app, run

__all__ = ["app", "main", "run"]


def main() -> None:
    """Console-script entry point."""
    sys.exit(run(sys.argv[1:]))
