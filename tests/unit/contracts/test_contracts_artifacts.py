"""The committed artifacts are the compiled sources."""

from __future__ import annotations

import hashlib
import json
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


@pytest.mark.slow  # solcjs (wasm) with the IR pipeline takes ~15-25 s
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (needed by solcjs)")
@pytest.mark.skipif(
    not (ROOT / "node_modules" / "solc" / "index.js").exists(),
    reason="node_modules/solc is missing; run `npm install` to compare with a fresh compile",
)
def test_fresh_compile_matches_committed_artifacts() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "compile_contracts.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
