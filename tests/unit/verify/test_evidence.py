"""Challenge evidence documents: written canonically, read as hostile bytes."""

from __future__ import annotations

import json

import pytest

from chefsplan_agents.errors import InvalidEvidence
from chefsplan_agents.storage import MemoryCidStore
from chefsplan_agents.verify import (
    MAX_EVIDENCE_BYTES,
    ChallengeEvidence,
    load_evidence,
    name_result_cid,
    publish_evidence,
)

TASK = "0x" + "ab" * 32
GOOD = dict(
    chain_id=31337,
    market="0x" + "11" * 20,
    task_id=TASK,
    bundle_cid="bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
    provider="0x" + "22" * 20,
    result_cid="bafkreidon73zkcrwdb5iafqtijxildoonbwnpv7dyd6ef3qdgads2jc4su",
    output_hash="0x" + "cd" * 32,
    check="token",
    reason="claimed token 17 at position 3 is 4.26 nats below the verifier's first choice",
    model_sha256="ef" * 32,
    mode="full",
    position=3,
    max_gap=4.26,
)


def test_evidence_is_stored_canonically_and_read_back() -> None:
    store = MemoryCidStore()
    evidence = ChallengeEvidence(**GOOD)  # type: ignore[arg-type]
    cid = publish_evidence(store, evidence)
    raw = store.get(cid)
    # Sorted keys, no whitespace: the same evidence always has the same CID.
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    assert json.loads(raw)["kind"] == "chefsplan.challenge-evidence/v1"
    assert publish_evidence(MemoryCidStore(), ChallengeEvidence(**GOOD)) == cid  # type: ignore[arg-type]
    assert load_evidence(store, cid) == evidence


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "is not JSON"),
        (b"[" * 5000 + b"]" * 5000, "is not JSON"),
        (json.dumps({**GOOD, "kind": "other"}).encode(), "malformed at kind"),
        (json.dumps({**GOOD, "task_id": "0x12"}).encode(), "malformed at task_id"),
        (json.dumps({**GOOD, "extra": 1}).encode(), "malformed at extra"),
        (json.dumps({**GOOD, "max_gap": -1}).encode(), "malformed at max_gap"),
        (json.dumps({**GOOD, "reason": "x" * 501}).encode(), "malformed at reason"),
        (b"{" + b" " * (MAX_EVIDENCE_BYTES + 10) + b"}", "over the 16384-byte limit"),
    ],
)
def test_hostile_evidence_is_a_one_line_error(raw: bytes, message: str) -> None:
    store = MemoryCidStore()
    cid = store.put(raw)
    with pytest.raises(InvalidEvidence) as err:
        load_evidence(store, cid)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_oversized_evidence_is_not_published() -> None:
    long = ChallengeEvidence.model_construct(**{**GOOD, "reason": "x" * (MAX_EVIDENCE_BYTES + 1)})
    with pytest.raises(InvalidEvidence, match="over the 16384-byte limit"):
        publish_evidence(MemoryCidStore(), long)


@pytest.mark.parametrize("cid", ["bafk/not:a cid", "b" * 129, "", "Qm\n" + "x" * 5000])
def test_a_result_cid_no_evidence_may_hold_is_quoted_not_named(cid: str) -> None:
    """Revealed by the provider: building its evidence must not fail on it."""
    named, reason = name_result_cid(cid, "it failed")
    evidence = ChallengeEvidence(**{**GOOD, "result_cid": named, "reason": reason[:500]})
    assert evidence.result_cid is None and reason.endswith("it failed")
    assert repr(cid[:20])[:-1] in reason and len(reason) < 300


def test_a_well_formed_result_cid_is_named() -> None:
    cid = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    assert name_result_cid(cid, "it failed") == (cid, "it failed")
    assert name_result_cid(None, "it failed") == (None, "it failed")


def test_evidence_about_a_providers_strings_always_builds() -> None:
    # What the provider chose (its result CID, the verdict's numbers) cannot make building
    # the evidence of its own result fail.
    evidence = ChallengeEvidence.about(
        **{k: v for k, v in GOOD.items() if k not in ("position", "max_gap")},  # type: ignore[arg-type]
        max_gap=float("inf"),
    )
    assert evidence.max_gap == 0.0 and evidence.reason == GOOD["reason"]
    odd = ChallengeEvidence.about(
        chain_id=31337,
        market=GOOD["market"],  # type: ignore[arg-type]
        task_id=TASK,
        bundle_cid=GOOD["bundle_cid"],  # type: ignore[arg-type]
        check="token",
        reason="line one\nline two " + "x" * 900,
        result_cid="bafk/not:a cid",
        max_drift=float("nan"),
    )
    assert odd.result_cid is None and "'bafk/not:a cid' is malformed" in odd.reason
    assert "\n" not in odd.reason and len(odd.reason) == 500 and odd.max_drift == 0.0
    store = MemoryCidStore()
    assert load_evidence(store, publish_evidence(store, odd)) == odd
