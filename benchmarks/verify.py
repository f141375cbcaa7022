"""Verification strategies against adversaries: detection, false positives and compute cost.

Runs :func:`chefsplan_agents.verify.run_adversarial_suite` — honest providers (one and two
threads, a newcomer, a sampled one) and one cheater per adversary of chefsplan_agents.testing,
each answering a stream of tasks — through four strategies: re-score every result in full,
spot-check every result, the verification policy (new providers always, established ones with
a probability), and redundancy (a second replica; differing outputs arbitrated by re-score).
Reports per adversary and strategy the detection rate, false positives, cheating tasks until
the first catch, and the verification compute ratio (verifier compute plus extra generations,
over generation compute), the gas one task costs per strategy, and plots cost against
detection per strategy.

Every verifier starts each re-score with an empty cache: the suite re-scores one result under
several strategies in turn, and a cache left by the first would make the later ones look cheap
(a verifier checking one strategy's results never holds the same prompt). The mix's prompts
share no prefix, so nothing a real verifier could reuse is lost.

    python benchmarks/verify.py [--json] [--write-docs] [--model tiny|smollm2]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _report  # noqa: E402
import gas  # noqa: E402

from chefsplan_agents.llm import LlamaCppBackend, LLMBackend, resolve_model  # noqa: E402
from chefsplan_agents.testing import requantize  # noqa: E402
from chefsplan_agents.verify import (  # noqa: E402
    BLIND_SPOTS,
    STRATEGIES,
    Models,
    SuiteReport,
    run_adversarial_suite,
)

IMG = Path(__file__).resolve().parent.parent / "docs" / "img"


_TITLES = {"smollm2": "SmolLM2-135M Q4_1"}


def _plot_path(model: str) -> Path:
    return IMG / ("verify_cost_detection.png" if model == "tiny" else f"verify_cost_{model}.png")


def _models(name: str, tmp: Path) -> tuple[Models, list[LLMBackend]]:
    def llm(model: str | Path, threads: int) -> LlamaCppBackend:
        return LlamaCppBackend(
            resolve_model(str(model)), n_threads=threads, reuse_rescore_prompt=False
        )

    if name == "tiny":
        opened = [llm("tiny", 1), llm("tiny", 2), llm("tiny-random", 1), llm("tiny-random", 2)]
        return Models(*opened, wrong=opened[2]), opened
    source = resolve_model("smollm2-135m").path
    cheap = requantize(source, tmp / "smollm2-q4_0.gguf", "Q4_0")
    one, two = llm("smollm2-135m", 1), llm("smollm2-135m", 2)
    wrong = llm(cheap, 1)
    return Models(one, two, one, two, wrong=wrong), [one, two, wrong]


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _plot(report: SuiteReport, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy in STRATEGIES:
        total = report.strategy_total(strategy)
        rate = total.detected / total.cheating if total.cheating else 0.0
        ax.scatter([total.compute_ratio], [rate], s=60)
        ax.annotate(
            strategy, (total.compute_ratio, rate), textcoords="offset points", xytext=(6, 4)
        )
    ax.set_xscale("log")
    ax.set_xlabel("verification compute / generation compute (log)")
    ax.set_ylabel("share of cheating tasks detected")
    ax.set_ylim(0, 1.05)
    ax.axvline(0.10, linestyle=":", color="grey")
    ax.set_title("Verification cost against detection, per strategy")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _gas_per_task() -> dict[str, int]:
    """Gas of one task's lifecycle under each strategy (TaskMarket on the in-process EVM).

    A re-score runs off chain, so ``full``, ``spot`` and ``policy`` settle a task as one
    replica; ``redundancy`` pays for a second replica's claim and reveal and a quorum of two.
    """
    bench = gas.Bench()
    one = bench.run("1 replica", 1, 1, window=0, commit="last_reveals").total
    two = bench.run("2 replicas", 2, 2, window=0, commit="last_reveals").total
    return {"full": one, "spot": one, "policy": one, "redundancy": two}


def main() -> None:
    p = _report.parser(__doc__.splitlines()[0])
    p.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    p.add_argument("--cheating-tasks", type=int, default=20)
    p.add_argument("--honest-tasks", type=int, default=20)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models, opened = _models(args.model, Path(tmp))
        try:
            report = run_adversarial_suite(
                models, cheating_tasks=args.cheating_tasks, honest_tasks=args.honest_tasks
            )
        finally:
            for backend in opened:
                backend.close()
    gas_per_task = _gas_per_task()
    rows: list[list[Any]] = []
    per_mode: dict[str, Any] = {}
    for name, per in report.stats.items():
        per_mode[name] = {}
        for strategy in STRATEGIES:
            s = per[strategy]
            fp = s.false_positives / s.honest_tasks if s.honest_tasks else None
            per_mode[name][strategy] = {
                "tasks": s.tasks,
                "cheating_tasks": s.cheating,
                "detection_rate": s.detection_rate,
                "false_positive_rate": fp,
                "tasks_to_first_catch": s.first_catch,
                "verification_compute_ratio": round(s.compute_ratio, 4),
            }
            rows.append(
                [
                    name,
                    strategy,
                    s.tasks,
                    s.cheating,
                    _fmt(s.detection_rate),
                    _fmt(fp),
                    s.first_catch or "-",
                    _fmt(s.compute_ratio),
                ]
            )
    totals: dict[str, Any] = {}
    for strategy in STRATEGIES:
        t = report.strategy_total(strategy)
        totals[strategy] = {
            "detection_rate": t.detection_rate,
            "false_positive_rate": t.false_positives / t.honest_tasks if t.honest_tasks else 0.0,
            "max_tasks_to_catch": report.max_tasks_to_catch(strategy),
            "verification_compute_ratio": round(t.compute_ratio, 4),
            "gas_per_task": gas_per_task[strategy],
        }
        rows.append(
            [
                "**all**",
                strategy,
                t.tasks,
                t.cheating,
                _fmt(t.detection_rate),
                _fmt(totals[strategy]["false_positive_rate"]),
                report.max_tasks_to_catch(strategy) or "-",
                _fmt(t.compute_ratio, 3),
            ]
        )
    plot = _plot_path(args.model)
    plotted = _plot(report, plot)
    summary = {
        "model": args.model,
        "total_tasks": report.total_tasks,
        "policy_probability_established": report.policy_probability,
        "blind_spots": list(BLIND_SPOTS),
        "strategies": totals,
        "modes": per_mode,
        "verification_compute_ratio": totals["policy"]["verification_compute_ratio"],
        "max_tasks_to_catch": totals["policy"]["max_tasks_to_catch"],
        "gas_per_task": gas_per_task,
        "plot": str(plot.relative_to(IMG.parent)) if plotted else None,
    }
    notes = (
        f"{report.total_tasks} tasks, model `{args.model}`; the policy checks an established "
        f"provider with p = {report.policy_probability:.2f}. `max tasks to catch` counts "
        f"cheating tasks and leaves out {', '.join(BLIND_SPOTS)} (a near-tie swap: only "
        "`mode='exact'` sees it). Compute ratio: verifier model time, plus one generation per "
        "redundant replica, over the generation time of the same tasks; every re-score "
        "starts from an empty cache. Gas per task (TaskMarket, open task, window 0): "
        + ", ".join(f"{k} {v:,}" for k, v in gas_per_task.items())
        + " (a re-score runs off chain; redundancy adds a replica's claim and reveal)."
    )
    if plotted:
        notes += f"\n\n![cost against detection](img/{plot.name})"
    title = "Verification: policy, spot checks, redundancy against adversaries"
    _report.report(
        args,
        name="verify" if args.model == "tiny" else f"verify_{args.model}",
        title=title if args.model == "tiny" else f"{title} ({_TITLES[args.model]})",
        columns=[
            "provider",
            "strategy",
            "tasks",
            "cheating",
            "detection",
            "false pos.",
            "tasks to catch",
            "compute ratio",
        ],
        rows=rows,
        summary=summary,
        notes=notes,
    )


if __name__ == "__main__":
    main()
