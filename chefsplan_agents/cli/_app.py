"""The ``chefsplan`` Typer application and its error boundary.

Only the CLI prints. Every :class:`~chefsplan_agents.errors.ChefsplanError` that reaches the
boundary becomes one red line on stderr and exit status 1; usage errors exit 2 (Typer's own).
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console
from rich.text import Text

from chefsplan_agents import __version__
from chefsplan_agents.errors import ChefsplanError

app = typer.Typer(
    name="chefsplan",
    help="Agent tools for a decentralized network of local LLM nodes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# stdout carries results (a CID, JSON); status and errors go to stderr.
# Markup and emoji are off: DIDs ("did:key:…") and JSON ("[…]") must print verbatim.
out = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)


def _version(value: bool) -> None:
    if value:
        out.print(f"chefsplan-agents {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress to stderr."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status instead of raising ``SystemExit``."""
    try:
        # Standalone mode lets click print usage errors (exit 2) and handle ^C (exit 1).
        app(args=argv, prog_name="chefsplan", standalone_mode=True)
    except ChefsplanError as exc:
        err.print(Text.assemble(("error:", "red"), " ", str(exc)))
        return 1
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        return code if isinstance(code, int) else 1
    return 0
