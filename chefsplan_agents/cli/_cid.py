"""``chefsplan cid``: the CID an IPFS daemon would give a file, computed offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from chefsplan_agents.cli._app import JsonOption, app, out, print_json
from chefsplan_agents.storage import compute_file_cid


@app.command("cid")
def cid_command(
    file: Annotated[Path, typer.Argument(help="The file to hash (streamed, never loaded whole).")],
    v0: Annotated[
        bool, typer.Option("--v0", help="Print the CIDv0 (Qm…) of plain `ipfs add` instead.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Print the CID of FILE, as `ipfs add --cid-version=1` (or plain `ipfs add`) would."""
    version = 0 if v0 else 1
    cid = compute_file_cid(file, cid_version=version)
    if as_json:
        print_json({"cid": cid, "cid_version": version, "file": str(file)})
    else:
        out.print(cid)
