"""``LlamaCppBackend``: llama.cpp in process, through llama-cpp-python."""

from __future__ import annotations

import codecs
import contextlib
import gc
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from chefsplan_agents.errors import (
    GenerationError,
    InvalidGenerationParams,
    LLMError,
    ModelHashMismatch,
    ModelLoadError,
)
from chefsplan_agents.llm._base import (
    BackendBase,
    OnToken,
    check_context,
    cut_at_stop,
    log_softmax,
    position_logprobs,
    render_chat,
    rescored_positions,
    top_k_of,
)
from chefsplan_agents.llm._models import ModelFile, resolve_model
from chefsplan_agents.llm._types import (
    ChatMessage,
    Generation,
    GenerationParams,
    ModelInfo,
    RescoreResult,
    Timings,
    TopK,
)

__all__ = ["LlamaCppBackend", "llama_cpp_build"]

# Positions fingerprinted together (see _generate): 16 rows of a 49k vocabulary are 3 MB.
_FINGERPRINT_BATCH = 16


@contextlib.contextmanager
def _no_gc_pauses() -> Iterator[None]:
    """Hold Python's cyclic garbage collector off while tokens are generated.

    The token loop allocates a few small objects per token; in a process with a large heap
    (an in-process chain, an agent app) they can trigger a full collection mid-generation,
    which stalls the loop for tens of milliseconds. What it allocates is freed by reference
    counting anyway; cycles, if any, are collected once the collector is back on.
    """
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


# llama.cpp's CPU backend runs on OpenMP. Its wait policy is left to the environment: OpenMP's
# default (threads spin briefly between steps) generated SmolLM2 at ~117 tokens/s on an idle
# 2-core machine, OMP_WAIT_POLICY=PASSIVE at ~41; with two generating processes sharing those
# cores it was the other way round (~31 vs ~55 each). A node usually has its machine to itself;
# operators who share one set OMP_WAIT_POLICY=PASSIVE (see docs/operators.md).


def llama_cpp_build() -> str:
    """llama-cpp-python's version and the CPU features its llama.cpp was built with."""
    import llama_cpp

    raw = llama_cpp.llama_print_system_info()
    system = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return f"llama-cpp-python {llama_cpp.__version__} | {system.strip(' |')}"


def quantization_name(file_type: str | None) -> str:
    """A GGUF ``general.file_type`` number as a name such as ``Q4_1`` or ``F32``."""
    import gguf

    if file_type is None:
        return "unknown"
    try:
        name = str(gguf.LlamaFileType(int(file_type)).name)
    except ValueError:
        return f"file_type {file_type}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _as_model_file(
    model: ModelFile | str | Path, sha256: str | None, cache_dir: Path | None
) -> ModelFile:
    if isinstance(model, ModelFile):
        if sha256 is not None and model.sha256 != sha256.lower():
            raise ModelHashMismatch(
                f"model file {model.path} has sha256 {model.sha256}, expected {sha256.lower()}"
            )
        return model
    return resolve_model(model, sha256=sha256, cache_dir=cache_dir)


class LlamaCppBackend(BackendBase):
    """Runs a GGUF model in this process.

    Every call evaluates its prompt from scratch (no prompt cache), so under one
    :class:`~chefsplan_agents.llm.DeterminismProfile` (same model file, thread and batch counts,
    greedy or a fixed seed) two runs give byte-identical text and token ids.

    Example:
        >>> with LlamaCppBackend("tiny") as llm:  # doctest: +SKIP
        ...     llm.complete("Hi").text
        'CHEFSPLAN OK'

    Args:
        model: A :class:`ModelFile`, a ``.gguf`` path or a known name (see ``resolve_model``).
        n_ctx: Context length in tokens (``info.n_ctx``; llama.cpp may reserve more, but
            llama-cpp-python's buffers hold this many).
        n_threads: CPU threads for generation and prefill.
        n_batch: Prompt tokens evaluated per batch.
        sha256: Pin the model file's hash.
        cache_dir: Where built models and the hash cache live.
        reuse_rescore_prompt: Let :meth:`rescore` keep the evaluated prompt between calls and
            evaluate only what differs from the last re-score's prompt (its longest common
            prefix is reused). Off: every re-score prefills its prompt from scratch.

    Raises:
        ModelNotFound: No such file or name.
        ModelHashMismatch: The file differs from the pinned hash.
        ModelLoadError: llama.cpp cannot load the file.
    """

    def __init__(
        self,
        model: ModelFile | str | Path,
        *,
        n_ctx: int = 2048,
        n_threads: int = 2,
        n_batch: int = 512,
        sha256: str | None = None,
        cache_dir: Path | None = None,
        reuse_rescore_prompt: bool = True,
    ) -> None:
        import llama_cpp

        if n_ctx < 8 or n_threads < 1 or n_batch < 1:
            raise InvalidGenerationParams(
                f"n_ctx={n_ctx}, n_threads={n_threads}, n_batch={n_batch}: "
                "need n_ctx >= 8 and at least one thread and one batch token"
            )
        self._file = _as_model_file(model, sha256, cache_dir)
        self._lock = threading.Lock()
        try:
            self._llm: Any = llama_cpp.Llama(
                model_path=str(self._file.path),
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                n_batch=n_batch,
                # Sized for every position (benchmarks read them all through ``llama``);
                # generation runs with only the last position's logits, see _set_all_logits,
                # and re-scoring asks llama.cpp for the rows it reads, see _eval_rows.
                logits_all=True,
                seed=0,
                verbose=False,
            )
            self._set_all_logits(False)
            self._n_vocab = int(self._llm.n_vocab())
        except (ValueError, RuntimeError, OSError) as err:
            raise ModelLoadError(
                f"llama.cpp cannot load {self._file.path} ({err}); "
                "check that it is a complete GGUF file for a supported architecture"
            ) from err
        meta: dict[str, str] = dict(self._llm.metadata or {})
        self._template = meta.get("tokenizer.chat_template")
        self._add_bos = bool(self._llm._model.add_bos_token())
        self._vocab = self._llm._model.vocab
        self._is_eog = llama_cpp.llama_vocab_is_eog
        self._closed = False
        self._rows: npt.NDArray[np.float32] | None = None
        self._eog: npt.NDArray[np.intp] | None = None
        self._rescore_head: tuple[int, ...] | None = None
        self._reuse = reuse_rescore_prompt
        self._info = ModelInfo(
            name=meta.get("general.name") or self._file.name,
            path=str(self._file.path),
            sha256=self._file.sha256,
            # llama.cpp rounds the context up (to 256 at least) but llama-cpp-python sizes its
            # token and logit buffers to the n_ctx asked for: a prompt between the two passes a
            # check against the rounded size and then fails inside eval with a numpy error.
            n_ctx=min(int(self._llm.n_ctx()), int(self._llm.context_params.n_ctx)),
            n_vocab=int(self._llm.n_vocab()),
            n_threads=n_threads,
            n_batch=n_batch,
            quantization=quantization_name(meta.get("general.file_type")),
            llama_cpp=llama_cpp_build(),
            backend="llama-cpp",
        )

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        """The model and runtime this backend runs."""
        return self._info

    @property
    def llama(self) -> Any:
        """The ``llama_cpp.Llama`` this backend runs, for direct calls beside it.

        Shared, not copied: a direct call resets its context like every call of this backend
        does, and must not run while the backend generates on another thread.
        """
        self._check_open()
        self._rescore_head = None  # a direct call may rewrite the cache a re-score would reuse
        return self._llm

    @property
    def model_file(self) -> ModelFile:
        """The loaded model file."""
        return self._file

    def close(self) -> None:
        """Free the model (idempotent)."""
        if not self._closed:
            self._closed = True
            self._llm.close()

    def _check_open(self) -> None:
        if self._closed:
            raise LLMError(f"backend for {self._info.name} is closed; open a new one")

    # --- tokens ---------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` as a prompt (BOS if the model wants one, specials parsed)."""
        self._check_open()
        return [int(t) for t in self._llm.tokenize(text.encode("utf-8"), self._add_bos, True)]

    def detokenize(self, token_ids: Sequence[int]) -> str:
        """Text of ``token_ids`` (special tokens omitted)."""
        self._check_open()
        self._check_ids(token_ids)
        raw: bytes = self._llm.detokenize(list(token_ids))
        return raw.decode("utf-8", errors="replace")

    def _check_ids(self, token_ids: Sequence[int]) -> None:
        n = self._info.n_vocab
        bad = next((t for t in token_ids if not 0 <= int(t) < n), None)
        if bad is not None:
            raise InvalidGenerationParams(
                f"token id {bad} is outside the vocabulary of {n} tokens of {self._info.name}"
            )

    # --- generation -----------------------------------------------------------------------

    def complete(
        self,
        prompt: str,
        params: GenerationParams | None = None,
        *,
        on_token: OnToken | None = None,
        grammar: str | None = None,
    ) -> Generation:
        """Continue ``prompt``; see :meth:`LLMBackend.complete`.

        ``on_token`` is called on the generating thread after each token; an exception it
        raises stops generation there and propagates unchanged (how callers cancel a stream).

        Args:
            prompt: The prompt text (special tokens parsed).
            params: Sampling parameters (greedy under the determinism profile by default).
            on_token: Called with each generated token id and its text piece.
            grammar: A GBNF grammar (root rule ``root``) the output must follow: tokens the
                grammar forbids are never sampled, and the end of generation is allowed only
                where the grammar is complete. ``max_tokens`` still bounds the output, so a
                cut-off result may be incomplete (``finish_reason == "length"``).

        Raises:
            InvalidGenerationParams: The prompt is empty or the grammar does not parse.
            ContextOverflow: Prompt tokens plus ``max_tokens`` exceed the context.
            GenerationError: llama.cpp failed while generating.
        """
        self._check_open()
        params = params or GenerationParams()
        tokens = self.tokenize(prompt)
        if not tokens:
            raise InvalidGenerationParams("prompt is empty; give at least one character")
        check_context(len(tokens), params.max_tokens, self._info.n_ctx)
        compiled = self._compile_grammar(grammar) if grammar is not None else None
        with self._lock, _no_gc_pauses():
            try:
                return self._generate(tokens, params, on_token, compiled)
            except RuntimeError as err:
                raise GenerationError(f"llama.cpp failed while generating: {err}") from err

    def format_chat(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt :meth:`chat` sends: ``messages`` in the model's chat template."""
        self._check_open()
        bos = self._piece(int(self._llm.token_bos()))
        eos = self._piece(int(self._llm.token_eos()))
        return render_chat(self._template, messages, bos=bos, eos=eos)

    @property
    def chat_template(self) -> str | None:
        """The model file's Jinja chat template (``None`` when it has none and ChatML is used)."""
        return self._template

    def _compile_grammar(self, grammar: str) -> Any:
        """``grammar`` as a ``LlamaGrammar``, checked by llama.cpp's own parser first.

        llama.cpp answers a grammar it cannot parse with a null sampler (and a log line), which
        must never reach the sampler chain.
        """
        import llama_cpp
        from llama_cpp.llama_grammar import LlamaGrammar

        probe = llama_cpp.llama_sampler_init_grammar(self._vocab, grammar.encode("utf-8"), b"root")
        if not probe:
            raise InvalidGenerationParams(
                "the grammar does not parse as GBNF with a 'root' rule; fix the grammar text"
            )
        llama_cpp.llama_sampler_free(probe)
        return LlamaGrammar.from_string(grammar, verbose=False)

    def _piece(self, token: int) -> str:
        if token < 0:
            return ""
        raw: bytes = self._llm._model.token_get_text(token)
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)

    def _generate(
        self,
        tokens: list[int],
        params: GenerationParams,
        on_token: OnToken | None,
        grammar: Any = None,
    ) -> Generation:
        llm = self._llm
        n_prompt = len(tokens)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        ids: list[int] = []
        chosen: list[float] = []
        fingerprint = []
        pieces: list[str] = []
        text = ""
        finish = "length"
        llm.reset()  # no prompt cache: every call evaluates its prompt from scratch
        self._rescore_head = None
        llm.set_seed(params.seed)
        start = time.perf_counter()
        first: float | None = None
        stream = llm.generate(
            tokens,
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=params.min_p,
            temp=params.temperature,
            repeat_penalty=params.repeat_penalty,
            reset=True,
            grammar=grammar,
        )
        # Each position's logits are copied aside and fingerprinted in batches: the same
        # numbers, but the numpy work runs back to back with warm caches instead of between two
        # decodes, where it took ~190 us a token here against ~115 us batched (SmolLM2).
        rows = self._logit_rows()
        batched: list[int] = []

        def fingerprint_batch() -> None:
            for row, token in zip(rows, batched, strict=False):
                logprob, top = position_logprobs(row, token, params.logprobs)
                chosen.append(logprob)
                fingerprint.append(top)
            batched.clear()

        try:
            for tok in stream:
                if first is None:
                    first = time.perf_counter()
                if self._is_eog(self._vocab, tok):
                    finish = "stop"
                    break
                np.copyto(rows[len(batched)], self._last_logits())
                batched.append(int(tok))
                if len(batched) == len(rows):
                    fingerprint_batch()
                ids.append(int(tok))
                piece = decoder.decode(llm.detokenize([tok]))
                pieces.append(piece)
                text += piece
                if on_token is not None:
                    on_token(int(tok), piece)
                if params.stop and any(s in text for s in params.stop):
                    finish = "stop"
                    break
                if len(ids) >= params.max_tokens:
                    break
        finally:
            stream.close()
        fingerprint_batch()
        end = time.perf_counter()
        keep, stopped = cut_at_stop(pieces, params.stop)
        if stopped:
            ids, chosen, fingerprint = ids[:keep], chosen[:keep], fingerprint[:keep]
        first = first if first is not None else end
        return Generation(
            text=self.detokenize(ids),
            token_ids=tuple(ids),
            token_logprobs=tuple(chosen),
            fingerprint=tuple(fingerprint),
            finish_reason="stop" if finish == "stop" else "length",
            prompt_tokens=n_prompt,
            completion_tokens=len(ids),
            timings=Timings.measure(first - start, end - first, n_prompt, len(ids)),
            model_sha256=self._info.sha256,
        )

    # --- verification ---------------------------------------------------------------------

    def _set_all_logits(self, on: bool) -> None:
        # Computing logits for every prompt position runs the vocabulary projection (a fifth of
        # SmolLM2's weights) once per prompt token and copies each row out; generation needs
        # only the newest position, re-scoring needs them all. llama-cpp-python 0.3.x reads this
        # flag on every eval; the model was built with every-position buffers, so both modes fit.
        self._llm._logits_all = on

    def _logit_rows(self) -> npt.NDArray[np.float32]:
        """Scratch rows for a batch of positions' logits (allocated once, under the lock)."""
        if self._rows is None:
            self._rows = np.empty((_FINGERPRINT_BATCH, self._n_vocab), dtype=np.float32)
        return self._rows

    def _last_logits(self) -> npt.NDArray[np.float32]:
        """Logits of the newest evaluated position: the ones the last sampled token came from."""
        import llama_cpp

        ptr = llama_cpp.llama_get_logits_ith(self._llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))

    def rescore(
        self,
        prompt: str | Sequence[int],
        continuation: Sequence[int],
        k: int = 5,
        *,
        sampling: GenerationParams | None = None,
        stepwise: bool = False,
        score_next: bool = True,
    ) -> RescoreResult:
        """Score a claimed continuation in one prefill pass; see :meth:`LLMBackend.rescore`.

        Logits are computed only where a verifier reads them: for each continuation position
        and the one after it (where the model would end or go on), never for the prompt's own
        positions: the vocabulary projection is a fifth of SmolLM2's weights per position.

        Args:
            prompt: Prompt text (tokenized like :meth:`complete`) or its token ids.
            continuation: The claimed generated token ids.
            k: Alternatives to report per position.
            sampling: The task's parameters. When they sample (``temperature > 0``) or
                penalize repeats, the sampler chain a node builds for them, seeded with
                ``sampling.seed``, is run over the verifier's own logits position by position
                (fed the claimed tokens), and what it picks is reported in
                :attr:`RescoreResult.replayed`.
            stepwise: Evaluate the prompt in one prefill and then the claimed tokens one at a
                time, exactly as generation does: the logits are then bit-identical to a node's
                on the same llama.cpp build (any thread count), where a batched prefill drifts
                by up to ~0.4 nats. Costs about as much as generating.
            score_next: Score the position after the continuation too
                (:attr:`RescoreResult.next_top`, ``next_eog_logprob``); without it they are
                empty and one logits row is saved.

        Raises:
            InvalidGenerationParams: ``k < 1``, an empty prompt or an id outside the vocabulary.
            ContextOverflow: Prompt plus continuation exceed the context.
            GenerationError: llama.cpp failed while evaluating.
        """
        self._check_open()
        if k < 1:
            raise InvalidGenerationParams(f"k={k}: re-scoring needs at least one alternative")
        ptoks = self.tokenize(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        cont = [int(t) for t in continuation]
        self._check_ids(ptoks)
        self._check_ids(cont)
        if not ptoks:
            raise InvalidGenerationParams("prompt is empty; re-scoring needs the prompt")
        check_context(len(ptoks), len(cont), self._info.n_ctx, what="continuation length")
        start = time.perf_counter()
        with self._lock:
            try:
                evaluated = len(ptoks) + len(cont)
                if stepwise:
                    raw = self._stepwise_logits(ptoks, cont)
                else:
                    evaluated = self._seek_prompt(ptoks[:-1]) + 1 + len(cont)
                    # Batch index i predicts cont[i] (index 0 is the prompt's last token).
                    n_rows = len(cont) + 1 if score_next else len(cont)
                    raw = self._eval_rows(ptoks[-1:] + cont, range(n_rows))
            except RuntimeError as err:
                raise GenerationError(f"llama.cpp failed while re-scoring: {err}") from err
            replayed: tuple[int, ...] = ()
            if sampling is not None and (not sampling.greedy or sampling.repeat_penalty != 1.0):
                replayed = self._replay_sampler(raw[: len(cont)], cont, sampling)
        rows = log_softmax(raw) if len(raw) else raw.astype(np.float64)
        positions = rescored_positions(rows[: len(cont)], cont, k) if cont else ()
        next_top: TopK = ()
        next_eog: float | None = None
        if score_next:
            after = rows[len(cont)]
            eog = self._eog_ids()
            next_top = top_k_of(after, k)
            next_eog = float(np.max(after[eog])) if eog.size else None
        return RescoreResult(
            positions=positions,
            prompt_tokens=len(ptoks),
            elapsed_ms=(time.perf_counter() - start) * 1000,
            model_sha256=self._info.sha256,
            next_top=next_top,
            next_eog_logprob=next_eog,
            replayed=replayed,
            evaluated_tokens=evaluated,
        )

    def _eval_rows(self, tokens: list[int], scored: range) -> npt.NDArray[np.float32]:
        """Evaluate ``tokens`` after the cached ones; the logits of the batch indices ``scored``.

        Built on llama.cpp's batch directly, so that logits are computed (the vocabulary
        projection) and copied only for the positions asked for, not for all or the last.
        Keeps ``Llama``'s token bookkeeping, so its own calls and :meth:`_seek_prompt` see the
        cache as it is.
        """
        import llama_cpp

        llm = self._llm
        out = np.empty((len(scored), self._n_vocab), dtype=np.float32)
        llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
        batch = llm._batch
        row = 0
        for lo in range(0, len(tokens), llm.n_batch):
            chunk = tokens[lo : lo + llm.n_batch]
            n_past = int(llm.n_tokens)
            b = batch.batch
            b.n_tokens = len(chunk)
            wanted = []
            for j, tok in enumerate(chunk):
                b.token[j] = tok
                b.pos[j] = n_past + j
                b.seq_id[j][0] = 0
                b.n_seq_id[j] = 1
                flag = (lo + j) in scored
                b.logits[j] = flag
                if flag:
                    wanted.append(j)
            llm._ctx.decode(batch)
            llm.input_ids[n_past : n_past + len(chunk)] = chunk
            llm.n_tokens = n_past + len(chunk)
            for j in wanted:
                ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, j)
                out[row] = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))
                row += 1
        return out

    def _stepwise_logits(self, ptoks: list[int], cont: list[int]) -> npt.NDArray[np.float32]:
        """Logits after the prompt and after each claimed token, evaluated as generation does."""
        llm = self._llm
        llm.reset()
        self._rescore_head = None
        rows = np.empty((len(cont) + 1, self._n_vocab), dtype=np.float32)
        llm.eval(ptoks)
        rows[0] = self._last_logits()
        for j, tok in enumerate(cont):
            llm.eval([tok])
            rows[j + 1] = self._last_logits()
        return rows

    def _seek_prompt(self, head: list[int]) -> int:
        """Leave the context holding exactly ``head``, evaluated without logits; returns how
        many of its tokens had to be evaluated.

        Re-scores often share a prompt or its beginning: replicas of one task, a full check
        after a spot check, tasks in one chat template with one system prompt. The cache the
        last re-score left (generation always starts from scratch) is kept up to the longest
        common prefix with ``head``, and only the tokens after it are evaluated. When all of
        ``head`` is reused, the numbers are those of a fresh evaluation (the same prefill wrote
        the cache); a shorter reuse splits the prefill in two batches, which moves logprobs by
        float rounding only (far below the drift a verifier tolerates).
        """
        llm = self._llm
        common = 0
        if self._reuse and self._rescore_head is not None:
            held = self._rescore_head[: int(llm.n_tokens)]
            for a, b in zip(held, head, strict=False):
                if a != b:
                    break
                common += 1
            if common and [int(t) for t in llm.input_ids[:common]] != head[:common]:
                common = 0
        if common:
            llm.n_tokens = common  # the next evaluation drops the cache after n_tokens
        else:
            llm.reset()
        self._rescore_head = tuple(head)
        if len(head) > common:
            self._eval_rows(head[common:], range(0))
        return len(head) - common

    def _eog_ids(self) -> npt.NDArray[np.intp]:
        """Ids of the end-of-generation tokens (computed once per backend)."""
        if self._eog is None:
            self._eog = np.array(
                [t for t in range(self._n_vocab) if self._is_eog(self._vocab, t)], dtype=np.intp
            )
        return self._eog

    def _replay_sampler(
        self, logits: npt.NDArray[np.float32], cont: list[int], params: GenerationParams
    ) -> tuple[int, ...]:
        """What a node's seeded sampler picks from each row of ``logits``, fed ``cont``.

        The chain is the one ``Llama.generate`` builds (penalties, top-k, typical, top-p,
        min-p, temperature, seeded draw), so its random stream advances exactly as the node's
        did: one draw per position. Each claimed token is then accepted, as the node accepted
        it, so repetition penalties see the claimed history.
        """
        import ctypes

        import llama_cpp
        from llama_cpp._internals import LlamaTokenDataArray

        self._llm.set_seed(params.seed)
        chain = self._llm._init_sampler(
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=params.min_p,
            temp=params.temperature,
            repeat_penalty=params.repeat_penalty,
        )
        candidates = LlamaTokenDataArray(n_vocab=self._n_vocab)
        picked = []
        try:
            for row, claimed in zip(logits, cont, strict=True):
                candidates.copy_logits(row)
                candidates.candidates.selected = -1
                llama_cpp.llama_sampler_apply(chain.sampler, ctypes.byref(candidates.candidates))
                sel = int(candidates.candidates.selected)
                picked.append(int(candidates.candidates.data[sel].id) if sel >= 0 else -1)
                llama_cpp.llama_sampler_accept(chain.sampler, claimed)
        finally:
            chain.close()
        return tuple(picked)
