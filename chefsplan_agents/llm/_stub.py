"""A stand-in model that answers deterministically after a fixed delay.

:class:`StubBackend` implements :class:`~chefsplan_agents.llm.LLMBackend` without a model file:
its answer, token ids and fingerprint are derived from the prompt alone, and each completion
sleeps ``seconds_per_task`` (inference time without the CPU load). Load tests and fault tests
use it to measure the market and the node daemon rather than llama.cpp. Select it with the
model spec ``stub`` or ``stub:SECONDS`` wherever a node or devnet model is named.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

from chefsplan_agents.errors import ModelNotFound
from chefsplan_agents.llm._base import BackendBase, OnToken, check_context, render_chat
from chefsplan_agents.llm._types import (
    ChatMessage,
    Generation,
    GenerationParams,
    ModelInfo,
    RescoredPosition,
    RescoreResult,
    Timings,
)

__all__ = ["STUB_MODEL_SHA256", "StubBackend", "is_stub_spec", "stub_seconds"]

#: The fixed sha256 every stub backend reports: tasks naming it are accepted by stub nodes.
STUB_MODEL_SHA256 = hashlib.sha256(b"chefsplan-agents stub model v1").hexdigest()

_STUB = "stub"
_DEFAULT_SECONDS = 1.0
# Token ids are the UTF-8 bytes of the text: a 256-entry vocabulary, lossless both ways.
_N_VOCAB = 256


def is_stub_spec(spec: str) -> bool:
    """Whether a model spec names the stub model (``stub`` or ``stub:SECONDS``)."""
    return spec == _STUB or spec.startswith(_STUB + ":")


def stub_seconds(spec: str) -> float:
    """The delay a ``stub`` / ``stub:SECONDS`` spec asks for (``stub`` alone: 1 s).

    Raises:
        ModelNotFound: The spec is not a stub spec, or SECONDS is not a number >= 0.
    """
    if not is_stub_spec(spec):
        raise ModelNotFound(f"{spec!r} is not a stub model spec; use 'stub' or 'stub:SECONDS'")
    _, _, raw = spec.partition(":")
    if not raw:
        return _DEFAULT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise ModelNotFound(
            f"model spec {spec!r}: SECONDS must be a number >= 0 (e.g. 'stub:2' or 'stub:0.5')"
        )
    return seconds


class StubBackend(BackendBase):
    """A deterministic fake model that takes ``seconds_per_task`` per completion.

    Args:
        seconds_per_task: Time each :meth:`complete` sleeps (the simulated inference).
        n_ctx: The context length it reports and enforces.
        name: The model name it reports.

    Raises:
        ModelNotFound: ``seconds_per_task`` is negative.
    """

    def __init__(
        self, seconds_per_task: float = _DEFAULT_SECONDS, *, n_ctx: int = 2048, name: str = _STUB
    ) -> None:
        if not seconds_per_task >= 0:
            raise ModelNotFound(f"stub seconds_per_task must be >= 0 (got {seconds_per_task})")
        self.seconds_per_task = float(seconds_per_task)
        self._info = ModelInfo(
            name=name,
            sha256=STUB_MODEL_SHA256,
            n_ctx=n_ctx,
            n_vocab=_N_VOCAB,
            n_threads=1,
            n_batch=1,
            quantization="none",
            llama_cpp="stub",
            backend="stub",
        )

    @classmethod
    def from_spec(cls, spec: str, *, n_ctx: int = 2048) -> StubBackend:
        """A stub backend from ``stub`` / ``stub:SECONDS``.

        Raises:
            ModelNotFound: The spec is malformed.
        """
        return cls(stub_seconds(spec), n_ctx=n_ctx)

    def __repr__(self) -> str:
        return f"<StubBackend {self.seconds_per_task:g} s/task>"

    @property
    def info(self) -> ModelInfo:
        """The fake model's facts (fixed sha256 :data:`STUB_MODEL_SHA256`)."""
        return self._info

    def answer(self, prompt: str, max_tokens: int) -> list[int]:
        """The token ids the stub generates for ``prompt`` (at most ``max_tokens``)."""
        digest = hashlib.sha256(prompt.encode("utf-8")).hexdigest()
        return list(f"stub answer {digest[:16]}".encode())[:max_tokens]

    def complete(
        self,
        prompt: str,
        params: GenerationParams | None = None,
        *,
        on_token: OnToken | None = None,
    ) -> Generation:
        """Answer from the prompt's hash, one token at a time over ``seconds_per_task``.

        Raises:
            ContextOverflow: Prompt tokens plus ``max_tokens`` exceed the context.
        """
        p = params or GenerationParams()
        n_prompt = len(self.tokenize(prompt))
        check_context(n_prompt, p.max_tokens, self._info.n_ctx)
        started = time.monotonic()
        ids = self.answer(prompt, p.max_tokens)
        # Tokens arrive spread over the task's time, as from a real model (``on_token`` may
        # raise to stop early).
        for i, tok in enumerate(ids):
            time.sleep(
                max(started + self.seconds_per_task * (i + 1) / len(ids) - time.monotonic(), 0)
            )
            if on_token is not None:
                on_token(tok, bytes([tok]).decode("latin-1"))
        if not ids:
            time.sleep(self.seconds_per_task)
        elapsed = time.monotonic() - started
        return Generation(
            text=self.detokenize(ids),
            token_ids=tuple(ids),
            token_logprobs=tuple(0.0 for _ in ids),
            fingerprint=tuple(((tok, 0.0),) for tok in ids),
            finish_reason="length" if len(ids) == p.max_tokens else "stop",
            prompt_tokens=n_prompt,
            completion_tokens=len(ids),
            timings=Timings.measure(0.0, elapsed, n_prompt, len(ids)),
            model_sha256=self._info.sha256,
        )

    def format_chat(self, messages: Sequence[ChatMessage]) -> str:
        """``messages`` in the chatml template, the assistant's turn opened."""
        return render_chat(None, messages)

    def tokenize(self, text: str) -> list[int]:
        """The UTF-8 bytes of ``text``."""
        return list(text.encode("utf-8"))

    def detokenize(self, token_ids: Sequence[int]) -> str:
        """The text of byte token ids (invalid UTF-8 replaced)."""
        return bytes(token_ids).decode("utf-8", errors="replace")

    def rescore(
        self,
        prompt: str | Sequence[int],
        continuation: Sequence[int],
        k: int = 5,
        *,
        sampling: GenerationParams | None = None,
    ) -> RescoreResult:
        """Rank each claimed token 1 where it is the stub's own answer, else 2.

        Raises:
            ContextOverflow: Prompt plus continuation exceed the context.
        """
        text = prompt if isinstance(prompt, str) else self.detokenize(prompt)
        n_prompt = len(self.tokenize(text))
        check_context(n_prompt, len(continuation), self._info.n_ctx, what="continuation")
        expected = self.answer(text, max(len(continuation), 1))
        positions = []
        for i, tok in enumerate(continuation):
            own = expected[i] if i < len(expected) else None
            rank = 1 if own == tok else 2
            top = ((own, 0.0),) if own is not None else ()
            positions.append(
                RescoredPosition(
                    token_id=int(tok), logprob=0.0 if rank == 1 else -10.0, rank=rank, top=top[:k]
                )
            )
        return RescoreResult(
            positions=tuple(positions),
            prompt_tokens=n_prompt,
            elapsed_ms=0.0,
            model_sha256=self._info.sha256,
        )

    def close(self) -> None:
        """Nothing to free."""
