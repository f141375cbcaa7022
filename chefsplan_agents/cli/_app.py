"""The ``chefsplan`` Typer application and its error boundary.

Only the CLI prints. Every :class:`~chefsplan_agents.errors.ChefsplanError` that reaches the
boundary becomes one red line on stderr and exit status 1; a usage error (unknown command, bad
flag, missing argument) becomes one line too, with exit status 2.

The global ``--config`` and ``--profile`` options choose which settings every command reads
(:func:`settings`); ``$CHEFSPLAN_CONFIG`` and ``$CHEFSPLAN_PROFILE`` do the same.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

# Typer ships its own copy of click; its exceptions are the ones its parser raises.
from typer._click import exceptions as click

from chefsplan_agents import __version__
from chefsplan_agents.config import Settings, default_config_path, load_settings
from chefsplan_agents.errors import ChefsplanError, ConfigError

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

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")]


@dataclass
class _Options:
    config: Path | None = None
    profile: str | None = None


_options = _Options()


def settings() -> Settings:
    """The settings the global ``--config``/``--profile`` options (or their variables) select.

    Raises:
        ConfigError: The file is missing (when named) or malformed, the profile is unknown, or
            a value is invalid.
    """
    try:
        return load_settings(_options.config, profile=_options.profile)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; {_settings_hint(exc)}") from exc


def _settings_hint(exc: ConfigError) -> str:
    where = _options.config or default_config_path()
    if isinstance(exc.__cause__, tomllib.TOMLDecodeError | UnicodeDecodeError):
        return "fix the file, or pass another with --config"
    if isinstance(exc.__cause__, ValidationError):
        return f"fix the value in {where} or in its CHEFSPLAN_* environment variable"
    if "profile" in str(exc):
        return "add that [profiles.NAME] table to the file, or drop --profile/$CHEFSPLAN_PROFILE"
    return "create it, or pass another with --config"


def print_json(doc: Any) -> None:
    """Print ``doc`` as one line of JSON on stdout (what every ``--json`` prints)."""
    out.print(json.dumps(doc, sort_keys=True), markup=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        out.print(f"chefsplan-agents {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress to stderr."),
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Settings file (default: $CHEFSPLAN_CONFIG, else "
            "~/.config/chefsplan/config.toml).",
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            "-p",
            help="Apply the profiles.NAME table of the settings file (default: "
            "$CHEFSPLAN_PROFILE).",
        ),
    ] = None,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _options.config = config
    _options.profile = profile
    if config is not None or profile is not None:
        # A file or profile named on the command line must exist even for commands that read
        # no settings: a typo should not go unnoticed until the command that needs it.
        settings()


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _usage_error(exc: click.UsageError) -> int:
    path = exc.ctx.command_path if exc.ctx is not None else "chefsplan"
    message = _one_line(exc.format_message()).rstrip(".")
    err.print(Text.assemble(("error:", "red"), " ", f"{message}; see '{path} --help'"))
    return exc.exit_code


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status instead of raising ``SystemExit``."""
    _options.config = _options.profile = None
    try:
        code = app(args=argv, prog_name="chefsplan", standalone_mode=False)
    except ChefsplanError as exc:
        err.print(Text.assemble(("error:", "red"), " ", _one_line(str(exc))))
        return 1
    except click.NoArgsIsHelpError as exc:
        err.print(exc.format_message(), markup=False)
        return exc.exit_code
    except click.UsageError as exc:
        return _usage_error(exc)
    except click.ClickException as exc:  # a bad file argument, …
        err.print(Text.assemble(("error:", "red"), " ", _one_line(exc.format_message())))
        return exc.exit_code
    except typer.Abort:
        err.print("aborted")
        return 1
    except SystemExit as exc:
        status = exc.code
        if status is None:
            return 0
        return status if isinstance(status, int) else 1
    return code if isinstance(code, int) else 0
