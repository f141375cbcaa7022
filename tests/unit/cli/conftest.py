"""Fixtures for the command-line tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def clean_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No ``CHEFSPLAN_*`` variable, config and data folders under ``tmp_path``, and
    ``tmp_path`` as the working folder: the command sees only what the test sets up."""
    for name in list(os.environ):
        if name.startswith("CHEFSPLAN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    return tmp_path
