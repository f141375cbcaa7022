"""The ``chefsplan`` command: chat, demo, devnet, node, registry, task, cid."""

from __future__ import annotations

import sys

from chefsplan_agents.cli import _demo  # noqa: F401  (registers commands)
from chefsplan_agents.cli._app import app, run

__all__ = ["app", "main", "run"]


def main() -> None:
    """Console-script entry point."""
    sys.exit(run(sys.argv[1:]))
