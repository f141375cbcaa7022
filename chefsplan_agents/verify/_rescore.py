"""Cheap second opinions: re-score a claimed result instead of generating it again.

A verifier runs its own copy of the model once over prompt + claimed output (a prefill pass,
far cheaper than generating) and checks that its own logits rank the claimed tokens first, and
that the result's committed top-k fingerprint matches what it sees. Outside one determinism
profile (other hardware, thread counts, builds) output hashes may differ by a token while the
re-score still agrees; a fabricated or tampered output does not.
"""

from __future__ import annotations

from dataclasses import dataclass

from chefsplan_agents.bundles import ResultBundle, TaskBundle, verify_bundle
from chefsplan_agents.errors import VerificationError
from chefsplan_agents.llm import LLMBackend, claimed_tokens_top1_fraction, fingerprint_agreement
from chefsplan_agents.node import task_prompt

__all__ = ["RescoreVerdict", "rescore_result"]


@dataclass(frozen=True)
class RescoreVerdict:
    """What a verifier's re-score found.

    Attributes:
        passed: Both measures reached their thresholds.
        top1_fraction: Share of claimed tokens the verifier's model ranks first.
        fingerprint_agreement: Agreement of the committed top-k fingerprint with the verifier's.
        tokens: Claimed tokens re-scored.
        rescore_ms: The verifier's cost.
        claimed_generation_ms: What generating the result cost its node, for comparison.
        reason: One line saying why it failed ("" when it passed).
    """

    passed: bool
    top1_fraction: float
    fingerprint_agreement: float
    tokens: int
    rescore_ms: float
    claimed_generation_ms: float
    reason: str = ""


def rescore_result(
    llm: LLMBackend,
    task: TaskBundle,
    result: ResultBundle,
    *,
    min_top1: float = 0.9,
    min_agreement: float = 0.8,
    tolerance: float = 0.5,
) -> RescoreVerdict:
    """Give a second opinion on ``result`` by re-scoring it with ``llm``.

    Args:
        llm: The verifier's backend; it must run the model the result names.
        task: The task the result answers.
        result: The claimed result (its signature is checked first).
        min_top1: Least share of claimed tokens the verifier must rank first.
        min_agreement: Least fingerprint agreement.
        tolerance: Logprob drift allowed per fingerprint entry, in nats.

    Returns:
        The verdict; a failed re-score is a verdict with ``passed=False``, not an exception.

    Raises:
        InvalidSignature: The result is not signed by the node it names.
        VerificationError: The verifier runs another model, so its opinion would mean nothing.
    """
    verify_bundle(result)
    info = llm.info
    if info.sha256 != result.model_sha256:
        raise VerificationError(
            f"cannot re-score: the result was made with model {result.model_sha256[:12]}…, "
            f"the verifier runs {info.sha256[:12]}…; use the same model file"
        )
    k = max((len(top) for top in result.fingerprint), default=5) or 5
    rescored = llm.rescore(task_prompt(task, llm), result.token_ids, k=k)
    top1 = claimed_tokens_top1_fraction(rescored)
    agreement = fingerprint_agreement(result.fingerprint, rescored, tolerance=tolerance)
    reasons = []
    if top1 < min_top1:
        reasons.append(f"only {top1:.0%} of claimed tokens are the model's first choice")
    if agreement < min_agreement:
        reasons.append(f"fingerprint agreement {agreement:.2f} is below {min_agreement:.2f}")
    return RescoreVerdict(
        passed=not reasons,
        top1_fraction=top1,
        fingerprint_agreement=agreement,
        tokens=len(result.token_ids),
        rescore_ms=rescored.elapsed_ms,
        claimed_generation_ms=result.timings.generation_ms,
        reason="; ".join(reasons),
    )
