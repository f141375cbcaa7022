"""Local LLM costs: tiny model build/load, SmolLM2 generation, server overhead, re-scoring.

Baseline: llama-cpp-python's own ``create_completion`` (greedy, 64 tokens, no logprobs) on
SmolLM2-135M Q4_1, run on the backend's own ``llama_cpp.Llama`` (``LlamaCppBackend.llama``).
Ours: ``LlamaCppBackend.complete`` (which also records a top-5 logprob fingerprint per token),
``LlamaServerBackend.complete`` through ``python -m llama_cpp.server`` on loopback, and
``rescore`` of the same 64 tokens (one prefill pass) in process. Reported: the best of a few
interleaved runs (the machine is shared, so the minimum is the steadiest estimate of the cost
itself), tokens/s and ratios to the baseline.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import parser, report  # noqa: E402

from chefsplan_agents.llm import (  # noqa: E402
    ChatMessage,
    GenerationParams,
    LlamaCppBackend,
    LlamaServerBackend,
    build_tiny_model,
    fingerprint_agreement,
    resolve_model,
    serve_model,
    server_extra_missing,
)

N_TOKENS = 64
ROUNDS = 5
THREADS = 2
QUESTION = "Write a short recipe for a tomato soup, step by step."


def _best_ms(*runs: Callable[[], object], rounds: int = ROUNDS) -> list[float]:
    """Best wall time of each run, the runs interleaved so that load hits them alike."""
    best = [float("inf")] * len(runs)
    for _ in range(rounds):
        for i, run in enumerate(runs):
            start = time.perf_counter()
            run()
            best[i] = min(best[i], time.perf_counter() - start)
    return [b * 1000 for b in best]


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    rows: list[list[Any]] = []
    summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="chefsplan-bench-llm-") as tmp:
        cache = Path(tmp)
        # --- tiny model: build and load -----------------------------------------------------
        (build_ms,) = _best_ms(lambda: build_tiny_model(cache / "tiny.gguf"))
        size = (cache / "tiny.gguf").stat().st_size
        tiny = resolve_model(cache / "tiny.gguf", cache_dir=cache)

        def load_tiny() -> None:
            LlamaCppBackend(tiny, n_ctx=256, n_threads=1).close()

        (load_ms,) = _best_ms(load_tiny)
        rows.append(["tiny model: build", f"{build_ms:.1f} ms", f"{size / 1024:.0f} KiB", ""])
        rows.append(["tiny model: load", f"{load_ms:.1f} ms", "", ""])
        summary["tiny_build_ms"] = round(build_ms, 2)
        summary["tiny_size_bytes"] = size
        summary["tiny_load_ms"] = round(load_ms, 2)

        # --- SmolLM2 in process ---------------------------------------------------------------
        model = resolve_model("smollm2-135m", cache_dir=cache)
        messages = [ChatMessage(role="user", content=QUESTION)]
        # Run to the full 64 tokens: no end-of-turn stop, so every run generates the same count.
        params = GenerationParams(max_tokens=N_TOKENS, stop=())
        start = time.perf_counter()
        llm = LlamaCppBackend(model, n_ctx=1024, n_threads=THREADS)
        smol_load_ms = (time.perf_counter() - start) * 1000
        prompt = llm.format_chat(messages)  # the same text every backend sees
        # The backend's own llama_cpp.Llama: two instances of one model ran up to 5% apart here.
        raw = llm.llama

        def baseline() -> None:
            raw.reset()  # type: ignore[no-untyped-call]
            raw.create_completion(
                prompt, max_tokens=N_TOKENS, temperature=0.0, repeat_penalty=1.0, top_k=1
            )

        gen = llm.complete(prompt, params)  # warm up, and the claim to re-score
        baseline()
        gens = []
        results = []

        def ours() -> None:
            gens.append(llm.complete(prompt, params))

        def rescore() -> None:
            results.append(llm.rescore(prompt, gen.token_ids, k=5))

        def prompt_only() -> None:
            llm.rescore(prompt, gen.token_ids[:1], k=5)

        base_ms, ours_ms, rescore_ms, prompt_only_ms = _best_ms(
            baseline, ours, rescore, prompt_only
        )
        n_gen = gen.completion_tokens
        prefill_tps = max(g.timings.prompt_tokens_per_s for g in gens)
        gen_tps = max(g.timings.generation_tokens_per_s for g in gens)
        agreement = fingerprint_agreement(gen.fingerprint, results[-1])
        top1 = results[-1].top1_fraction
        llm.close()
        rows.append(["SmolLM2 load (in process)", f"{smol_load_ms:.0f} ms", "", ""])
        rows.append(
            [
                f"baseline: llama-cpp-python create_completion, {N_TOKENS} tok",
                f"{base_ms:.0f} ms",
                "",
                "1.00x",
            ]
        )
        rows.append(
            [
                f"ours: LlamaCppBackend.complete + top-5 fingerprint, {n_gen} tok",
                f"{ours_ms:.0f} ms",
                f"prefill {prefill_tps:.0f} tok/s, gen {gen_tps:.0f} tok/s",
                f"{ours_ms / base_ms:.2f}x",
            ]
        )
        rows.append(
            [
                f"ours: rescore prompt + {n_gen} claimed tokens (one prefill)",
                f"{rescore_ms:.0f} ms",
                f"top-1 {top1:.2f}, agreement {agreement:.2f}",
                f"{rescore_ms / ours_ms:.2f}x of generating",
            ]
        )
        rows.append(
            [
                "  of which the prompt alone",
                f"{prompt_only_ms:.0f} ms",
                f"continuation {rescore_ms - prompt_only_ms:.0f} ms",
                "",
            ]
        )
        summary.update(
            smollm2_load_ms=round(smol_load_ms, 1),
            baseline_ms=round(base_ms, 1),
            complete_ms=round(ours_ms, 1),
            completion_tokens=n_gen,
            prompt_tokens=gen.prompt_tokens,
            prefill_tokens_per_s=round(prefill_tps, 1),
            generation_tokens_per_s=round(gen_tps, 1),
            rescore_ms=round(rescore_ms, 1),
            rescore_prompt_only_ms=round(prompt_only_ms, 1),
            rescore_over_generation=round(rescore_ms / ours_ms, 3),
            rescore_top1_fraction=top1,
            rescore_agreement=round(agreement, 3),
        )

        # --- SmolLM2 through the HTTP server --------------------------------------------------
        if server_extra_missing():
            rows.append(["server", "skipped", "llama-cpp-python[server] missing", ""])
        else:
            with (
                serve_model(model, n_ctx=1024, n_threads=THREADS) as url,
                LlamaServerBackend(url, model, n_ctx=1024) as srv,
            ):
                remote = []

                def via_server() -> None:
                    remote.append(srv.complete(prompt, params))

                def plain_http() -> None:
                    # The same request without logprobs: what the HTTP hop itself costs.
                    body = {
                        "prompt": prompt,
                        "max_tokens": N_TOKENS,
                        "temperature": 0.0,
                        "repeat_penalty": 1.0,
                    }
                    httpx.post(url + "/v1/completions", json=body, timeout=300).raise_for_status()

                via_server()  # warm up
                server_ms, plain_ms = _best_ms(via_server, plain_http, rounds=3)
                same = remote[-1].token_ids == gen.token_ids
                (srv_rescore_ms,) = _best_ms(
                    lambda: srv.rescore(prompt, gen.token_ids, k=5), rounds=1
                )
            n = remote[-1].completion_tokens
            rows.append(
                [
                    f"ours: LlamaServerBackend.complete + logprobs, {n} tok",
                    f"{server_ms:.0f} ms",
                    f"{n / (server_ms / 1000):.0f} tok/s overall; same tokens: {same}",
                    f"{server_ms / base_ms:.2f}x",
                ]
            )
            rows.append(
                [
                    f"server /v1/completions without logprobs, {N_TOKENS} tok",
                    f"{plain_ms:.0f} ms",
                    "the HTTP hop alone",
                    f"{plain_ms / base_ms:.2f}x",
                ]
            )
            rows.append(
                [
                    "ours: LlamaServerBackend.rescore (echo)",
                    f"{srv_rescore_ms:.0f} ms",
                    "server sorts the vocabulary per position",
                    "",
                ]
            )
            summary.update(
                server_complete_ms=round(server_ms, 1),
                server_minus_in_process_ms=round(server_ms - ours_ms, 1),
                server_without_logprobs_ms=round(plain_ms, 1),
                server_same_tokens=same,
                server_rescore_ms=round(srv_rescore_ms, 1),
            )
    report(
        args,
        name="llm",
        title=f"Local LLM (SmolLM2-135M Q4_1, {THREADS} threads, {N_TOKENS}-token greedy)",
        columns=["what", "time", "detail", "ratio"],
        rows=rows,
        summary=summary,
        notes=(
            "Re-scoring costs one prefill over prompt + claimed tokens; the row below it shows "
            "how much of that is the prompt. Through the server, logprobs are expensive: "
            "llama-cpp-python's server sorts the whole 49k vocabulary in Python for every "
            "position, so verification should re-score in process."
        ),
    )


if __name__ == "__main__":
    main()
