from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from chefsplan_agents.config import LLMSettings
from chefsplan_agents.errors import (
    GenerationError,
    LLMError,
    LLMServerUnavailable,
    ModelHashMismatch,
    ModelLoadError,
    ModelNotFound,
)
from chefsplan_agents.llm import (
    CHATML_TEMPLATE,
    SCRIPTED_OUTPUT,
    ChatMessage,
    DeterminismProfile,
    GenerationParams,
    LlamaCppBackend,
    LlamaServerBackend,
    ModelFile,
    open_backend,
    render_chat,
    resolve_model,
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("llm-cache")


@pytest.fixture(scope="module")
def random_model(cache: Path) -> ModelFile:
    return resolve_model("tiny-random", cache_dir=cache)


# --- LlamaCppBackend ------------------------------------------------------------------------


def test_corrupt_model_file_is_a_one_line_load_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ModelLoadError) as info:
        LlamaCppBackend(bad, cache_dir=tmp_path)
    assert "llama.cpp cannot load" in str(info.value) and "\n" not in str(info.value)


def test_missing_model_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound):
        LlamaCppBackend(tmp_path / "absent.gguf", cache_dir=tmp_path)


def test_pinned_hash_is_checked_at_load(random_model: ModelFile) -> None:
    with pytest.raises(ModelHashMismatch):
        LlamaCppBackend(random_model, sha256="1" * 64)


_CHILD = """
import json, sys
from chefsplan_agents.llm import LlamaCppBackend, GenerationParams, resolve_model
model = resolve_model(sys.argv[1], cache_dir=__import__("pathlib").Path(sys.argv[2]))
with LlamaCppBackend(model, n_ctx=128, n_threads=1, n_batch=64) as llm:
    g = llm.complete("Order:", GenerationParams(max_tokens=24))
print(json.dumps({"text": g.text, "ids": list(g.token_ids), "sha": llm.info.sha256}))
"""


def test_determinism_profile_holds_across_processes(random_model: ModelFile, cache: Path) -> None:
    with LlamaCppBackend(random_model, n_ctx=128, n_threads=1, n_batch=64) as llm:
        profile = DeterminismProfile.of(llm.info)
        here = llm.complete("Order:", profile.params(max_tokens=24))
        profile.check(llm.info)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(random_model.path), str(cache)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    there = json.loads(proc.stdout.strip().splitlines()[-1])
    assert there["sha"] == profile.model_sha256
    assert there["text"].encode() == here.text.encode()
    assert there["ids"] == list(here.token_ids)


def test_smollm2_style_template_renders() -> None:
    template = (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    out = render_chat(template, [ChatMessage(role="user", content="Hi")])
    assert out == (
        "<|im_start|>system\nYou are helpful<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert render_chat(None, [ChatMessage(role="user", content="Hi")]) == render_chat(
        CHATML_TEMPLATE, [ChatMessage(role="user", content="Hi")]
    )


def test_broken_template_is_a_generation_error() -> None:
    with pytest.raises(GenerationError, match="chat template failed: no system"):
        render_chat("{{ raise_exception('no system') }}", [ChatMessage(role="user", content="x")])


# --- LlamaServerBackend ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_server_names_the_url(random_model: ModelFile) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(LLMServerUnavailable) as info:
        LlamaServerBackend(url, random_model, timeout_s=2)
    assert url in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ConnectionError)


def _fake_server(handler: object) -> httpx.MockTransport:
    return httpx.MockTransport(handler)  # type: ignore[arg-type]


def test_server_error_status_is_a_generation_error(random_model: ModelFile) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": []})
        return httpx.Response(500, text="boom\ntrace")

    with LlamaServerBackend("http://fake", random_model, transport=_fake_server(handler)) as srv:
        with pytest.raises(GenerationError, match="answered 500 to /v1/completions: boom trace"):
            srv.complete("Hi")


def test_server_sends_repeat_penalty_and_maps_pieces(random_model: ModelFile) -> None:
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": []})
        seen.append(json.loads(request.content))
        logprobs = {
            "tokens": ["o", "k"],
            "token_logprobs": [-0.1, -0.2],
            "top_logprobs": [{"o": -0.1, "x": -3.0}, {"k": -0.2, "q": -2.0}],
            "text_offset": [2, 3],
        }
        return httpx.Response(
            200,
            json={
                "choices": [{"text": "ok", "logprobs": logprobs, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 2},
            },
        )

    with LlamaServerBackend("http://fake", random_model, transport=_fake_server(handler)) as srv:
        gen = srv.complete("Hi", GenerationParams(max_tokens=2))
        assert gen.text == "ok"
        assert gen.token_ids == tuple(srv.tokenize("ok"))
        assert gen.fingerprint[1] == ((srv.tokenize("k")[0], -0.2), (srv.tokenize("q")[0], -2.0))
    assert seen[0]["repeat_penalty"] == 1.0
    assert seen[0]["temperature"] == 0.0 and seen[0]["logprobs"] == 5


def test_server_garbage_answer_is_a_generation_error(random_model: ModelFile) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": []})
        return httpx.Response(200, json={"choices": []})

    with LlamaServerBackend("http://fake", random_model, transport=_fake_server(handler)) as srv:
        with pytest.raises(GenerationError, match="unexpected completion"):
            srv.complete("Hi")


# --- the factory ----------------------------------------------------------------------------


def test_factory_opens_in_process_by_default(cache: Path) -> None:
    settings = LLMSettings(model="tiny", n_ctx=128, n_threads=1, n_batch=32)
    with open_backend(settings, cache_dir=cache) as llm:
        assert isinstance(llm, LlamaCppBackend)
        assert llm.info.n_ctx == 128
        assert llm.info.n_batch == 32
        assert llm.complete("Hi", GenerationParams(max_tokens=32)).text == SCRIPTED_OUTPUT


def test_factory_picks_the_server_when_a_url_is_set(cache: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(LLMServerUnavailable, match=url):
        open_backend(LLMSettings(model="tiny", server_url=url), cache_dir=cache)


def test_factory_checks_the_pinned_hash(cache: Path) -> None:
    with pytest.raises(ModelHashMismatch):
        open_backend(LLMSettings(model="tiny", sha256="2" * 64), cache_dir=cache)


def test_factory_opens_a_stub_spec(cache: Path) -> None:
    from chefsplan_agents.llm import StubBackend

    with open_backend(LLMSettings(model="stub:0", n_ctx=256), cache_dir=cache) as llm:
        assert isinstance(llm, StubBackend)
        assert llm.info.n_ctx == 256


def test_factory_knows_the_short_model_names(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chefsplan_agents.llm import _factory

    # An alias resolves to the model it names: here, the scripted test model.
    monkeypatch.setitem(_factory.MODEL_ALIASES, "scripted", "tiny")
    settings = LLMSettings(model="scripted", n_ctx=128, n_threads=1, n_batch=32)
    with open_backend(settings, cache_dir=cache) as llm:
        assert llm.info.name == "chefsplan-tiny-scripted"
    assert _factory.MODEL_ALIASES["smollm2"] == "smollm2-135m"


@pytest.mark.parametrize("preset", [None, "PASSIVE"])
def test_openmp_wait_policy_is_left_to_the_environment(preset: str | None) -> None:
    # The spin-or-sleep trade-off depends on whether the node shares its cores (see
    # docs/operators.md): the package must not decide it behind the operator's back.
    import os

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    code = (
        "import os, chefsplan_agents.llm, chefsplan_agents.llm._llamacpp; "
        "print(os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == (preset or "unset")


def test_collector_is_off_during_generation_and_back_after(random_model: ModelFile) -> None:
    import gc

    seen: list[bool] = []

    def watch(_token: int, _piece: str) -> None:
        seen.append(gc.isenabled())

    def fail(_token: int, _piece: str) -> None:
        raise KeyError("stop here")

    assert gc.isenabled()
    with LlamaCppBackend(random_model, n_ctx=128, n_threads=1, n_batch=64) as llm:
        llm.complete("hello", GenerationParams(max_tokens=4), on_token=watch)
        assert seen and not any(seen)  # no collection can pause the token loop
        assert gc.isenabled()
        with pytest.raises(KeyError):
            llm.complete("hello", GenerationParams(max_tokens=4), on_token=fail)
        assert gc.isenabled()  # back on after a failure too
        gc.disable()
        try:
            llm.complete("hello", GenerationParams(max_tokens=2))
            assert not gc.isenabled()  # a caller's own choice is left alone
        finally:
            gc.enable()


def test_a_bad_template_fails_every_time_and_good_ones_compile_once() -> None:
    from chefsplan_agents.llm._base import _compiled_template

    bad = "{% for m in messages %}"  # never closed
    for _ in range(2):  # a failed compile is not cached as a success
        with pytest.raises(GenerationError, match="chat template failed"):
            render_chat(bad, [ChatMessage(role="user", content="x")])
    template = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
    first = render_chat(template, [ChatMessage(role="user", content="a")])
    second = render_chat(template, [ChatMessage(role="user", content="b")])
    assert (first, second) == ("[a]", "[b]")  # one compiled template, rendered per call
    assert _compiled_template(template) is _compiled_template(template)


def test_direct_calls_on_the_shared_llama_agree_with_the_backend(random_model: ModelFile) -> None:
    llm = LlamaCppBackend(random_model, n_ctx=128, n_threads=1, n_batch=64)
    with llm:
        ours = llm.complete("hello", GenerationParams(max_tokens=6))
        llama = llm.llama
        assert llama.model_path == str(random_model.path)
        direct = llama.create_completion(
            "hello", max_tokens=6, temperature=0.0, repeat_penalty=1.0, seed=0
        )
        assert direct["choices"][0]["text"] == ours.text  # the same model, greedy
        again = llm.complete("hello", GenerationParams(max_tokens=6))  # nothing left over
        assert (again.token_ids, again.fingerprint) == (ours.token_ids, ours.fingerprint)
    with pytest.raises(LLMError, match="closed"):
        _ = llm.llama


def test_fingerprints_are_per_position_across_batches(random_model: ModelFile) -> None:
    # Positions are fingerprinted in batches of 16: 40 tokens span two whole batches and a
    # partial one. Each position must carry its own logits' numbers, in order.
    with LlamaCppBackend(random_model, n_ctx=256, n_threads=1, n_batch=64) as llm:
        gen = llm.complete("Dinner for two", GenerationParams(max_tokens=40))
        assert len(gen.token_ids) == len(gen.fingerprint) == len(gen.token_logprobs) == 40
        scored = llm.rescore("Dinner for two", gen.token_ids, k=5)
        for i, (chosen, top, pos) in enumerate(
            zip(gen.token_logprobs, gen.fingerprint, scored.positions, strict=True)
        ):
            assert [t for t, _ in top] == [t for t, _ in pos.top], i
            assert chosen == pytest.approx(pos.logprob, abs=1e-4), i
            assert [lp for _, lp in top] == pytest.approx([lp for _, lp in pos.top], abs=1e-4)
        # A stop string that cuts the text mid-batch keeps the three lists aligned.
        cut = gen.text[: len(gen.text) // 2].rstrip()[-3:]
        stopped = llm.complete("Dinner for two", GenerationParams(max_tokens=40, stop=(cut,)))
        n = len(stopped.token_ids)
        assert 0 < n < 40 and stopped.finish_reason == "stop"
        assert stopped.fingerprint == gen.fingerprint[:n]
        assert stopped.token_logprobs == gen.token_logprobs[:n]
