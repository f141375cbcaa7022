from __future__ import annotations

import json

import pytest

from chefsplan_agents.cli import run


def test_demo_json_reports_vote_rescore_and_log(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["demo", "--model", "tiny", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["output"] == "CHEFSPLAN OK"
    assert len(doc["replicas"]) == 3
    assert all(r["output_hash"] == doc["output_hash"] for r in doc["replicas"])
    opinion = doc["second_opinion"]
    assert opinion["votes"] == 3 and opinion["quorum"] == 2
    assert opinion["rescore_passed"] is True and opinion["rescore_top1_fraction"] == 1.0
    assert doc["output_log_tx"].startswith("0x") and len(doc["output_log_tx"]) == 66
    assert doc["bundle_cid"].startswith("bafkrei") and doc["result_cid"].startswith("bafkrei")


def test_demo_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["demo", "--model", "tiny", "--nodes", "1"]) == 0
    captured = capsys.readouterr()
    assert "Second opinions" in captured.out and "re-score" in captured.out
    assert "CHEFSPLAN OK" in captured.out
    assert "second opinion" in captured.err  # live status goes to stderr


def test_demo_bad_flags_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["demo", "--model", "gpt-5"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
