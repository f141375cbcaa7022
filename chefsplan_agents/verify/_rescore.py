"""Cheap second opinions: re-score a claimed result instead of generating it again.

A verifier binds everything the requester consumes to what it checks, then runs its own copy of
the model once over prompt + claimed tokens (a prefill pass) and checks each claimed token:

* the result names this task (its CID), the pinned model, and stays within ``max_tokens``;
* ``output`` is exactly the detokenization of ``token_ids`` (what a node's ``complete`` returns);
* the committed fingerprint has one entry of :data:`FINGERPRINT_K` pairs per claimed token and
  contains the claimed token (as its first choice when the task is greedy);
* greedy: each claimed token is the verifier's first choice, or within :data:`NEAR_TIE_NATS`
  of it (llama.cpp drifts across threads and batch sizes, so exact ties can flip);
* sampled: each claimed token lies in the task's top-k/top-p/min-p support of the verifier's
  logits, and the node's seeded sampler, replayed over the verifier's logits, picks it;
* every committed fingerprint logprob lies within :data:`DRIFT_NATS` of the verifier's;
* a result shorter than ``max_tokens`` stops where the model stops (end of generation, or the
  token that starts a stop string).

A bad claim is a verdict with ``passed=False`` and a one-line reason, never an exception. The
thresholds were measured with ``benchmarks/verify_calibration.py``; docs/verification.md has the
numbers and what each check costs and cannot catch.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from chefsplan_agents.bundles import ResultBundle, TaskBundle, encode_bundle, output_hash
from chefsplan_agents.bundles import verify_bundle as _verify_signature
from chefsplan_agents.errors import BundleError, InvalidSignature, VerificationError
from chefsplan_agents.llm import (
    GenerationParams,
    LlamaCppBackend,
    LLMBackend,
    RescoredPosition,
    RescoreResult,
    TopK,
    claimed_tokens_top1_fraction,
    fingerprint_agreement,
)
from chefsplan_agents.node import task_prompt
from chefsplan_agents.storage import compute_cid

__all__ = [
    "DRIFT_NATS",
    "EXACT_NATS",
    "FINGERPRINT_K",
    "NEAR_TIE_NATS",
    "REPLAY_MISMATCH_FRACTION",
    "SPOT_WIDTH",
    "SUPPORT_NATS",
    "RescoreMode",
    "RescoreVerdict",
    "rescore_result",
    "spot_window",
    "support_violation",
]

#: Pairs per fingerprint entry: a protocol constant (what nodes commit, ``GenerationParams``'s
#: ``logprobs`` default), never read from the prover's fingerprint.
FINGERPRINT_K = 5
# The tolerances below cover llama.cpp's drift between a node's one-token decode steps and a
# verifier's batched prefill, measured on SmolLM2-135M Q4_1 (benchmarks/verify_calibration.py,
# docs/verification.md): first-choice changes trailed by at most 0.36 nats, committed logprobs
# drifted by at most 0.70 (p99.9 0.49) over 54,855 pairs. Each is about twice the worst seen;
# a Q4_0 requantization of the model drifted by 3.3-7.7 and trailed by 1.3-4.7.

#: Greedy near-tie margin: a claimed token may trail the verifier's first choice by this much.
NEAR_TIE_NATS = 0.75
#: Largest allowed difference between a committed fingerprint logprob and the verifier's.
DRIFT_NATS = 1.5
#: How far (nats) a sampled token may lie beyond the verifier's support boundary.
SUPPORT_NATS = 1.0
#: Share of sampled positions where the replayed seeded sampler may draw another token (honest
#: SmolLM2 results: at most 0.18 over 36 runs; drawn with another seed or greedily: 0.3-0.7).
REPLAY_MISMATCH_FRACTION = 0.3
#: Positions a spot check re-scores at least (a window chosen after the result is committed).
SPOT_WIDTH = 16
#: Near-tie margin and drift tolerance of an exact re-score (same build, one-token steps):
#: measured drift there is ~3e-7 nats, the float32 normaliser's rounding.
EXACT_NATS = 1e-3

#: ``"full"`` re-scores every position in one prefill; ``"spot"`` the positions up to a window
#: the result's own hash picks; ``"exact"`` every position one token at a time, as the node
#: generated them (same llama.cpp build only; costs about a generation).
RescoreMode = Literal["full", "spot", "exact"]

# Verifier alternatives requested per position: enough to see every committed id that drifted a
# rank or two, and the boundary of a top-k support (capped: top_k=0 means the whole vocabulary).
_GREEDY_QUERY_K = 2 * FINGERPRINT_K
_MAX_QUERY_K = 256


@dataclass(frozen=True)
class RescoreVerdict:
    """What a verifier's re-score found.

    Attributes:
        passed: Every check held.
        top1_fraction: Share of re-scored claimed tokens the verifier's model ranks first.
        fingerprint_agreement: Agreement of the committed top-k fingerprint with the verifier's
            (share of committed pairs within :data:`DRIFT_NATS`).
        tokens: Claimed tokens.
        rescore_ms: The verifier's model time.
        claimed_generation_ms: What generating the result cost its node, as it claims.
        reason: One line saying why it failed ("" when it passed).
        check: The first check that failed: ``signature``, ``task``, ``model``, ``length``,
            ``fingerprint``, ``text``, ``token``, ``support``, ``replay``, ``drift`` or ``end``
            ("" when it passed).
        mode: ``"full"`` or ``"spot"``.
        positions_checked: Claimed positions the model re-scored.
        max_gap: Largest logprob gap of a claimed token to the verifier's first choice.
        max_drift: Largest committed-vs-verifier logprob difference seen.
    """

    passed: bool
    top1_fraction: float
    fingerprint_agreement: float
    tokens: int
    rescore_ms: float
    claimed_generation_ms: float
    reason: str = ""
    check: str = ""
    mode: RescoreMode = "full"
    positions_checked: int = 0
    max_gap: float = 0.0
    max_drift: float = 0.0


@dataclass
class _Findings:
    """Failures found so far; the first one names the verdict's check."""

    reasons: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)

    def fail(self, check: str, reason: str) -> None:
        self.checks.append(check)
        self.reasons.append(reason)


def spot_window(seed: bytes, n_tokens: int, width: int = SPOT_WIDTH) -> tuple[int, int]:
    """The positions ``[start, end)`` a spot check re-scores.

    Derived from ``seed`` (the committed result's hash), so the window is fixed only after the
    prover committed: a prover cannot know which tokens will be looked at.

    Args:
        seed: Bytes that only exist once the result does (its canonical encoding).
        n_tokens: Claimed tokens.
        width: Window length.

    Returns:
        ``(start, end)``; the whole range when ``n_tokens <= width``.
    """
    if n_tokens <= width:
        return 0, n_tokens
    draw = int.from_bytes(hashlib.sha256(seed).digest()[:8], "big")
    start = draw % (n_tokens - width + 1)
    return start, start + width


def _plain_greedy(params: GenerationParams) -> bool:
    """Greedy on the raw logits: no repeat penalty reshapes what the node's argmax saw."""
    return params.greedy and params.repeat_penalty == 1.0


def _support_boundary(top: TopK, params: GenerationParams) -> float | None:
    """The logprob of the least likely token the sampler keeps, or None if unknown."""
    kept = list(top)
    if params.top_k > 0:
        if len(kept) < params.top_k:
            return None
        kept = kept[: params.top_k]
    boundary = kept[-1][1] if params.top_k > 0 else None
    if params.top_p < 1.0:
        # top-p runs on the probabilities renormalised over the top-k survivors, before
        # the temperature is applied (llama.cpp's chain order).
        norm = math.log(sum(math.exp(lp) for _, lp in kept))
        cum = 0.0
        for _, lp in kept:
            cum += math.exp(lp - norm)
            if cum >= params.top_p:
                boundary = lp if boundary is None else max(boundary, lp)
                break
    if params.min_p > 0.0 and kept:
        floor = kept[0][1] + math.log(params.min_p)
        boundary = floor if boundary is None else max(boundary, floor)
    return boundary


def support_violation(position: RescoredPosition, params: GenerationParams) -> float:
    """How far (nats) a claimed token lies below the task's sampling support.

    The support is what llama.cpp's chain keeps before the seeded draw: top-k, then top-p on
    the survivors' renormalised probabilities, then min-p, computed on the verifier's logprobs.

    Args:
        position: The verifier's view of one claimed token (its ``top`` must be long enough to
            hold the top-k boundary; shorter lists make the check permissive).
        params: The task's sampling parameters.

    Returns:
        0.0 inside the support, else the logprob distance below its least likely token.
    """
    boundary = _support_boundary(position.top, params)
    if boundary is None:
        return 0.0
    return max(0.0, boundary - position.logprob)


def _replay_problem(
    replayed: Sequence[int], positions: Sequence[RescoredPosition], *, exact: bool = False
) -> str | None:
    """Why the claimed tokens are not what the task's seeded sampler draws (None: they are).

    Drift moves draws across the boundaries of the sorted distribution (and reorders near
    ties), so honest results disagree at up to 18% of positions on SmolLM2; a result drawn with
    another seed, or greedily, disagrees at 30-70%. An exact re-score sees the node's own
    logits, so there every draw must agree.
    """
    misses = sum(
        1 for picked, pos in zip(replayed, positions, strict=True) if picked != pos.token_id
    )
    # Two more for short results, where the share of a few chance misses swings widely.
    allowed = 0 if exact else math.floor(REPLAY_MISMATCH_FRACTION * len(positions)) + 2
    if misses > allowed:
        return (
            f"the task's seeded sampler draws another token at {misses} of {len(positions)} "
            f"positions (at most {allowed} allowed for drift): not drawn with the task's seed"
        )
    return None


def _position_drift(entry: TopK, position: RescoredPosition) -> float:
    """Largest committed-vs-verifier logprob difference at one position.

    A committed id missing from the verifier's longer list lies below that list's last
    logprob, which bounds its drift from below. A token the verifier ranks well above the
    committed entry's last one but the entry leaves out counts as drift too: a fingerprint
    may not hide a strong alternative.
    """
    theirs = dict(position.top)
    floor = position.top[-1][1] if position.top else 0.0
    worst = 0.0
    for tok, lp in entry:
        if tok in theirs:
            worst = max(worst, abs(theirs[tok] - lp))
        else:
            worst = max(worst, lp - floor)
    if entry and len(position.top) > len(entry):
        ours = {tok for tok, _ in entry}
        last = entry[-1][1]
        for tok, lp in position.top:
            if tok not in ours:
                worst = max(worst, lp - last)
    return worst


def _shape_problem(
    result: ResultBundle, params: GenerationParams, n_vocab: int
) -> tuple[str, str] | None:
    """The first structural fault of a claimed result, as ``(check, reason)``."""
    ids = result.token_ids
    if len(ids) > params.max_tokens:
        return "length", f"{len(ids)} tokens exceed the task's max_tokens={params.max_tokens}"
    bad = next((t for t in ids if not 0 <= t < n_vocab), None)
    if bad is not None:
        return "length", f"token id {bad} is outside the model's vocabulary of {n_vocab}"
    if len(result.fingerprint) != len(ids):
        return "fingerprint", (
            f"fingerprint has {len(result.fingerprint)} entries for {len(ids)} tokens"
        )
    k = min(FINGERPRINT_K, n_vocab)
    for i, (entry, tok) in enumerate(zip(result.fingerprint, ids, strict=True)):
        if len(entry) != k:
            return "fingerprint", f"fingerprint entry {i} has {len(entry)} pairs, not {k}"
        toks = [t for t, _ in entry]
        lps = [lp for _, lp in entry]
        if len(set(toks)) != k or any(not 0 <= t < n_vocab for t in toks):
            return "fingerprint", f"fingerprint entry {i} repeats ids or leaves the vocabulary"
        if any(not math.isfinite(lp) or lp > 1e-3 for lp in lps):
            return "fingerprint", f"fingerprint entry {i} holds a logprob that is not finite <= 0"
        if any(a < b - 1e-6 for a, b in zip(lps, lps[1:], strict=False)):
            return "fingerprint", f"fingerprint entry {i} is not sorted most likely first"
        # A sampled token may rank below the committed top-k; a greedy one is the first
        # (unless repeat penalties, which the raw-logit fingerprint does not see, moved it).
        if _plain_greedy(params) and tok not in toks:
            return "fingerprint", f"claimed token {i} ({tok}) is not in its fingerprint entry"
        if _plain_greedy(params) and toks[0] != tok and dict(entry)[tok] < lps[0]:
            return "fingerprint", (
                f"claimed token {i} ({tok}) is not its fingerprint's first choice in a greedy task"
            )
    return None


def _stops_here(
    llm: LLMBackend,
    result: ResultBundle,
    rescored: RescoreResult,
    params: GenerationParams,
    near_tie: float,
) -> str | None:
    """Why a result shorter than ``max_tokens`` should not have ended there (None: it should).

    A node ends early on an end-of-generation token, or cuts the tokens reaching into the first
    stop string; so the verifier's next token is an end token, or one whose text starts a stop
    string. Greedy tasks accept any next token within the near-tie margin of the top; sampled
    ones any token in the support.
    """
    if rescored.next_eog_logprob is None or not rescored.next_top:
        return None  # the backend cannot tell; the other checks still ran
    best = rescored.next_top[0][1]
    if _plain_greedy(params):
        allowed = [(t, lp) for t, lp in rescored.next_top if best - lp <= near_tie]
        end_ok = best - rescored.next_eog_logprob <= near_tie
    else:
        eog = RescoredPosition(
            token_id=0, logprob=rescored.next_eog_logprob, rank=1, top=rescored.next_top
        )
        end_ok = support_violation(eog, params) <= SUPPORT_NATS
        boundary = _support_boundary(rescored.next_top, params)
        allowed = [
            (t, lp)
            for t, lp in rescored.next_top
            if boundary is None or lp >= boundary - SUPPORT_NATS
        ]
    if end_ok:
        return None
    if params.stop:
        ids = list(result.token_ids)
        for tok, _ in allowed:
            more = llm.detokenize([*ids, tok])
            if not more.startswith(result.output):
                continue
            piece = more[len(result.output) :]
            for s in params.stop:
                if any(
                    s.startswith(piece[i:]) or piece[i:].startswith(s) for i in range(len(piece))
                ):
                    return None
    return (
        f"the result ends after {len(result.token_ids)} of max_tokens={params.max_tokens} "
        "tokens where the model goes on (truncated)"
    )


def _task_cid(task: TaskBundle, like: str) -> str:
    data = encode_bundle(task)
    return compute_cid(data, cid_version=0 if like.startswith("Qm") else 1)


def rescore_result(
    llm: LLMBackend,
    task: TaskBundle,
    result: ResultBundle,
    *,
    task_cid: str | None = None,
    mode: RescoreMode = "full",
    near_tie: float = NEAR_TIE_NATS,
    drift: float = DRIFT_NATS,
) -> RescoreVerdict:
    """Give a second opinion on ``result`` by re-scoring it with ``llm``.

    Args:
        llm: The verifier's backend; it must run the model the task pins.
        task: The task the result answers.
        result: The claimed result.
        task_cid: The task's CID as posted (default: computed from ``task``'s canonical bytes).
        mode: ``"full"`` re-scores every claimed token; ``"spot"`` re-scores the tokens up to
            the end of a :data:`SPOT_WIDTH` window picked by the result's own hash (all other
            checks still cover every token); ``"exact"`` re-evaluates every token one at a
            time as generation did and holds gaps and drift to :data:`EXACT_NATS`, closing
            the near-tie allowance (same llama.cpp build, prompts within one ``n_batch``;
            costs about a generation).
        near_tie: Greedy near-tie margin in nats (default: the calibrated one).
        drift: Allowed fingerprint drift in nats (default: the calibrated one).

    Returns:
        The verdict; a bad claim (forged signature, other task or model, wrong lengths,
        out-of-vocabulary ids, text that is not the tokens, tokens the model would not produce)
        is a verdict with ``passed=False``, not an exception.

    Raises:
        VerificationError: The verifier cannot give an opinion: it runs another model than the
            task pins (or, for a task that pins none, than the result names), or an exact
            re-score was asked of another backend or build.
        NodeError: The task needs inputs or recipes that nodes do not expand.
    """
    info = llm.info
    params = task.params
    if mode == "exact":
        if not isinstance(llm, LlamaCppBackend):
            raise VerificationError(
                "an exact re-score needs the in-process LlamaCppBackend; use mode='full'"
            )
        if result.llama_cpp_build != info.llama_cpp:
            raise VerificationError(
                "an exact re-score needs the node's llama.cpp build "
                f"({result.llama_cpp_build!r}), the verifier runs {info.llama_cpp!r}; "
                "use mode='full'"
            )
        near_tie = drift = EXACT_NATS
    ids = tuple(result.token_ids)
    claimed_ms = result.timings.generation_ms

    def failed(check: str, reason: str, **extra: float) -> RescoreVerdict:
        return RescoreVerdict(
            passed=False,
            top1_fraction=extra.get("top1", 0.0),
            fingerprint_agreement=extra.get("agreement", 0.0),
            tokens=len(ids),
            rescore_ms=extra.get("ms", 0.0),
            claimed_generation_ms=claimed_ms,
            reason=reason,
            check=check,
            mode=mode,
        )

    pinned = task.model.sha256
    if pinned is not None and info.sha256 != pinned:
        raise VerificationError(
            f"cannot re-score: the task pins model {pinned[:12]}…, the verifier runs "
            f"{info.sha256[:12]}…; use the same model file"
        )
    if pinned is None and info.sha256 != result.model_sha256:
        raise VerificationError(
            f"cannot re-score: the result was made with model {result.model_sha256[:12]}…, "
            f"the verifier runs {info.sha256[:12]}…; use the same model file"
        )
    try:
        _verify_signature(result)
    except (InvalidSignature, BundleError) as err:
        # A bundle that cannot even be encoded (NaN from a hostile decoder) has no signature.
        return failed("signature", f"the result's signature does not verify ({err})")
    expected_cid = task_cid if task_cid is not None else _task_cid(task, result.task_cid)
    if result.task_cid != expected_cid:
        return failed("task", f"the result answers task {result.task_cid}, not {expected_cid}")
    if result.model_sha256 != info.sha256:
        return failed(
            "model",
            f"the result names model {result.model_sha256[:12]}…, the task pins "
            f"{info.sha256[:12]}…",
        )
    shape = _shape_problem(result, params, info.n_vocab)
    if shape is not None:
        return failed(*shape)
    text = llm.detokenize(ids)
    if result.output != text or result.output_hash != output_hash(result.output):
        return failed(
            "text",
            "the output text is not the detokenization of the claimed tokens "
            f"({len(result.output)} characters claimed, the tokens spell {len(text)})",
        )
    if any(s in result.output for s in params.stop):
        return failed("text", "the output contains a stop string the node must have cut at")

    end = len(ids)
    if mode == "spot":
        # Positions before the window come with it at no extra model cost: check them too.
        _, end = spot_window(encode_bundle(result), len(ids))
    checked = ids[:end]
    query_k = _GREEDY_QUERY_K
    if not _plain_greedy(params):
        query_k = min(max(params.top_k + 1, _GREEDY_QUERY_K), _MAX_QUERY_K, info.n_vocab)
        if params.top_k == 0:
            query_k = min(_MAX_QUERY_K, info.n_vocab)
    prompt = task_prompt(task, llm)
    if isinstance(llm, LlamaCppBackend):
        # A window that ends before the last token never reads where the model would go on.
        rescored = llm.rescore(
            prompt,
            checked,
            k=query_k,
            sampling=params,
            stepwise=mode == "exact",
            score_next=end == len(ids) or mode == "exact",
        )
    else:
        rescored = llm.rescore(prompt, checked, k=query_k, sampling=params)
    positions = rescored.positions
    entries = result.fingerprint[:end]
    top1 = claimed_tokens_top1_fraction(rescored)
    agreement = fingerprint_agreement(entries, rescored, tolerance=drift)
    # A backend that reports no alternatives at a position (the stub) gives it no gap.
    gaps = [p.top[0][1] - p.logprob if p.top else 0.0 for p in positions]
    drifts = [_position_drift(e, p) for e, p in zip(entries, positions, strict=True)]
    max_gap = max(gaps, default=0.0)
    max_drift = max(drifts, default=0.0)
    found = _Findings()
    if _plain_greedy(params):
        worst = max(range(len(gaps)), key=gaps.__getitem__, default=None)
        if worst is not None and gaps[worst] > near_tie:
            found.fail(
                "token",
                f"claimed token {worst} trails the model's first choice by {gaps[worst]:.2f} "
                f"nats (near-tie margin {near_tie:.2f})",
            )
    else:
        violations = [support_violation(p, params) for p in positions]
        worst = max(range(len(violations)), key=violations.__getitem__, default=None)
        if worst is not None and violations[worst] > SUPPORT_NATS and params.repeat_penalty == 1.0:
            found.fail(
                "support",
                f"claimed token {worst} lies {violations[worst]:.2f} nats outside the task's "
                "sampling support",
            )
        if rescored.replayed:
            problem = _replay_problem(rescored.replayed, positions, exact=mode == "exact")
            if problem is not None:
                found.fail("replay", problem)
    worst_d = max(range(len(drifts)), key=drifts.__getitem__, default=None)
    if worst_d is not None and drifts[worst_d] > drift:
        found.fail(
            "drift",
            f"fingerprint entry {worst_d} differs from the model's logprobs by "
            f"{drifts[worst_d]:.2f} nats (tolerance {drift:.2f})",
        )
    if end == len(ids) and len(ids) < params.max_tokens:
        problem = _stops_here(llm, result, rescored, params, near_tie)
        if problem is not None:
            found.fail("end", problem)
    return RescoreVerdict(
        passed=not found.reasons,
        top1_fraction=top1,
        fingerprint_agreement=agreement,
        tokens=len(ids),
        rescore_ms=rescored.elapsed_ms,
        claimed_generation_ms=claimed_ms,
        reason="; ".join(found.reasons),
        check=found.checks[0] if found.checks else "",
        mode=mode,
        positions_checked=len(positions),
        max_gap=max_gap,
        max_drift=max_drift,
    )
