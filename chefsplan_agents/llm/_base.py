"""The ``LLMBackend`` protocol and the pieces its backends share."""

from __future__ import annotations

import abc
import functools
import math
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

from chefsplan_agents.errors import ContextOverflow
from chefsplan_agents.llm._types import (
    ChatMessage,
    Generation,
    GenerationParams,
    ModelInfo,
    RescoredPosition,
    RescoreResult,
    TopK,
)

__all__ = ["LLMBackend", "OnToken"]

#: Streaming callback: called with each generated token id and its text piece.
OnToken = Callable[[int, str], None]


@runtime_checkable
class LLMBackend(Protocol):
    """A local language model: generate, tokenize and re-score.

    Backends are context managers; ``close()`` frees the model or the connection.
    """

    @property
    def info(self) -> ModelInfo:
        """The model and runtime this backend runs."""
        ...

    def complete(
        self,
        prompt: str,
        params: GenerationParams | None = None,
        *,
        on_token: OnToken | None = None,
    ) -> Generation:
        """Continue ``prompt`` (special tokens such as ``<|im_start|>`` are parsed).

        Raises:
            ContextOverflow: Prompt tokens plus ``max_tokens`` exceed the context (checked
                before running).
            GenerationError: The model failed while generating.
        """
        ...

    def chat(
        self,
        messages: Sequence[ChatMessage],
        params: GenerationParams | None = None,
        *,
        on_token: OnToken | None = None,
    ) -> Generation:
        """Answer a conversation: :meth:`complete` of :meth:`format_chat`."""
        ...

    def format_chat(self, messages: Sequence[ChatMessage]) -> str:
        """``messages`` in the model's chat template, the assistant's turn opened (the prompt
        to re-score a chat answer against)."""
        ...

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` as a prompt (BOS as the model wants, specials parsed)."""
        ...

    def detokenize(self, token_ids: Sequence[int]) -> str:
        """Text of ``token_ids`` (special tokens omitted)."""
        ...

    def rescore(
        self,
        prompt: str | Sequence[int],
        continuation: Sequence[int],
        k: int = 5,
        *,
        sampling: GenerationParams | None = None,
    ) -> RescoreResult:
        """Score a claimed continuation in one prefill pass over prompt + continuation.

        Args:
            prompt: Prompt text (tokenized like :meth:`complete`) or its token ids.
            continuation: The claimed generated token ids.
            k: Alternatives to report per position.
            sampling: A sampled task's parameters; a backend that can replays its seeded
                sampler over its own logits (:attr:`RescoreResult.replayed`), others ignore it.

        Returns:
            For each continuation position: the claimed token's logprob and rank, and the top-k.

        Raises:
            ContextOverflow: Prompt plus continuation exceed the context.
        """
        ...

    def close(self) -> None:
        """Free the model or the connection."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class BackendBase(abc.ABC):
    """What every built-in backend shares: :meth:`chat` is :meth:`complete` of
    :meth:`format_chat`, and ``with`` closes the backend."""

    @abc.abstractmethod
    def complete(
        self,
        prompt: str,
        params: GenerationParams | None = None,
        *,
        on_token: OnToken | None = None,
    ) -> Generation: ...

    @abc.abstractmethod
    def format_chat(self, messages: Sequence[ChatMessage]) -> str: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def chat(
        self,
        messages: Sequence[ChatMessage],
        params: GenerationParams | None = None,
        *,
        on_token: OnToken | None = None,
    ) -> Generation:
        """Answer a conversation formatted with the model's chat template."""
        return self.complete(self.format_chat(messages), params, on_token=on_token)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def check_context(n_prompt: int, n_more: int, n_ctx: int, *, what: str = "max_tokens") -> None:
    """Raise :class:`ContextOverflow` unless ``n_prompt + n_more`` fits in ``n_ctx``."""
    if n_prompt + n_more > n_ctx:
        raise ContextOverflow(
            f"prompt of {n_prompt} tokens plus {what}={n_more} exceeds the model context of "
            f"{n_ctx} tokens; shorten the prompt, lower {what} or raise n_ctx"
        )


def log_softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Row-wise log-softmax (stable), returned in float64.

    ``exp`` runs in float32 with a float64 sum: over a 49k vocabulary that is ~25x faster than
    float64 throughout, and the error (~1e-6 nats) is far below any tolerance a verifier uses.
    It runs once per generated token, so it is on the node's hot path.
    """
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - np.max(x, axis=-1, keepdims=True)
    lse = np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True, dtype=np.float64))
    out: npt.NDArray[np.float64] = shifted.astype(np.float64) - lse
    return out


def top_k_of(logprobs: npt.NDArray[np.floating[Any]], k: int) -> TopK:
    """The ``k`` most likely ``(token_id, logprob)`` pairs; ties broken by lower id."""
    return tuple((int(i), float(logprobs[i])) for i in _top_ids(logprobs, k))


# Top-k candidates are looked for among the values this close to the best one (nats): next-token
# distributions are peaked, so a handful qualify and one pass plus a tiny sort finds them. When
# fewer than k do, wider margins are tried; when many do, a partial sort keeps the top k.
_TOP_MARGINS = (8.0, 12.0, 16.0)
_TOP_MAX_CANDIDATES = 256


def _top_ids(values: npt.NDArray[np.floating[Any]], k: int) -> list[int]:
    """Ids of the ``k`` largest values, largest first, ties broken by lower id."""
    k = min(k, values.shape[-1])
    if k <= 0:
        return []
    best = int(np.argmax(values))  # the lowest id among equal maxima
    if k == 1:
        return [best]
    for margin in _TOP_MARGINS:
        candidates = np.flatnonzero(values >= values[best] - margin)
        if candidates.size >= k:
            break
    else:
        # Fewer than k values within reach of the best (or NaNs): k argmax passes, which
        # return the lowest id among equals too.
        work = np.array(values, dtype=values.dtype, copy=True)
        ids = []
        for _ in range(k):
            i = int(np.argmax(work))
            ids.append(i)
            work[i] = -np.inf
        return ids
    scores = values[candidates]
    if candidates.size > _TOP_MAX_CANDIDATES:
        # Keep the values at least as large as the k-th largest: the top k and their ties.
        kth = np.partition(scores, scores.size - k)[scores.size - k]
        keep = scores >= kth
        candidates, scores = candidates[keep], scores[keep]
    order = np.lexsort((candidates, -scores))
    return [int(i) for i in candidates[order[:k]]]


def position_logprobs(logits: npt.NDArray[np.float32], token: int, k: int) -> tuple[float, TopK]:
    """For one generated position: the chosen token's logprob and the top-k fingerprint.

    The node's per-token hot path: it needs only the log-normaliser, not a full log-softmax row,
    and agrees with :func:`log_softmax` + :func:`top_k_of` to ~1e-6 nats with the same ids.
    The normaliser is summed in float32 (numpy sums pairwise: ~1e-7 relative error over a 49k
    vocabulary), half the cost of a float64 sum.
    """
    x = np.asarray(logits, dtype=np.float32)
    top_ids = _top_ids(x, k)
    m = float(x[top_ids[0]]) if top_ids else float(x.max())
    shifted = np.exp(x - np.float32(m))
    lse = m + math.log(float(np.add.reduce(shifted)))
    top = tuple((i, float(x[i]) - lse) for i in top_ids)
    return float(x[token]) - lse, top


def rescored_positions(
    logprobs_rows: npt.NDArray[np.float64], continuation: Sequence[int], k: int
) -> tuple[RescoredPosition, ...]:
    """Rank each claimed token in the row of logprobs that predicted it."""
    out = []
    for row, tok in zip(logprobs_rows, continuation, strict=True):
        lp = float(row[tok])
        rank = 1 + int(np.count_nonzero(row > lp))
        out.append(RescoredPosition(token_id=int(tok), logprob=lp, rank=rank, top=top_k_of(row, k)))
    return tuple(out)


def cut_at_stop(pieces: Sequence[str], stop: Sequence[str]) -> tuple[int, bool]:
    """How many tokens to keep so that the text ends before the first stop string.

    Args:
        pieces: The text of each generated token, in order.
        stop: Stop strings.

    Returns:
        ``(n_keep, stopped)``: the tokens wholly before the first stop string, and whether one
        occurs at all.
    """
    if not stop:
        return len(pieces), False
    text = "".join(pieces)
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    if not hits:
        return len(pieces), False
    cut = min(hits)
    used = 0
    for n, piece in enumerate(pieces):
        if used + len(piece) > cut:
            return n, True
        used += len(piece)
    return len(pieces), True


#: Used when a model file carries no chat template.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def render_chat(
    template: str | None, messages: Sequence[ChatMessage], *, bos: str = "", eos: str = ""
) -> str:
    """Format a conversation with a model's Jinja chat template (sandboxed), ending with the
    assistant's turn opened."""
    import jinja2

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    try:
        return str(
            _compiled_template(template or CHATML_TEMPLATE).render(
                messages=[m.model_dump() for m in messages],
                add_generation_prompt=True,
                bos_token=bos,
                eos_token=eos,
                raise_exception=raise_exception,
            )
        )
    except jinja2.TemplateError as err:
        from chefsplan_agents.errors import GenerationError

        raise GenerationError(f"the model's chat template failed: {err}") from err


@functools.lru_cache(maxsize=16)
def _compiled_template(template: str) -> Any:
    """A chat template compiled once per text (compiling costs milliseconds, rendering
    microseconds)."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True
    )
    return env.from_string(template)
