"""``chefsplan watch``: a bounded run on an embedded devnet, and bad flags as one line."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chefsplan_agents.cli import run

pytestmark = pytest.mark.usefixtures("clean_settings")


@pytest.mark.parametrize(
    "bound",
    [
        ["--rate", "1", "--max-tasks", "2"],
        # A devnet's one pass is its whole story, at the devnet's default rate (every result).
        ["--once"],
    ],
    ids=["max-tasks", "once"],
)
def test_watch_on_a_devnet_challenges_the_cheater_and_passes_the_honest_node(
    bound: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["watch", "--devnet", "5", "--model", "tiny", *bound]
    code = run([*argv, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines: list[dict[str, Any]] = [json.loads(line) for line in captured.out.splitlines()]
    kinds = [line["event"] for line in lines]
    assert kinds.count("challenged") == 1 and kinds.count("passed") == 1
    challenged = next(line for line in lines if line["event"] == "challenged")
    assert challenged["evidence_cid"].startswith("b") and challenged["bond_wei"] > 0
    resolved = next(line for line in lines if line["event"] == "resolved")
    assert resolved["upheld"] is True and resolved["task_id"] == challenged["task_id"]
    summary = lines[-1]
    assert summary["event"] == "summary" and summary["challenges_upheld"] == 1
    assert summary["withdrawn_wei"] >= summary["posted_wei"] > 0 and summary["spent_wei"] == 0


@pytest.mark.parametrize(
    ("argv", "status", "says"),
    [
        (["watch", "--rate", "2"], 2, "Invalid value for '--rate'"),
        (["watch", "--frobnicate"], 2, "No such option: --frobnicate"),
        (["watch", "--devnet", "3"], 1, "--devnet must be 0"),
        (["watch", "--devnet", "5", "--model", "gpt-9"], 1, "unknown --model 'gpt-9'"),
        (["watch", "--once"], 1, "no chain configured"),
    ],
)
def test_bad_flags_are_one_line(
    argv: list[str], status: int, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(argv) == status
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], captured.err
    assert captured.out == ""
