"""The ``chefsplan`` command: chat, demo, devnet, node, registry, task, cid."""

from __future__ import annotations

import sys

# Importing a command module registers its commands on the app.
from chefsplan_agents.cli import (  # noqa: F401
    _chain,
    _cid,
    _demo,
    _devnet,
    _identity,
    _mcp,
    _node,
)
from chefsplan_agents.cli._app import app, run

__all__ = ["app", "main", "run"]


def main() -> None:
    """Console-script entry point."""
    sys.exit(run(sys.argv[1:]))
