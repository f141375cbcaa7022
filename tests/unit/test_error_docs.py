from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import chefsplan_agents.errors as errors

ROOT = Path(__file__).resolve().parents[2]


def test_error_docs_page_matches_the_tree() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_error_docs.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_every_exported_error_is_drawn_in_the_tree() -> None:
    tree = (errors.__doc__ or "").partition("::")[2]
    missing = [name for name in errors.__all__ if name not in tree]
    assert missing == []
    assert all(issubclass(getattr(errors, n), errors.ChefsplanError) for n in errors.__all__)
