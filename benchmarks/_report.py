"""The one convention every benchmark follows.

A benchmark measures a baseline and our path in the same process, then calls :func:`report`:
by default a table for people on stdout; with ``--json`` one JSON object for machines. With
``--write-docs`` (what ``make bench`` passes) its section of ``docs/benchmarks.md`` is replaced
between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` markers.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the flags every benchmark takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--write-docs",
        action="store_true",
        help="replace this benchmark's section of docs/benchmarks.md",
    )
    return p


def machine() -> str:
    """A short description of where the numbers were taken."""
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "| " + " | ".join(columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join([head, sep, *body])


def write_section(name: str, title: str, text: str) -> None:
    """Replace (or append) the ``name`` section of docs/benchmarks.md."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = f"{start}\n## {title}\n\n_Measured {stamp} on {machine()}._\n\n{text.strip()}\n{end}"
    doc = DOCS.read_text(encoding="utf-8") if DOCS.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    doc = (
        pattern.sub(lambda _: block, doc)
        if pattern.search(doc)
        else doc.rstrip() + "\n\n" + block + "\n"
    )
    DOCS.write_text(doc, encoding="utf-8")


def report(
    args: argparse.Namespace,
    *,
    name: str,
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    summary: dict[str, Any],
    notes: str = "",
) -> None:
    """Print the results (table or JSON) and optionally write them into the docs."""
    if args.json:
        json.dump(summary, sys.stdout, indent=None, sort_keys=True)
        sys.stdout.write("\n")
    else:
        table = Table(title=title)
        for col in columns:
            table.add_column(col)
        for row in rows:
            table.add_row(*(str(c) for c in row))
        console = Console()
        console.print(table)
        if notes:
            console.print(notes)
    if args.write_docs:
        write_section(
            name, title, markdown_table(columns, rows) + ("\n\n" + notes if notes else "")
        )
