"""Settings from the environment and files: deep nesting is a ConfigError, never a crash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chefsplan_agents.config import load_settings
from chefsplan_agents.errors import ConfigError


def test_a_deeply_nested_json_variable_is_a_config_error(tmp_path: Path) -> None:
    env = {"CHEFSPLAN_CHAIN__CONTRACTS": "[" * 200_000}
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    with pytest.raises(ConfigError, match=r"\$CHEFSPLAN_CHAIN__CONTRACTS is refused") as info:
        load_settings(empty, env=env)
    assert "\n" not in str(info.value)


def test_a_deeply_nested_toml_file_is_a_config_error(tmp_path: Path) -> None:
    file = tmp_path / "deep.toml"
    file.write_text("a = " + "[" * 200_000)
    with pytest.raises(ConfigError, match="nests too deeply"):
        load_settings(file, env={})


def test_deep_settings_do_not_kill_a_process_that_imported_the_chain(tmp_path: Path) -> None:
    file = tmp_path / "deep.toml"
    file.write_text("a = " + "[" * 200_000)
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    program = (
        "import os, sys\n"
        "import chefsplan_agents.chain\n"
        "from chefsplan_agents.config import load_settings\n"
        "from chefsplan_agents.errors import ConfigError\n"
        "assert sys.getrecursionlimit() >= 100000\n"
        "for path, env in ((sys.argv[2], {'CHEFSPLAN_CHAIN__CONTRACTS': '[' * 200_000}),\n"
        "                  (sys.argv[1], {})):\n"
        "    try:\n"
        "        load_settings(path, env=env)\n"
        "    except ConfigError:\n"
        "        print('refused')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, str(file), str(empty)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["refused", "refused"]
