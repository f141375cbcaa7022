"""docs/app-developers.md: its Python examples run, in order, as one program."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[3] / "docs" / "app-developers.md"


def test_the_guide_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) >= 5
    namespace: dict[str, object] = {"__name__": "guide"}
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)  # our own docs, run as written
    out = capsys.readouterr().out
    assert "settled: 1 of 1 agreed on output 'CHEFSPLAN OK'" in out
    assert "second opinion on baf" in out and "confirmed" in out
    assert "error delegate_task failed (InvalidArguments)" in out
    assert re.search(r"task 0x[0-9a-f]{64} settled: .*\(result baf", out)
