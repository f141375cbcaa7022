"""LlamaCppBackend: grammar-constrained generation, stopping from on_token, the usable context."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chefsplan_agents.errors import ContextOverflow, InvalidGenerationParams
from chefsplan_agents.llm import (
    SCRIPTED_OUTPUT,
    ChatMessage,
    GenerationParams,
    LlamaCppBackend,
)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppBackend]:
    cache = tmp_path_factory.mktemp("grammar-cache")
    with LlamaCppBackend("tiny", n_ctx=256, n_threads=1, n_batch=64, cache_dir=cache) as llm:
        yield llm


PROMPT_MESSAGES = [ChatMessage(role="user", content="Hello")]


def test_a_grammar_constrains_the_output(scripted: LlamaCppBackend) -> None:
    prompt = scripted.format_chat(PROMPT_MESSAGES)
    assert scripted.complete(prompt).text == SCRIPTED_OUTPUT
    out = scripted.complete(prompt, grammar='root ::= "yes" | "no"')
    assert out.text in ("yes", "no")
    # The end of generation is allowed once the grammar is complete.
    assert out.finish_reason == "stop"
    assert out.text == scripted.detokenize(out.token_ids)


def test_a_grammar_that_does_not_parse_is_refused(scripted: LlamaCppBackend) -> None:
    prompt = scripted.format_chat(PROMPT_MESSAGES)
    for bad in ("root ::= undefined-rule", 'start ::= "a"', "root ::= [unclosed"):
        with pytest.raises(InvalidGenerationParams, match="does not parse"):
            scripted.complete(prompt, grammar=bad)
    assert scripted.complete(prompt).text == SCRIPTED_OUTPUT


def test_an_exception_from_on_token_stops_generation(scripted: LlamaCppBackend) -> None:
    class Stop(Exception):
        pass

    seen: list[str] = []

    def on_token(_token: int, piece: str) -> None:
        seen.append(piece)
        if len(seen) == 3:
            raise Stop

    prompt = scripted.format_chat(PROMPT_MESSAGES)
    with pytest.raises(Stop):
        scripted.complete(prompt, on_token=on_token)
    assert "".join(seen) == SCRIPTED_OUTPUT[:3]
    # The lock is free and the model usable again.
    assert scripted.complete(prompt).text == SCRIPTED_OUTPUT


def test_the_chat_template_is_the_model_files(scripted: LlamaCppBackend) -> None:
    assert scripted.chat_template is not None
    assert "<|im_start|>" in scripted.chat_template


def test_info_reports_the_context_the_buffers_hold(tmp_path: Path) -> None:
    # llama.cpp rounds a 64-token context up to 256, but llama-cpp-python's buffers hold 64:
    # a prompt in between must be refused up front, not crash inside eval.
    with LlamaCppBackend("tiny", n_ctx=64, n_threads=1, n_batch=64, cache_dir=tmp_path) as llm:
        assert llm.info.n_ctx == 64
        with pytest.raises(ContextOverflow):
            llm.complete("x" * 100, GenerationParams(max_tokens=4))
        assert llm.complete("x" * 40, GenerationParams(max_tokens=4)).completion_tokens == 4
