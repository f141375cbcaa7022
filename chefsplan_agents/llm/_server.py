"""``LlamaServerBackend``: an OpenAI-compatible llama.cpp HTTP server.

The server (``python -m llama_cpp.server``, shipped with llama-cpp-python's ``server`` extra)
reports tokens as text pieces, not ids. This backend keeps a vocabulary-only copy of the same
GGUF file to tokenize, to render chat templates and to map pieces back to ids, and it checks
that ``detokenize(token_ids)`` reproduces the server's text.

Every request sends ``repeat_penalty`` explicitly: the server defaults to 1.1 where the
in-process backend uses 1.0, and greedy outputs would differ.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from chefsplan_agents import _json
from chefsplan_agents.errors import (
    GenerationError,
    InvalidGenerationParams,
    LLMServerUnavailable,
    ModelLoadError,
)
from chefsplan_agents.llm._base import (
    BackendBase,
    OnToken,
    check_context,
    cut_at_stop,
    render_chat,
)
from chefsplan_agents.llm._llamacpp import _as_model_file, llama_cpp_build, quantization_name
from chefsplan_agents.llm._models import ModelFile
from chefsplan_agents.llm._types import (
    ChatMessage,
    Generation,
    GenerationParams,
    ModelInfo,
    RescoredPosition,
    RescoreResult,
    Timings,
    TopK,
)

__all__ = ["MAX_SERVER_ANSWER_BYTES", "LlamaServerBackend", "serve_model", "server_extra_missing"]

MAX_SERVER_ANSWER_BYTES = 8 << 20
"""Hard cap on one llama.cpp server answer (8 MiB); smaller answers get smaller limits."""
# An answer's budget: a fixed part for the envelope and the model list, plus this much per
# token entry (a piece, its logprob, its offset, or one of its top-k alternatives; about 30-60
# bytes each in practice).
_ANSWER_BASE_BYTES = 1 << 20
_ANSWER_BYTES_PER_ENTRY = 512


def _answer_limit(tokens: int = 0, alternatives: int = 0) -> int:
    """Most bytes an answer about ``tokens`` tokens with ``alternatives`` each may take."""
    per_token = (1 + max(alternatives, 0)) * _ANSWER_BYTES_PER_ENTRY
    return min(MAX_SERVER_ANSWER_BYTES, _ANSWER_BASE_BYTES + max(tokens, 0) * per_token)


_SERVER_MODULES = ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")


def server_extra_missing() -> list[str]:
    """Modules of llama-cpp-python's ``server`` extra that are not installed."""
    import importlib.util

    return [m for m in _SERVER_MODULES if importlib.util.find_spec(m) is None]


class _Vocab:
    """Tokenizer and piece↔id map from a vocabulary-only load of a GGUF file."""

    def __init__(self, path: Path) -> None:
        import llama_cpp
        from llama_cpp import _internals

        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        try:
            self._model: Any = _internals.LlamaModel(
                path_model=str(path), params=params, verbose=False
            )
        except (ValueError, RuntimeError, OSError) as err:
            raise ModelLoadError(
                f"llama.cpp cannot read the vocabulary of {path} ({err}); "
                "check that it is a complete GGUF file"
            ) from err
        self.metadata: dict[str, str] = dict(self._model.metadata())
        self.n_vocab = int(self._model.n_vocab())
        self.add_bos = bool(self._model.add_bos_token())
        self.bos = int(self._model.token_bos())
        self._pieces: dict[str, int | None] | None = None

    def close(self) -> None:
        self._model.close()

    def tokenize(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        bos = self.add_bos if add_bos is None else add_bos
        return [int(t) for t in self._model.tokenize(text.encode("utf-8"), bos, True)]

    def detokenize(self, ids: Sequence[int], *, special: bool = False) -> bytes:
        raw: bytes = self._model.detokenize(list(ids), special=special)
        return raw

    def text_of(self, token: int) -> str:
        if token < 0:
            return ""
        raw = self._model.token_get_text(token)
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)

    def id_of(self, piece: str) -> int | None:
        """The id the server meant by ``piece`` (None when no id or several fit)."""
        if self._pieces is None:
            table: dict[str, list[int]] = {}
            for i in range(self.n_vocab):
                text = self.detokenize([i]).decode("utf-8", "ignore")
                table.setdefault(text, []).append(i)
            pieces: dict[str, int | None] = {}
            for text, ids in table.items():
                if len(ids) == 1:
                    pieces[text] = ids[0]
                    continue
                # Several tokens print alike (a character and its byte token): the model
                # emits the one the tokenizer produces for the text.
                canon = self.tokenize(text, add_bos=False) if text else []
                pieces[text] = canon[0] if len(canon) == 1 and canon[0] in ids else None
            self._pieces = pieces
        return self._pieces.get(piece)

    def top_k(self, entry: dict[str, float] | None, k: int) -> TopK:
        if not entry:
            return ()
        pairs = [
            (tok, float(lp))
            for piece, lp in entry.items()
            if (tok := self.id_of(piece)) is not None
        ]
        pairs.sort(key=lambda p: (-p[1], p[0]))
        return tuple(pairs[:k])


class LlamaServerBackend(BackendBase):
    """Talks to an OpenAI-compatible llama.cpp server over ``/v1/completions``.

    Args:
        url: Base URL of the server, e.g. ``http://127.0.0.1:8000``.
        model: The GGUF file the server serves (a :class:`ModelFile`, path or known name); its
            vocabulary maps the server's token pieces back to ids and its hash goes in ``info``.
        n_ctx: The server's context length (checked before each request).
        timeout_s: HTTP timeout per request.
        sha256: Pin the model file's hash.
        cache_dir: Where built models and the hash cache live.
        transport: An ``httpx`` transport (tests).

    Raises:
        LLMServerUnavailable: Nothing answers at ``url``.
        ModelNotFound, ModelHashMismatch, ModelLoadError: As for the local file.
    """

    def __init__(
        self,
        url: str,
        model: ModelFile | str | Path,
        *,
        n_ctx: int = 2048,
        timeout_s: float = 120.0,
        sha256: str | None = None,
        cache_dir: Path | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._url = url.rstrip("/")
        self._file = _as_model_file(model, sha256, cache_dir)
        self._vocab = _Vocab(self._file.path)
        self._timeout_s = timeout_s
        self._client = httpx.Client(
            base_url=self._url,
            timeout=timeout_s,
            transport=transport,
            # A compressed answer would be inflated a network chunk at a time before the cap.
            headers={"Accept-Encoding": "identity"},
        )
        self._closed = False
        try:
            self._request("GET", "/v1/models")
        except BaseException:
            self.close()
            raise
        meta = self._vocab.metadata
        self._template = meta.get("tokenizer.chat_template")
        self._info = ModelInfo(
            name=meta.get("general.name") or self._file.name,
            path=str(self._file.path),
            sha256=self._file.sha256,
            n_ctx=n_ctx,
            n_vocab=self._vocab.n_vocab,
            quantization=quantization_name(meta.get("general.file_type")),
            llama_cpp=llama_cpp_build() + " (client side)",
            backend=f"llama-server {self._url}",
        )

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        """The model (the local copy of the served file) and the server URL."""
        return self._info

    def close(self) -> None:
        """Close the HTTP client and free the vocabulary (idempotent)."""
        if not self._closed:
            self._closed = True
            self._client.close()
            self._vocab.close()

    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        limit: int = _ANSWER_BASE_BYTES,
    ) -> Any:
        """Send one request and parse its answer, read as a stream of at most ``limit`` bytes."""
        if self._closed:
            raise LLMServerUnavailable(f"backend for {self._url} is closed; open a new one")
        try:
            with self._client.stream(method, path, json=body) as resp:
                content = self._read_answer(resp, path, limit)
        except httpx.HTTPError as err:
            raise LLMServerUnavailable(
                f"llama.cpp server at {self._url} is unreachable ({type(err).__name__}); "
                "start it with `python -m llama_cpp.server --model FILE` or fix the URL"
            ) from err
        if resp.status_code != 200:
            text = content.decode("utf-8", errors="replace")
            detail = " ".join(text.split())[:200]
            raise GenerationError(
                f"llama.cpp server at {self._url} answered {resp.status_code} to {path}: {detail}"
            )
        try:
            return _json.loads(content)
        except ValueError as err:  # not UTF-8, not JSON, or nested too deep
            raise LLMServerUnavailable(
                f"llama.cpp server at {self._url} sent a non-JSON answer to {path}: {err}"
            ) from err

    def _read_answer(self, resp: httpx.Response, path: str, limit: int) -> bytes:
        # The timeout bounds each read; the deadline bounds the whole body once headers arrive.
        deadline = time.monotonic() + self._timeout_s
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise self._too_large(path, limit)
        content = bytearray()
        for chunk in resp.iter_bytes():
            content += chunk
            if len(content) > limit:
                raise self._too_large(path, limit)
            if time.monotonic() > deadline:
                raise LLMServerUnavailable(
                    f"llama.cpp server at {self._url} did not finish its answer to {path} "
                    f"within {self._timeout_s:g} s; check the server"
                )
        return bytes(content)

    def _too_large(self, path: str, limit: int) -> LLMServerUnavailable:
        return LLMServerUnavailable(
            f"llama.cpp server at {self._url} sent an answer to {path} over the limit of "
            f"{limit} bytes; check that a llama.cpp server runs at this URL"
        )

    # --- tokens ---------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` as the server tokenizes a prompt."""
        return self._vocab.tokenize(text)

    def detokenize(self, token_ids: Sequence[int]) -> str:
        """Text of ``token_ids`` (special tokens omitted)."""
        n = self._vocab.n_vocab
        bad = next((t for t in token_ids if not 0 <= int(t) < n), None)
        if bad is not None:
            raise InvalidGenerationParams(
                f"token id {bad} is outside the vocabulary of {n} tokens of {self._info.name}"
            )
        return self._vocab.detokenize(token_ids).decode("utf-8", errors="replace")

    # --- generation -----------------------------------------------------------------------

    def complete(
        self,
        prompt: str,
        params: GenerationParams | None = None,
        *,
        on_token: OnToken | None = None,
    ) -> Generation:
        """Continue ``prompt`` on the server; ``on_token`` is called once the answer arrives."""
        params = params or GenerationParams()
        n_prompt = len(self.tokenize(prompt))
        if n_prompt == 0:
            raise InvalidGenerationParams("prompt is empty; give at least one character")
        check_context(n_prompt, params.max_tokens, self._info.n_ctx)
        body = {
            "prompt": prompt,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
            "min_p": params.min_p,
            "repeat_penalty": params.repeat_penalty,  # the server's default is 1.1
            "seed": params.seed,
            "stop": list(params.stop),
            "logprobs": params.logprobs,
            "stream": False,
        }
        start = time.perf_counter()
        limit = _answer_limit(params.max_tokens, params.logprobs)
        data = self._request("POST", "/v1/completions", body, limit=limit)
        elapsed = time.perf_counter() - start
        try:
            choice = data["choices"][0]
            lp = choice["logprobs"] or {"tokens": [], "token_logprobs": [], "top_logprobs": []}
            pieces = _pieces(lp["tokens"])
            chosen = [_number(x) for x in lp["token_logprobs"]]
            tops = _top_logprobs(lp["top_logprobs"])
            reason = str(choice.get("finish_reason") or "length")
            usage = data.get("usage") or {}
            if not isinstance(usage, dict):
                raise TypeError(f"usage is {type(usage).__name__}, not an object")
            usage_prompt = int(usage.get("prompt_tokens", n_prompt))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError) as err:
            raise GenerationError(
                f"llama.cpp server at {self._url} sent an unexpected completion: {err!r}"
            ) from err
        ids: list[int] = []
        for piece in pieces:
            tok = self._vocab.id_of(piece)
            if tok is None:
                raise GenerationError(
                    f"the server's token {piece!r} maps to no unique id in {self._file.path.name}; "
                    "is it serving another model? Use the in-process backend for this prompt"
                )
            ids.append(tok)
        keep, stopped = cut_at_stop(pieces, params.stop)
        ids, chosen, tops = ids[:keep], chosen[:keep], tops[:keep]
        text = self.detokenize(ids)
        if on_token is not None:
            for tok, piece in zip(ids, pieces, strict=False):
                on_token(tok, piece)
        n = len(ids)
        return Generation(
            text=text,
            token_ids=tuple(ids),
            token_logprobs=tuple(chosen),
            fingerprint=tuple(self._vocab.top_k(t, params.logprobs) for t in tops),
            finish_reason="stop" if stopped or reason == "stop" else "length",
            prompt_tokens=usage_prompt,
            completion_tokens=n,
            # The server does not split prefill from generation; all of it counts as generation.
            timings=Timings.measure(0.0, elapsed, usage_prompt, n),
            model_sha256=self._info.sha256,
        )

    def format_chat(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt :meth:`chat` sends: ``messages`` in the model's chat template."""
        v = self._vocab
        return render_chat(self._template, messages, bos=v.text_of(v.bos), eos="")

    # --- verification ---------------------------------------------------------------------

    def rescore(
        self,
        prompt: str | Sequence[int],
        continuation: Sequence[int],
        k: int = 5,
        *,
        sampling: GenerationParams | None = None,
    ) -> RescoreResult:
        """Score a claimed continuation with one echo request (prefill only on the server).

        The continuation must survive a round trip through text (the server takes text); when
        the claimed token is outside the server's top-k, its rank is reported as ``k + 1`` and
        its logprob as the k-th logprob (an upper bound).
        """
        if k < 1:
            raise InvalidGenerationParams(f"k={k}: re-scoring needs at least one alternative")
        v = self._vocab
        if isinstance(prompt, str):
            ptoks = v.tokenize(prompt)
            ptext = prompt
        else:
            ptoks = [int(t) for t in prompt]
            self.detokenize(ptoks)
            body_ids = ptoks[1:] if v.add_bos and ptoks[:1] == [v.bos] else ptoks
            ptext = v.detokenize(body_ids, special=True).decode("utf-8", "replace")
        cont = [int(t) for t in continuation]
        self.detokenize(cont)
        if not ptoks:
            raise InvalidGenerationParams("prompt is empty; re-scoring needs the prompt")
        check_context(len(ptoks), len(cont) + 1, self._info.n_ctx, what="continuation length")
        start = time.perf_counter()
        if not cont:
            return RescoreResult(
                positions=(),
                prompt_tokens=len(ptoks),
                elapsed_ms=0.0,
                model_sha256=self._info.sha256,
            )
        full_text = ptext + self.detokenize(cont)
        if v.tokenize(full_text) != ptoks + cont:
            raise GenerationError(
                "the claimed continuation does not survive re-tokenization by the server; "
                "re-score it with the in-process backend"
            )
        body = {
            "prompt": full_text,
            "max_tokens": 1,
            "echo": True,
            "logprobs": k,
            "temperature": 0.0,
            "repeat_penalty": 1.0,
            "stream": False,
        }
        # The echo holds every prompt and continuation token with its k alternatives.
        limit = _answer_limit(len(ptoks) + len(cont) + 1, k)
        data = self._request("POST", "/v1/completions", body, limit=limit)
        try:
            tops = _top_logprobs(data["choices"][0]["logprobs"]["top_logprobs"])
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise GenerationError(
                f"llama.cpp server at {self._url} sent no prompt logprobs; start it with "
                "--logits_all true"
            ) from err
        # The server pairs its echoed tokens (the prompt minus a leading BOS-id token, even
        # where the model adds no BOS: chatml models use <|im_start|> as BOS) with the rows of
        # logits by index, skips pairs whose token is the BOS id and blanks the first entry.
        # Row r (over the evaluated tokens) predicts token r + 1.
        full_ids = ptoks + cont
        echoed_ids = full_ids[1:] if full_ids[:1] == [v.bos] else full_ids
        positions = []
        for i, tok in enumerate(cont):
            row = len(ptoks) + i - 1
            entry = None
            if 0 <= row < len(echoed_ids) and echoed_ids[row] != v.bos:
                j = sum(1 for t in echoed_ids[:row] if t != v.bos)
                entry = tops[j] if j < len(tops) else None
            if entry is None:
                raise GenerationError(
                    f"llama.cpp server at {self._url} returned no logprobs for continuation "
                    f"position {i}; re-score this prompt with the in-process backend"
                )
            full = v.top_k(entry, len(entry))
            top = full[:k]
            mine = dict(full)
            if tok in dict(top):
                lp = mine[tok]
                rank = 1 + sum(1 for _, x in full if x > lp)
            else:
                lp = top[-1][1] if top else 0.0
                rank = k + 1
            positions.append(RescoredPosition(token_id=tok, logprob=lp, rank=rank, top=top))
        return RescoreResult(
            positions=tuple(positions),
            prompt_tokens=len(ptoks),
            elapsed_ms=(time.perf_counter() - start) * 1000,
            model_sha256=self._info.sha256,
        )


# What the server child may see of this process's environment: where programs, the home folder,
# locale and temporary files are, the Python that runs it, and the knobs of llama.cpp and its
# threading and accelerator runtimes. Everything else stays behind (keystore passphrases,
# private keys, RPC credentials, cloud tokens): the child runs a model, it needs no secret.
_CHILD_ENV_NAMES = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "TZ", "LANG", "LANGUAGE",
        "TMPDIR", "TEMP", "TMP", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LD_LIBRARY_PATH",
        "DYLD_LIBRARY_PATH", "SYSTEMROOT", "WINDIR", "COMSPEC", "PATHEXT",
        "CUDA_VISIBLE_DEVICES", "CUDA_PATH", "CUDA_HOME", "HIP_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL",
    }
)  # fmt: skip
_CHILD_ENV_PREFIXES = ("LC_", "OMP_", "KMP_", "GOMP_", "GGML_", "LLAMA_", "OPENBLAS_", "MKL_")


def _server_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the llama.cpp server child gets: an allow-list of ``environ``.

    Args:
        environ: The parent's environment (default ``os.environ``).

    Returns:
        Only the variables a model server needs (paths, locale, temporary folder, Python,
        ``OMP_*``/``GGML_*``/``LLAMA_*`` and accelerator settings), plus
        ``PYTHONUNBUFFERED=1``; secrets such as ``CHEFSPLAN_KEYSTORE_PASSPHRASE`` are left out.
    """
    source = os.environ if environ is None else environ
    kept = {
        name: value
        for name, value in source.items()
        if name in _CHILD_ENV_NAMES or name.startswith(_CHILD_ENV_PREFIXES)
    }
    kept["PYTHONUNBUFFERED"] = "1"
    return kept


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{value!r} is not a number")
    return float(value)


def _pieces(value: Any) -> list[str]:
    """The server's token pieces: a list of strings."""
    if not isinstance(value, list) or not all(isinstance(piece, str) for piece in value):
        raise TypeError("logprobs.tokens must be a list of strings")
    return value


def _top_logprobs(value: Any) -> list[dict[str, float] | None]:
    """The server's per-position alternatives: a list of ``{piece: logprob}`` or null."""
    if not isinstance(value, list):
        raise TypeError("logprobs.top_logprobs must be a list")
    tops: list[dict[str, float] | None] = []
    for entry in value:
        if entry is None:
            tops.append(None)
        elif isinstance(entry, dict) and all(isinstance(piece, str) for piece in entry):
            tops.append({piece: _number(lp) for piece, lp in entry.items()})
        else:
            raise TypeError("logprobs.top_logprobs entries must map pieces to numbers")
    return tops


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_model(
    model: ModelFile | str | Path,
    *,
    port: int | None = None,
    n_ctx: int = 2048,
    n_threads: int = 2,
    n_batch: int = 512,
    startup_timeout_s: float = 60.0,
    cache_dir: Path | None = None,
) -> Iterator[str]:
    """Run ``python -m llama_cpp.server`` for a model on a loopback port; yield its URL.

    The server runs without a prompt cache and with logits for every position (needed for
    logprobs and re-scoring). It is stopped when the block exits.

    Raises:
        LLMServerUnavailable: The ``server`` extra is missing, or the server did not come up.
    """
    missing = server_extra_missing()
    if missing:
        raise LLMServerUnavailable(
            f"llama.cpp server needs {', '.join(missing)}; "
            "install them with `pip install 'llama-cpp-python[server]'`"
        )
    file = _as_model_file(model, None, cache_dir)
    port = port or _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(file.path), "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(n_ctx), "--n_threads", str(n_threads),
        "--n_threads_batch", str(n_threads), "--n_batch", str(n_batch),
        "--logits_all", "true", "--cache", "false", "--verbose", "false",
    ]  # fmt: skip
    # A file, not a pipe: the server logs every request and would block on a full pipe.
    log_file = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log_file,
        env=_server_environment(),
    )
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                log_file.seek(0)
                tail = log_file.read().decode("utf-8", "replace")
                last = tail.strip().splitlines()[-1:] or ["no output"]
                raise LLMServerUnavailable(
                    f"llama.cpp server for {file.path.name} exited with "
                    f"{proc.returncode}: {last[0]}"
                )
            try:
                if httpx.get(url + "/v1/models", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise LLMServerUnavailable(
                    f"llama.cpp server at {url} did not start within {startup_timeout_s:.0f} s"
                )
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()
