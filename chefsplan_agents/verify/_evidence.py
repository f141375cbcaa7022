"""Challenge evidence: what a challenger found, on IPFS, named by the challenge on chain.

A challenge (``TaskMarket.challenge(p, evidenceCid)``) names one small JSON document. The panel
drawn to decide it, and anyone else, read it to see *which* check failed and where, then run the
check themselves from what is already public: the task bundle (its CID is in ``TaskPosted``) and
the revealed results (their CIDs are in ``ResultRevealed``). The evidence is a pointer, not a
proof: a panelist's vote comes from its own re-score, never from the challenger's word, so a
false claim costs the challenger its bond and a true one cannot be talked away.

The document is canonical JSON (sorted keys, no whitespace), at most
:data:`MAX_EVIDENCE_BYTES`, read with bounded nesting like every other byte from another party.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chefsplan_agents import _json
from chefsplan_agents.bundles._canonical import canonical_json
from chefsplan_agents.errors import ContentTooLarge, InvalidEvidence
from chefsplan_agents.storage import ContentStore

__all__ = [
    "EVIDENCE_KIND",
    "MAX_EVIDENCE_BYTES",
    "ChallengeEvidence",
    "load_evidence",
    "name_result_cid",
    "publish_evidence",
]

#: The ``kind`` of a version-1 evidence document.
EVIDENCE_KIND: Final = "chefsplan.challenge-evidence/v1"
#: Largest evidence document read or written, in bytes.
MAX_EVIDENCE_BYTES = 16 * 1024

_HEX32 = r"^0x[0-9a-f]{64}$"
_ADDRESS = r"^0x[0-9a-fA-F]{40}$"
#: What a CID field of evidence must match (what the market lets a challenge name, and more).
CID_PATTERN: Final = r"^[A-Za-z0-9]{1,128}$"
_CID = CID_PATTERN
_CID_RE = re.compile(CID_PATTERN)
_SHA256 = r"^[0-9a-f]{64}$"
_MAX_REASON = 500


class ChallengeEvidence(BaseModel):
    """Why a task's result is challenged.

    Attributes:
        kind: Always :data:`EVIDENCE_KIND`.
        chain_id: The chain the task lives on.
        market: The ``TaskMarket`` address.
        task_id: The challenged task (``0x`` + 64 hex digits).
        bundle_cid: The task bundle's CID (as posted).
        provider: Whose revealed result failed (``None``: the challenge is of the task's
            outcome as a whole, e.g. replicas that agree on a wrong answer).
        result_cid: That provider's result bundle CID.
        output_hash: The output hash it revealed (``0x`` + 64 hex digits).
        check: The check that failed: a re-score check (``token``, ``text``, ``drift``,
            ``fingerprint``, ...), ``canary`` (the output differs from an answer known in
            advance and the re-score confirms it) or ``policy``.
        reason: One line saying what failed.
        model_sha256: The model the verifier re-scored with (the task's pinned model), if any.
        mode: The re-score mode (``full``, ``spot`` or ``exact``), "" if none ran.
        position: First claimed-token position that failed, if the check names one.
        max_gap: Largest logprob gap (nats) of a claimed token to the verifier's first choice.
        max_drift: Largest committed-vs-verifier logprob difference (nats).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["chefsplan.challenge-evidence/v1"] = EVIDENCE_KIND
    chain_id: int = Field(ge=1)
    market: str = Field(pattern=_ADDRESS)
    task_id: str = Field(pattern=_HEX32)
    bundle_cid: str = Field(pattern=_CID)
    provider: str | None = Field(default=None, pattern=_ADDRESS)
    result_cid: str | None = Field(default=None, pattern=_CID)
    output_hash: str | None = Field(default=None, pattern=_HEX32)
    check: str = Field(min_length=1, max_length=32, pattern=r"^[a-z_-]+$")
    reason: str = Field(min_length=1, max_length=_MAX_REASON)
    model_sha256: str | None = Field(default=None, pattern=_SHA256)
    mode: str = Field(default="", max_length=16)
    position: int | None = Field(default=None, ge=0)
    max_gap: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    max_drift: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)

    @classmethod
    def about(
        cls,
        *,
        chain_id: int,
        market: str,
        task_id: str,
        bundle_cid: str,
        check: str,
        reason: str,
        provider: str | None = None,
        result_cid: str | None = None,
        output_hash: str | None = None,
        model_sha256: str | None = None,
        mode: str = "",
        max_gap: float = 0.0,
        max_drift: float = 0.0,
    ) -> ChallengeEvidence:
        """Evidence whose free-form parts are made to fit, so building it never fails on what
        a provider chose: the reason on one line and cut to 500 characters, a result CID no
        evidence may name left out and quoted in the reason (:func:`name_result_cid`), gaps
        that are not finite numbers (an impossible token) recorded as 0.

        Raises:
            pydantic.ValidationError: A field the caller controls is malformed (a task id,
                an address, a CID of its own).
        """
        result_cid, reason = name_result_cid(result_cid, reason)
        return cls(
            chain_id=chain_id,
            market=market,
            task_id=task_id,
            bundle_cid=bundle_cid,
            provider=provider,
            result_cid=result_cid,
            output_hash=output_hash,
            check=check,
            reason=" ".join(reason.split())[:_MAX_REASON] or check,
            model_sha256=model_sha256,
            mode=mode,
            max_gap=_finite(max_gap),
            max_drift=_finite(max_drift),
        )

    def encode(self) -> bytes:
        """The canonical bytes stored on IPFS."""
        return canonical_json(self.model_dump(mode="json"))


_LINE = re.compile(r"[\r\n]+")


def _finite(value: float) -> float:
    return value if 0.0 <= value < float("inf") else 0.0


def name_result_cid(result_cid: str | None, reason: str) -> tuple[str | None, str]:
    """The ``result_cid`` and ``reason`` evidence can hold for a revealed result CID.

    The provider chose the CID it revealed; one that no evidence may name (not 1 to 128
    letters and digits) is left out and quoted, shortened, at the start of the reason, so
    building the evidence of a cheater's result cannot fail on the cheater's own string.
    """
    if result_cid is None or _CID_RE.fullmatch(result_cid):
        return result_cid, reason
    return None, f"result CID {result_cid[:140]!r} is malformed; {reason}"


def publish_evidence(store: ContentStore, evidence: ChallengeEvidence) -> str:
    """Store ``evidence`` and return its CID (pass it to ``MarketClient.challenge``).

    Raises:
        InvalidEvidence: The encoded document is over :data:`MAX_EVIDENCE_BYTES`.
        StorageError: The store refused it.
    """
    data = evidence.encode()
    if len(data) > MAX_EVIDENCE_BYTES:
        raise InvalidEvidence(
            f"evidence is {len(data)} bytes, over the {MAX_EVIDENCE_BYTES}-byte limit: "
            "shorten its reason"
        )
    return store.put(data)


def load_evidence(store: ContentStore, cid: str) -> ChallengeEvidence:
    """Fetch and check the evidence a challenge names.

    Raises:
        InvalidEvidence: Not a version-1 evidence document (too large, not JSON, too deep,
            wrong fields).
        StorageError: The CID is malformed, missing, or its content does not match it.
    """
    try:
        data = store.get(cid, max_bytes=MAX_EVIDENCE_BYTES)
    except ContentTooLarge as err:
        raise InvalidEvidence(
            f"evidence {cid} is over the {MAX_EVIDENCE_BYTES}-byte limit"
        ) from err
    try:
        value = _json.loads(data)
    except ValueError as err:
        raise InvalidEvidence(f"evidence {cid} is not JSON: {err}") from err
    try:
        return ChallengeEvidence.model_validate(value)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "document"
        msg = _LINE.sub(" ", str(first["msg"]))
        raise InvalidEvidence(f"evidence {cid} is malformed at {where}: {msg}") from err
