"""``chefsplan cid``: the CID an IPFS daemon would give a file, computed offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from chefsplan_agents.cli._app import app, out
from chefsplan_agents.storage import compute_file_cid


@app.command("cid")
def cid_command(
    file: Annotated[Path, typer.Argument(help="The file to hash (streamed, never loaded whole).")],
    v0: Annotated[
        bool, typer.Option("--v0", help="Print the CIDv0 (Qm…) of plain `ipfs add` instead.")
    ] = False,
) -> None:
    """Print the CID of FILE, as `ipfs add --cid-version=1` (or plain `ipfs add`) would."""
    out.print(compute_file_cid(file, cid_version=0 if v0 else 1))
