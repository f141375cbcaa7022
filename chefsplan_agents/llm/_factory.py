"""Pick the LLM backend from settings: the one place that chooses."""

from __future__ import annotations

from pathlib import Path

from chefsplan_agents.config import LLMSettings
from chefsplan_agents.llm._base import LLMBackend
from chefsplan_agents.llm._llamacpp import LlamaCppBackend
from chefsplan_agents.llm._server import LlamaServerBackend

__all__ = ["open_backend"]


def open_backend(
    settings: LLMSettings | None = None, *, cache_dir: Path | None = None
) -> LLMBackend:
    """Open the backend ``settings`` describe: a llama.cpp server if ``server_url`` is set,
    else the model in process.

    Args:
        settings: The ``[llm]`` settings (default: the embedded defaults).
        cache_dir: Where built models and the hash cache live.

    Returns:
        An open backend; use it as a context manager or call ``close()``.

    Raises:
        ModelNotFound, ModelHashMismatch, ModelLoadError, LLMServerUnavailable: As the backends.
    """
    s = settings or LLMSettings()
    if s.server_url:
        return LlamaServerBackend(
            s.server_url, s.model, n_ctx=s.n_ctx, sha256=s.sha256, cache_dir=cache_dir
        )
    return LlamaCppBackend(
        s.model,
        n_ctx=s.n_ctx,
        n_threads=s.n_threads,
        n_batch=s.n_batch,
        sha256=s.sha256,
        cache_dir=cache_dir,
    )
