"""The LLMBackend conformance suite, run against every backend.

``LLMBackendConformance`` holds the tests; each backend subclasses it and says how to open a
backend for a model file. Two tiny models drive it: the *scripted* one, whose greedy output is
a known string (so a broken tokenizer, sampler or template fails loudly), and the *random*
one, whose spread-out logprobs exercise fingerprints and re-scoring like a real model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chefsplan_agents.errors import ContextOverflow, InvalidGenerationParams, LLMError
from chefsplan_agents.llm import (
    SCRIPTED_OUTPUT,
    ChatMessage,
    GenerationParams,
    LlamaCppBackend,
    LlamaServerBackend,
    LLMBackend,
    ModelFile,
    build_tiny_model,
    claimed_tokens_top1_fraction,
    fingerprint_agreement,
    resolve_model,
    scripted_continuation,
    serve_model,
    server_extra_missing,
)

N_CTX = 256


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelFile]:
    root = tmp_path_factory.mktemp("tiny-models")
    out = {}
    for variant in ("scripted", "random"):
        path = build_tiny_model(root / f"{variant}.gguf", variant=variant)
        out[variant] = resolve_model(path, cache_dir=root)
    return out


class LLMBackendConformance:
    """Behaviour every LLMBackend must have. Subclasses implement :meth:`open_backend`."""

    @classmethod
    def open_backend(cls, model: ModelFile) -> Iterator[LLMBackend]:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def scripted(cls, tiny_models: dict[str, ModelFile]) -> Iterator[LLMBackend]:
        yield from cls.open_backend(tiny_models["scripted"])

    @pytest.fixture(scope="class")
    @classmethod
    def rand(cls, tiny_models: dict[str, ModelFile]) -> Iterator[LLMBackend]:
        yield from cls.open_backend(tiny_models["random"])

    # --- known answers ----------------------------------------------------------------------

    def test_is_an_llm_backend(self, scripted: LLMBackend) -> None:
        assert isinstance(scripted, LLMBackend)

    def test_scripted_greedy_output_is_the_known_string(self, scripted: LLMBackend) -> None:
        gen = scripted.complete("Hello", GenerationParams(max_tokens=32))
        assert gen.text == SCRIPTED_OUTPUT
        assert gen.finish_reason == "stop"
        assert gen.completion_tokens == len(SCRIPTED_OUTPUT) == len(gen.token_ids)
        assert gen.prompt_tokens == 5

    def test_scripted_continues_from_the_prompts_last_character(self, scripted: LLMBackend) -> None:
        gen = scripted.complete("Say CHEF", GenerationParams(max_tokens=32))
        assert gen.text == scripted_continuation("Say CHEF") == "SPLAN OK"

    def test_chat_uses_the_template_and_stops_at_end_of_turn(self, scripted: LLMBackend) -> None:
        gen = scripted.chat(
            [
                ChatMessage(role="system", content="Be brief."),
                ChatMessage(role="user", content="Hi"),
            ],
            GenerationParams(max_tokens=32),
        )
        assert gen.text == SCRIPTED_OUTPUT
        assert gen.finish_reason == "stop"
        # system + user turns and the opened assistant turn, one token per character.
        expected_prompt = (
            "<|im_start|>system\nBe brief.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        )
        assert gen.prompt_tokens == len(scripted.tokenize(expected_prompt))

    def test_chat_answer_rescores_against_format_chat(self, scripted: LLMBackend) -> None:
        messages = [ChatMessage(role="user", content="Soup?")]
        gen = scripted.chat(messages)
        prompt = scripted.format_chat(messages)
        assert prompt.endswith("<|im_start|>assistant\n")
        assert scripted.rescore(prompt, gen.token_ids).top1_fraction == 1.0

    def test_max_tokens_ends_with_length(self, scripted: LLMBackend) -> None:
        gen = scripted.complete("Hello", GenerationParams(max_tokens=4))
        assert gen.text == SCRIPTED_OUTPUT[:4]
        assert gen.finish_reason == "length"

    def test_stop_string_cuts_text_and_tokens_together(self, scripted: LLMBackend) -> None:
        gen = scripted.complete("Hello", GenerationParams(max_tokens=32, stop=("SP", "ZZ")))
        assert gen.text == "CHEF"
        assert gen.finish_reason == "stop"
        assert scripted.detokenize(gen.token_ids) == gen.text
        assert len(gen.fingerprint) == len(gen.token_ids) == 4

    # --- tokens -----------------------------------------------------------------------------

    def test_token_ids_and_text_agree(self, rand: LLMBackend) -> None:
        gen = rand.complete("The kitchen", GenerationParams(max_tokens=24))
        assert len(gen.token_ids) == gen.completion_tokens == 24
        assert rand.detokenize(gen.token_ids) == gen.text
        assert gen.text and gen.text.isprintable()

    def test_tokenize_round_trips_ascii(self, rand: LLMBackend) -> None:
        text = "Order #42: 3 eggs, 1 pan!"
        ids = rand.tokenize(text)
        assert len(ids) == len(text)  # the tiny vocabulary has one token per character
        assert rand.detokenize(ids) == text

    def test_tokenize_parses_chatml_specials(self, rand: LLMBackend) -> None:
        assert len(rand.tokenize("<|im_start|>user")) == 1 + len("user")

    def test_non_ascii_falls_back_to_bytes(self, rand: LLMBackend) -> None:
        ids = rand.tokenize("crème")
        assert len(ids) == len("crème".encode())
        assert rand.detokenize(ids) == "crème"

    def test_out_of_vocabulary_id_is_a_clear_error(self, rand: LLMBackend) -> None:
        with pytest.raises(InvalidGenerationParams, match="outside the vocabulary of 356"):
            rand.detokenize([1, 356])

    # --- determinism and fingerprints -------------------------------------------------------

    def test_greedy_is_deterministic(self, rand: LLMBackend) -> None:
        params = GenerationParams(max_tokens=32)
        a = rand.complete("Recipe:", params)
        b = rand.complete("Recipe:", params)
        assert a.text.encode() == b.text.encode()
        assert a.token_ids == b.token_ids
        assert [[t for t, _ in pos] for pos in a.fingerprint] == [
            [t for t, _ in pos] for pos in b.fingerprint
        ]

    def test_seeded_sampling_is_reproducible_and_seed_matters(self, rand: LLMBackend) -> None:
        def run(seed: int) -> tuple[int, ...]:
            params = GenerationParams(max_tokens=24, temperature=1.5, top_k=0, seed=seed)
            return rand.complete("Recipe:", params).token_ids

        assert run(7) == run(7)
        assert len({run(seed) for seed in (1, 2, 3)}) > 1

    @pytest.mark.parametrize("k", [1, 3, 7])
    def test_fingerprint_shape(self, rand: LLMBackend, k: int) -> None:
        gen = rand.complete("Pasta", GenerationParams(max_tokens=10, logprobs=k))
        assert len(gen.fingerprint) == len(gen.token_ids) == len(gen.token_logprobs) == 10
        for tok, chosen, top in zip(
            gen.token_ids, gen.token_logprobs, gen.fingerprint, strict=True
        ):
            assert len(top) == k
            lps = [lp for _, lp in top]
            assert lps == sorted(lps, reverse=True)
            assert all(lp <= 0.0 for lp in lps)
            assert top[0][0] == tok  # greedy picks the top token
            assert chosen == pytest.approx(top[0][1], abs=1e-4)

    # --- re-scoring -------------------------------------------------------------------------

    def test_rescore_of_own_output_agrees(self, rand: LLMBackend) -> None:
        gen = rand.complete("Dinner for two", GenerationParams(max_tokens=24))
        result = rand.rescore("Dinner for two", gen.token_ids, k=5)
        assert len(result.positions) == 24
        assert claimed_tokens_top1_fraction(result) == 1.0
        assert fingerprint_agreement(gen.fingerprint, result) >= 0.99
        assert [p.token_id for p in result.positions] == list(gen.token_ids)
        assert result.model_sha256 == rand.info.sha256

    def test_rescore_accepts_prompt_token_ids(self, rand: LLMBackend) -> None:
        gen = rand.complete("Soup", GenerationParams(max_tokens=8))
        by_ids = rand.rescore(rand.tokenize("Soup"), gen.token_ids)
        assert by_ids.top1_fraction == 1.0
        assert by_ids.prompt_tokens == gen.prompt_tokens

    def test_rescore_with_bos_tokens_inside_the_prompt(self, rand: LLMBackend) -> None:
        # chatml models use <|im_start|> as BOS, so BOS ids occur inside chat prompts.
        prompt = "<s>Soup<s> for two\n"
        assert rand.tokenize(prompt).count(1) == 2
        gen = rand.complete(prompt, GenerationParams(max_tokens=12))
        result = rand.rescore(prompt, gen.token_ids)
        assert result.top1_fraction == 1.0
        assert fingerprint_agreement(gen.fingerprint, result) >= 0.99

    def test_tampered_continuation_scores_lower(self, rand: LLMBackend) -> None:
        gen = rand.complete("Dinner for two", GenerationParams(max_tokens=24))
        forged = list(gen.token_ids)
        # Swap three tokens for the model's *least* likely choice among its top 5.
        for i in (3, 10, 17):
            forged[i] = gen.fingerprint[i][-1][0]
        result = rand.rescore("Dinner for two", forged)
        assert result.positions[3].rank > 1
        assert claimed_tokens_top1_fraction(result) < 1.0
        assert fingerprint_agreement(gen.fingerprint, result) < 0.99

    def test_rescore_of_empty_continuation(self, rand: LLMBackend) -> None:
        result = rand.rescore("Soup", [])
        assert result.positions == ()
        assert result.top1_fraction == 1.0

    # --- errors -----------------------------------------------------------------------------

    def test_context_overflow_is_refused_before_running(self, rand: LLMBackend) -> None:
        prompt = "x" * (N_CTX - 10)
        with pytest.raises(ContextOverflow, match=r"exceeds the model context of 256") as info:
            rand.complete(prompt, GenerationParams(max_tokens=11))
        assert "\n" not in str(info.value)
        rand.complete(prompt, GenerationParams(max_tokens=10))  # exactly fits

    def test_rescore_overflow(self, rand: LLMBackend) -> None:
        with pytest.raises(ContextOverflow):
            rand.rescore("x" * 200, [300] * 100)

    def test_empty_prompt_is_refused(self, rand: LLMBackend) -> None:
        with pytest.raises(InvalidGenerationParams, match="prompt is empty"):
            rand.complete("")

    def test_info_describes_the_model(
        self, rand: LLMBackend, tiny_models: dict[str, ModelFile]
    ) -> None:
        info = rand.info
        assert info.sha256 == tiny_models["random"].sha256
        assert info.n_vocab == 356
        assert info.n_ctx == N_CTX
        assert info.quantization == "F32"
        assert "llama-cpp-python 0.3." in info.llama_cpp


class TestLlamaCppBackend(LLMBackendConformance):
    @classmethod
    def open_backend(cls, model: ModelFile) -> Iterator[LLMBackend]:
        with LlamaCppBackend(model, n_ctx=N_CTX, n_threads=1) as backend:
            yield backend

    def test_on_token_streams_every_piece(self, scripted: LLMBackend) -> None:
        seen: list[tuple[int, str]] = []
        gen = scripted.complete("Hello", on_token=lambda tok, piece: seen.append((tok, piece)))
        assert [t for t, _ in seen] == list(gen.token_ids)
        assert "".join(p for _, p in seen) == SCRIPTED_OUTPUT

    def test_closed_backend_refuses_work(self, tiny_models: dict[str, ModelFile]) -> None:
        backend = LlamaCppBackend(tiny_models["scripted"], n_ctx=64, n_threads=1)
        backend.close()
        backend.close()  # idempotent
        with pytest.raises(LLMError, match="closed"):
            backend.complete("Hi")


@pytest.mark.skipif(
    bool(server_extra_missing()),
    reason=f"llama-cpp-python[server] extra missing: {', '.join(server_extra_missing())}",
)
class TestLlamaServerBackend(LLMBackendConformance):
    @classmethod
    def open_backend(cls, model: ModelFile) -> Iterator[LLMBackend]:
        with (
            serve_model(model, n_ctx=N_CTX, n_threads=1) as url,
            LlamaServerBackend(url, model, n_ctx=N_CTX) as backend,
        ):
            yield backend

    def test_server_and_in_process_agree(
        self, rand: LLMBackend, tiny_models: dict[str, ModelFile]
    ) -> None:
        params = GenerationParams(max_tokens=16)
        remote = rand.complete("Menu", params)
        with LlamaCppBackend(tiny_models["random"], n_ctx=N_CTX, n_threads=1) as local:
            here = local.complete("Menu", params)
        assert remote.token_ids == here.token_ids
        assert remote.text == here.text
        assert fingerprint_agreement(remote.fingerprint, here.fingerprint, tolerance=1e-3) == 1.0


@pytest.mark.slow
def test_smollm2_greedy_is_deterministic_real_text(tmp_path: Path) -> None:
    try:
        model = resolve_model("smollm2-135m", cache_dir=tmp_path)
    except LLMError as err:
        pytest.skip(str(err))
    messages = [ChatMessage(role="user", content="Name three vegetables for a soup.")]
    params = GenerationParams(max_tokens=32)
    with LlamaCppBackend(model, n_ctx=512, n_threads=2) as llm:
        a = llm.chat(messages, params)
        b = llm.chat(messages, params)
        assert llm.info.quantization == "Q4_1"
    assert a.token_ids == b.token_ids and a.text == b.text
    assert a.completion_tokens > 5
    words = a.text.split()
    assert len(words) >= 3
    letters = sum(ch.isalpha() for ch in a.text)
    assert letters / max(len(a.text.replace(" ", "")), 1) > 0.6  # real words, not noise
