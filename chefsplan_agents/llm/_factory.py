"""Pick the LLM backend from settings: the one place that chooses."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from chefsplan_agents.config import LLMSettings
from chefsplan_agents.llm._base import LLMBackend
from chefsplan_agents.llm._llamacpp import LlamaCppBackend
from chefsplan_agents.llm._server import LlamaServerBackend
from chefsplan_agents.llm._stub import StubBackend, is_stub_spec

__all__ = ["MODEL_ALIASES", "open_backend"]

#: Short names accepted for known models.
MODEL_ALIASES: Final[dict[str, str]] = {"smollm2": "smollm2-135m"}


def open_backend(
    settings: LLMSettings | None = None, *, cache_dir: Path | None = None
) -> LLMBackend:
    """Open the backend ``settings`` describe.

    ``settings.model`` is a known model name (``tiny``, ``smollm2-135m`` or its alias
    ``smollm2``, ...), a ``.gguf`` path, or ``stub:SECONDS`` (a fake model that answers from the
    prompt's hash, for tests and load runs). A llama.cpp server runs it if ``server_url`` is set,
    else the model runs in process.

    Args:
        settings: The ``[llm]`` settings (default: the embedded defaults).
        cache_dir: Where built models and the hash cache live.

    Returns:
        An open backend; use it as a context manager or call ``close()``.

    Raises:
        ModelNotFound, ModelHashMismatch, ModelLoadError, LLMServerUnavailable: As the backends.
    """
    s = settings or LLMSettings()
    model = MODEL_ALIASES.get(s.model, s.model)
    if is_stub_spec(model):
        return StubBackend.from_spec(model, n_ctx=s.n_ctx)
    if s.server_url:
        return LlamaServerBackend(
            s.server_url, model, n_ctx=s.n_ctx, sha256=s.sha256, cache_dir=cache_dir
        )
    return LlamaCppBackend(
        model,
        n_ctx=s.n_ctx,
        n_threads=s.n_threads,
        n_batch=s.n_batch,
        sha256=s.sha256,
        cache_dir=cache_dir,
    )
