from __future__ import annotations

import subprocess
import sys

import pytest

from chefsplan_agents import __version__
from chefsplan_agents.cli import run


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"chefsplan-agents {__version__}"


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--no-such-flag"]) == 2
    assert "No such option" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["frobnicate"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_console_entry_point_runs_as_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "chefsplan_agents", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    assert "Usage" in proc.stdout


def test_errors_print_one_line_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    from chefsplan_agents.cli._app import app
    from chefsplan_agents.errors import InvalidDid

    @app.command("raise-for-test", hidden=True)
    def _raise() -> None:
        raise InvalidDid("not a did:key:z6Mk… value [see docs]")

    try:
        assert run(["raise-for-test"]) == 1
    finally:
        app.registered_commands = [c for c in app.registered_commands if c.name != "raise-for-test"]
    err = capsys.readouterr().err
    assert err == "error: not a did:key:z6Mk… value [see docs]\n"
