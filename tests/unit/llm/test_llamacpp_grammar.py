"""LlamaCppBackend: the usable context."""

from __future__ import annotations

from pathlib import Path

import pytest

from chefsplan_agents.errors import ContextOverflow
from chefsplan_agents.llm import GenerationParams, LlamaCppBackend


def test_info_reports_the_context_the_buffers_hold(tmp_path: Path) -> None:
    # llama.cpp rounds a 64-token context up to 256, but llama-cpp-python's buffers hold 64:
    # a prompt in between must be refused up front, not crash inside eval.
    with LlamaCppBackend("tiny", n_ctx=64, n_threads=1, n_batch=64, cache_dir=tmp_path) as llm:
        assert llm.info.n_ctx == 64
        with pytest.raises(ContextOverflow):
            llm.complete("x" * 100, GenerationParams(max_tokens=4))
        assert llm.complete("x" * 40, GenerationParams(max_tokens=4)).completion_tokens == 4
