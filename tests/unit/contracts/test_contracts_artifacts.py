"""The committed artifacts are the compiled sources."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chefsplan_agents.contracts import ARTIFACT_NAMES, load_artifact

ROOT = Path(__file__).resolve().parents[3]


def _sources_sha256() -> str:
    # The recorded format: for each contracts/*.sol in name order, name NUL bytes NUL.
    digest = hashlib.sha256()
    for path in sorted((ROOT / "contracts").glob("*.sol")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@pytest.mark.parametrize("name", ARTIFACT_NAMES)
def test_artifact_matches_current_sources(name: str) -> None:
    art = load_artifact(name)
    assert art["contractName"] == name
    assert art["sourceHash"] == _sources_sha256(), (
        "contracts/*.sol changed since the artifacts were built; "
        "run `python tools/compile_contracts.py`"
    )
    assert art["compiler"]["version"].startswith("0.8.28+")
    assert art["compiler"]["settings"]["optimizer"] == {"enabled": True, "runs": 1000}
    assert art["bytecode"].startswith("0x60") and len(art["deployedBytecode"]) > 100
    path = ROOT / "chefsplan_agents" / "contracts" / "artifacts" / f"{name}.json"
    assert path.read_text() == json.dumps(art, indent=1, sort_keys=True) + "\n"


def test_abis_expose_the_documented_interface() -> None:
    def names(contract: str, kind: str) -> set[str]:
        return {e["name"] for e in load_artifact(contract)["abi"] if e["type"] == kind}

    assert {
        "postTask",
        "claim",
        "commit",
        "reveal",
        "revealAndFinalize",
        "finalize",
        "reopen",
        "challenge",
        "resolveChallenge",
        "cancel",
        "withdraw",
    } <= names("TaskMarket", "function")
    assert {
        "TaskPosted",
        "ReplicaClaimed",
        "ResultCommitted",
        "ResultRevealed",
        "TaskFinalized",
        "Withdrawn",
    } <= names("TaskMarket", "event")
    assert "CommitmentMismatch" in names("TaskMarket", "error")
    assert {
        "register",
        "updateOffer",
        "addStake",
        "requestUnstake",
        "withdrawStake",
        "getProvider",
        "isActive",
        "count",
    } <= names("AgentRegistry", "function")
    # A DID -> address view could be squatted: readers resolve DIDs through verified offers.
    assert "providerOf" not in names("AgentRegistry", "function")
    assert "DidTaken" not in names("AgentRegistry", "error")
    assert {"MAX_TASK_HORIZON", "MAX_COMMIT_TIMEOUT", "MAX_CHALLENGE_WINDOW"} <= names(
        "TaskMarket", "function"
    )
    assert names("OutputLog", "event") == {"OutputLogged"}


def test_unknown_artifact_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown contract artifact 'Nope'"):
        load_artifact("Nope")


def checks_required() -> bool:
    """In CI (``CI=true``) or with ``CHEFSPLAN_REQUIRE_INTEGRATION=1`` a check that cannot run
    is a failure, not a skip: a run must never pass having compared nothing."""
    ci = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
    return ci or os.environ.get("CHEFSPLAN_REQUIRE_INTEGRATION", "").strip() == "1"


def missing_compiler() -> str | None:
    """Why the fresh compile cannot run here, or ``None``."""
    if shutil.which("node") is None:
        return "node is not installed (needed by solcjs)"
    if not (ROOT / "node_modules" / "solc" / "index.js").exists():
        return "node_modules/solc is missing; run `npm install` to compare with a fresh compile"
    return None


def require_compiler() -> None:
    """Skip without solcjs, or fail when checks are required (:func:`checks_required`)."""
    reason = missing_compiler()
    if reason is None:
        return
    if checks_required():
        pytest.fail(f"{reason} (required: CI or CHEFSPLAN_REQUIRE_INTEGRATION=1)", pytrace=False)
    pytest.skip(reason)


def test_missing_compiler_fails_when_checks_are_required(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no node on it
    monkeypatch.delenv("CHEFSPLAN_REQUIRE_INTEGRATION", raising=False)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="node is not installed"):
        require_compiler()
    monkeypatch.delenv("CI")
    monkeypatch.setenv("CHEFSPLAN_REQUIRE_INTEGRATION", "1")
    with pytest.raises(pytest.fail.Exception, match="node is not installed"):
        require_compiler()
    monkeypatch.delenv("CHEFSPLAN_REQUIRE_INTEGRATION")
    with pytest.raises(pytest.skip.Exception, match="node is not installed"):
        require_compiler()


@pytest.mark.slow  # solcjs (wasm) with the IR pipeline takes ~15-25 s
def test_fresh_compile_matches_committed_artifacts() -> None:
    require_compiler()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "compile_contracts.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
