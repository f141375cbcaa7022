"""The stub model: a deterministic, sleeping stand-in for load and fault tests."""

from __future__ import annotations

import time

import pytest

from chefsplan_agents.devnet import Devnet
from chefsplan_agents.errors import ContextOverflow, ModelNotFound
from chefsplan_agents.llm import (
    STUB_MODEL_SHA256,
    ChatMessage,
    GenerationParams,
    LLMBackend,
    StubBackend,
    is_stub_spec,
    stub_seconds,
)


def test_stub_implements_the_backend_protocol() -> None:
    with StubBackend(0.0) as llm:
        assert isinstance(llm, LLMBackend)
        assert llm.info.sha256 == STUB_MODEL_SHA256
        assert llm.info.backend == "stub"


def test_stub_answers_deterministically_from_the_prompt() -> None:
    a, b = StubBackend(0.0), StubBackend(0.0)
    first = a.complete("Serve the soup")
    again = b.complete("Serve the soup")
    assert (first.text, first.token_ids, first.fingerprint) == (
        again.text,
        again.token_ids,
        again.fingerprint,
    )
    assert first.text != a.complete("Serve the salad").text
    assert first.text == a.detokenize(first.token_ids)
    assert len(first.fingerprint) == len(first.token_ids) == first.completion_tokens
    assert all(
        top[0][0] == tok for top, tok in zip(first.fingerprint, first.token_ids, strict=True)
    )
    assert first.model_sha256 == STUB_MODEL_SHA256


def test_stub_honours_max_tokens_and_context() -> None:
    llm = StubBackend(0.0, n_ctx=64)
    gen = llm.complete("hi", GenerationParams(max_tokens=4))
    assert len(gen.token_ids) == 4 and gen.finish_reason == "length"
    with pytest.raises(ContextOverflow):
        llm.complete("x" * 60, GenerationParams(max_tokens=8))


def test_stub_chat_is_complete_of_the_template() -> None:
    llm = StubBackend(0.0)
    messages = [ChatMessage(role="user", content="Serve the soup")]
    assert llm.chat(messages).text == llm.complete(llm.format_chat(messages)).text
    assert llm.format_chat(messages).endswith("<|im_start|>assistant\n")


def test_stub_rescore_accepts_its_own_answer_and_flags_tampering() -> None:
    llm = StubBackend(0.0)
    gen = llm.complete("Serve the soup")
    assert llm.rescore("Serve the soup", gen.token_ids).top1_fraction == 1.0
    tampered = list(gen.token_ids)
    tampered[0] = (tampered[0] + 1) % 256
    assert llm.rescore("Serve the soup", tampered).top1_fraction < 1.0


def test_stub_sleeps_per_completion() -> None:
    llm = StubBackend(0.2)
    started = time.monotonic()
    llm.complete("hi")
    # Loose lower bound only: the sleep must be there; upper bounds depend on the machine.
    assert time.monotonic() - started >= 0.15


@pytest.mark.parametrize(("spec", "seconds"), [("stub", 1.0), ("stub:2", 2.0), ("stub:0.5", 0.5)])
def test_stub_specs(spec: str, seconds: float) -> None:
    assert is_stub_spec(spec)
    assert stub_seconds(spec) == seconds
    assert StubBackend.from_spec(spec).seconds_per_task == seconds


@pytest.mark.parametrize("spec", ["stub:", "stub:abc", "stub:-1", "stub:nan", "stub:inf"])
def test_bad_stub_specs_say_what_to_write(spec: str) -> None:
    if spec == "stub:":
        assert stub_seconds(spec) == 1.0  # an empty delay means the default
        return
    with pytest.raises(ModelNotFound, match="SECONDS must be a number >= 0"):
        stub_seconds(spec)


def test_other_specs_are_not_stubs() -> None:
    assert not is_stub_spec("tiny") and not is_stub_spec("stubborn.gguf")
    with pytest.raises(ModelNotFound, match="not a stub model spec"):
        stub_seconds("tiny")
    with pytest.raises(ModelNotFound, match=">= 0"):
        StubBackend(-1.0)


def test_devnet_runs_a_task_on_the_stub_model() -> None:
    with Devnet.create(nodes=1, model="stub:0") as net:
        receipt = net.run_task("Serve the soup")
        assert (
            receipt.output
            == StubBackend(0.0).chat([ChatMessage(role="user", content="Serve the soup")]).text
        )
        assert net.model_sha256 == STUB_MODEL_SHA256
