"""docs/agents.md: its Python examples run, in order, as one program."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[3] / "docs" / "agents.md"


def test_the_agents_page_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) >= 5
    namespace: dict[str, object] = {"__name__": "guide"}
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)  # our own docs, run as written
    out = capsys.readouterr().out
    assert out.startswith("CHEFSPLAN OK\n\nSources:\n- part 1: node did:key:")
    assert "second opinion confirmed" in out and "verdict logged" in out
    assert "plan (attempt 1): 2 part(s), sensitive data: only qualifying providers" in out
    assert "rejected (\"policy: output contains the forbidden word 'chefsplan'\",)" in out
    assert "\nPENDING\n" in out
    assert out.count("Sources:") == 2  # the first answer and the own-team one
