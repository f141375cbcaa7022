"""``chefsplan demo``: the whole network in one process, end to end."""

from __future__ import annotations

from chefsplan_agents.cli._app import app, err


@app.command()
def demo() -> None:
    """Run an embedded network with a real model and print the receipts of one delegated task."""
    err.print("not yet: the demo needs the node and verification layers, which are being built")
