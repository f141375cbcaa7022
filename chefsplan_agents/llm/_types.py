"""Values every LLM backend speaks: parameters, generations, fingerprints, re-scores.

:class:`GenerationParams`, :class:`ChatMessage` and :class:`Timings` are the bundle layer's
(what a task or result bundle carries), re-exported so backends and bundles share one type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# One definition for what a task bundle carries and what a backend takes; re-exported here.
from chefsplan_agents.bundles._models import ChatMessage, GenerationParams, Timings
from chefsplan_agents.errors import InvalidGenerationParams, ModelHashMismatch

__all__ = [
    "ChatMessage",
    "DeterminismProfile",
    "Fingerprint",
    "Generation",
    "GenerationParams",
    "ModelInfo",
    "RescoreResult",
    "RescoredPosition",
    "Timings",
    "TopK",
    "claimed_tokens_top1_fraction",
    "fingerprint_agreement",
]

#: The top-k alternatives at one position: ``(token_id, logprob)`` pairs, most likely first.
TopK = tuple[tuple[int, float], ...]
#: One :data:`TopK` per generated position.
Fingerprint = tuple[TopK, ...]

FinishReason = Literal["stop", "length"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Generation(_Frozen):
    """One completion with what a verifier needs to check it.

    ``text == backend.detokenize(token_ids)`` always holds: when a stop string ends the
    completion, the tokens reaching into it are dropped from both.
    """

    text: str
    token_ids: tuple[int, ...]
    token_logprobs: tuple[float, ...] = Field(description="Logprob of each chosen token.")
    fingerprint: Fingerprint = Field(description="Top-k (token_id, logprob) per position.")
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    timings: Timings
    model_sha256: str


class RescoredPosition(_Frozen):
    """The verifier's view of one claimed token."""

    token_id: int
    logprob: float
    rank: int = Field(ge=1, description="1 + the number of tokens the model ranks strictly higher.")
    top: TopK


class RescoreResult(_Frozen):
    """One prefill pass over prompt + claimed continuation."""

    positions: tuple[RescoredPosition, ...]
    prompt_tokens: int
    elapsed_ms: float
    model_sha256: str
    next_top: TopK = Field(
        default=(),
        description="Top-k after the last claimed token: where an honest run went on or "
        "stopped (empty when the backend cannot tell).",
    )
    next_eog_logprob: float | None = Field(
        default=None,
        description="The best end-of-generation token's logprob after the last claimed token "
        "(None when the backend cannot tell).",
    )
    replayed: tuple[int, ...] = Field(
        default=(),
        description="For a sampled claim: the token the task's seeded sampler picks from the "
        "verifier's logits at each position (empty when not replayed).",
    )
    evaluated_tokens: int | None = Field(
        default=None,
        description="Tokens the model evaluated: prompt plus continuation, less the prompt "
        "prefix reused from the verifier's cache (None when the backend cannot tell).",
    )

    @property
    def fingerprint(self) -> Fingerprint:
        """The rescored top-k per continuation position."""
        return tuple(p.top for p in self.positions)

    @property
    def top1_fraction(self) -> float:
        """Share of claimed tokens the model ranks first (1.0 for an empty continuation)."""
        return claimed_tokens_top1_fraction(self)


class ModelInfo(_Frozen):
    """What a backend runs: enough to pin and to reproduce."""

    name: str
    path: str | None = None
    sha256: str
    n_ctx: int
    n_vocab: int
    n_threads: int | None = None
    n_batch: int | None = None
    quantization: str
    llama_cpp: str = Field(description="llama-cpp-python version, ggml version and CPU features.")
    backend: str


class DeterminismProfile(_Frozen):
    """The settings under which two runs of the same input give byte-identical outputs.

    Greedy decoding (or a fixed seed), no prompt cache (backends always re-evaluate the
    prompt), a pinned model hash and fixed thread and batch counts. Outside one profile,
    llama.cpp is not bit-identical, and verification has to tolerate drift (re-scoring).
    """

    model_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    n_threads: int = Field(ge=1)
    n_batch: int = Field(ge=1)
    seed: int = Field(default=0, ge=0, lt=2**32)

    @classmethod
    def of(cls, info: ModelInfo, *, seed: int = 0) -> DeterminismProfile:
        """The profile a backend runs under now."""
        return cls(
            model_sha256=info.sha256,
            n_threads=info.n_threads or 1,
            n_batch=info.n_batch or 1,
            seed=seed,
        )

    def params(self, **overrides: Any) -> GenerationParams:
        """Greedy generation parameters under this profile (``overrides`` for the rest)."""
        values: dict[str, Any] = {"temperature": 0.0, "seed": self.seed, "repeat_penalty": 1.0}
        values.update(overrides)
        return GenerationParams(**values)

    def check(self, info: ModelInfo) -> None:
        """Raise unless ``info`` describes a backend inside this profile.

        Raises:
            ModelHashMismatch: The backend runs another model file.
            InvalidGenerationParams: Thread or batch counts differ.
        """
        if info.sha256 != self.model_sha256:
            raise ModelHashMismatch(
                f"model {info.name} has sha256 {info.sha256}, the profile pins "
                f"{self.model_sha256}; load the pinned model file"
            )
        if info.n_threads is not None and info.n_threads != self.n_threads:
            raise InvalidGenerationParams(
                f"backend runs {info.n_threads} threads, the profile pins {self.n_threads}"
            )
        if info.n_batch is not None and info.n_batch != self.n_batch:
            raise InvalidGenerationParams(
                f"backend uses n_batch={info.n_batch}, the profile pins {self.n_batch}"
            )


def _position_overlap(claimed: TopK, rescored: TopK, tolerance: float) -> float:
    if not claimed:
        return 1.0 if not rescored else 0.0
    theirs = dict(rescored)
    hits = sum(1 for tok, lp in claimed if tok in theirs and abs(theirs[tok] - lp) <= tolerance)
    return hits / len(claimed)


def fingerprint_agreement(
    claimed: Sequence[TopK] | RescoreResult,
    rescored: Sequence[TopK] | RescoreResult,
    *,
    tolerance: float = 0.5,
) -> float:
    """How well a claimed top-k fingerprint matches a verifier's rescored one.

    Per position: the share of claimed ``(token_id, logprob)`` pairs whose token is in the
    rescored top-k with a logprob within ``tolerance`` nats. The result is the mean over the
    longer of the two fingerprints (missing positions count 0), so 1.0 means full agreement
    and a truncated or padded fingerprint scores lower. Two empty fingerprints agree (1.0).

    Args:
        claimed: The fingerprint a provider committed (``Generation.fingerprint``).
        rescored: The verifier's (``RescoreResult`` or its ``fingerprint``).
        tolerance: Allowed logprob drift in nats (llama.cpp is not bit-identical across
            hardware, thread counts and builds).

    Returns:
        Agreement in ``[0, 1]``.
    """
    a = claimed.fingerprint if isinstance(claimed, RescoreResult) else tuple(claimed)
    b = rescored.fingerprint if isinstance(rescored, RescoreResult) else tuple(rescored)
    n = max(len(a), len(b))
    if n == 0:
        return 1.0
    total = sum(_position_overlap(x, y, tolerance) for x, y in zip(a, b, strict=False))
    return total / n


def claimed_tokens_top1_fraction(rescored: RescoreResult) -> float:
    """Share of claimed tokens that the verifier's model ranks first.

    Greedy output re-scored under the same model gives 1.0 (up to ties); a tampered or
    sampled continuation gives less.
    """
    if not rescored.positions:
        return 1.0
    return sum(1 for p in rescored.positions if p.rank == 1) / len(rescored.positions)
