"""``chefsplan watch``: a bounded run on an embedded devnet, and bad flags as one line."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from chefsplan_agents.cli import _watch as watch_cli
from chefsplan_agents.cli import run
from chefsplan_agents.errors import ChainUnavailable

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


class _FlakyWatcher:
    """A watcher whose chain node drops out for a few passes, then finishes one task."""

    def __init__(self, outages: int) -> None:
        self.outages = outages
        self.finished = 0
        self.busy = False

    def tick(self) -> int:
        if self.outages:
            self.outages -= 1
            raise ChainUnavailable("cannot reach the chain node at http://127.0.0.1:9")
        self.finished = 1
        return 1


def test_a_long_running_watch_backs_off_through_a_chain_outage(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An RPC node restarting used to end `chefsplan watch` (and its challenges in flight)."""
    slept: list[float] = []
    monkeypatch.setattr(watch_cli.time, "sleep", slept.append)
    watcher = _FlakyWatcher(outages=3)
    where = SimpleNamespace(devnet=None)

    watch_cli._loop(watcher, where, max_tasks=1, once=False, poll=0.5)  # type: ignore[arg-type]

    assert watcher.finished == 1 and len(slept) == 3 and slept == sorted(slept)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all("cannot reach the chain node" in line for line in lines)


def test_watch_once_still_reports_a_chain_outage() -> None:
    with pytest.raises(ChainUnavailable):
        watch_cli._loop(
            _FlakyWatcher(outages=1),  # type: ignore[arg-type]
            SimpleNamespace(devnet=None),  # type: ignore[arg-type]
            max_tasks=0,
            once=True,
            poll=0.0,
        )
