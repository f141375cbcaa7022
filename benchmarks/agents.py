"""The agents' cost: one Copilot turn against the same delegations made through the tools.

Model: the scripted tiny test model by default (``--model smollm2`` for SmolLM2-135M), three
provider nodes on the embedded devnet (in-process EVM, in-memory CID store), a local verifier
running the same model, 1 thread, 16 new tokens.

* ``turn_vs_tools_wall``: wall time of ``await agents.run(task=...)`` (``agents =
  team(devnet.network)``, built once, run on one event loop) for a
  request at trust ``normal`` — the Copilot's plan; Matching's ranking, posting (one assigned
  replica) and collection with the verifier's re-score; Compliance's policy check, second
  opinion (a re-score), verdict logged on chain; the Copilot's answer with its sources —
  divided by the wall time of the same calls made directly: ``find_providers``,
  ``delegate_task(trust="normal")``, ``check_policy``, ``second_opinion`` and
  ``log_output``. Goal ≤ 1.10.

Both paths run once per round, every other round in reverse order; the ratio is the median of
the ratios within a round, wall times the best of the rounds.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import parser, report  # noqa: E402

from chefsplan_agents.agents import team  # noqa: E402
from chefsplan_agents.devnet import Devnet  # noqa: E402
from chefsplan_agents.errors import ModelNotFound  # noqa: E402
from chefsplan_agents.llm import LlamaCppBackend, resolve_model  # noqa: E402
from chefsplan_agents.tools import (  # noqa: E402
    check_policy,
    delegate_task,
    find_providers,
    log_output,
    second_opinion,
)

N_TOKENS = 16
ROUNDS = 8
THREADS = 1
QUESTION = "Write a short recipe for a tomato soup."
# A recorded --model smollm2 measurement, kept in the default (tiny) run's notes.
SMOLLM2_NOTE = (
    "With `--model smollm2` (SmolLM2-135M, 16 new tokens), measured 2026-12-02 10:44–10:46 UTC "
    "while other work shared the 2 cores (load average 5.6–6.3): three runs of 3 rounds gave "
    "turn/tools 1.054, 1.262 and 1.020 (best tools wall 1306, 972 and 1718 ms; median "
    "overhead 71, 254 and 35 ms), one run of 8 rounds 1.065 (tools 1228 ms, turn 1271 ms, "
    "overhead 83 ms). The model's own time swings by hundreds of milliseconds under that "
    "load, so these ratios sit within the noise of the goal; an earlier 3-round run measured "
    "0.95 at an unrecorded load. Re-measure on a quiet machine for a firm number."
)


def main() -> None:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--rounds", type=int, default=ROUNDS, help="timed rounds per path")
    cli.add_argument("--model", default="tiny", help="devnet model: tiny (default) or smollm2")
    args = cli.parse_args()

    try:
        devnet = Devnet.create(
            nodes=3, model=args.model, share_model=True, n_threads=THREADS, n_ctx=1024
        )
    except ModelNotFound as err:
        sys.exit(f"benchmarks/agents.py needs the model: {err}")
    spec = "tiny" if args.model == "tiny" else "smollm2-135m"
    with devnet, LlamaCppBackend(resolve_model(spec), n_threads=THREADS, n_ctx=1024) as verifier:
        net = devnet.network
        net.verifier = verifier
        task = f"max_tokens: {N_TOKENS}\n{QUESTION}"

        # An app holds one team and runs its turns on one event loop.
        loop = asyncio.new_event_loop()
        agents = team(net)

        def turn() -> str:
            result = loop.run_until_complete(agents.run(task=task))
            return str(result.messages[-1].content).split("\n", 1)[0]

        def tools() -> str:
            find_providers(net)
            receipt = delegate_task(net, QUESTION, max_tokens=N_TOKENS, trust="normal")
            check_policy(net, receipt.output)
            second_opinion(net, receipt.result_cid)
            verdict = json.dumps({"verdict": "accepted", "tasks": [receipt.task_id]})
            log_output(net, verdict, receipt.task_id)
            return receipt.output.split("\n", 1)[0]

        runs: dict[str, Any] = {"tools": tools, "turn": turn}
        for run in runs.values():
            run()  # warm-up
        times: dict[str, list[float]] = {name: [] for name in runs}
        outputs: dict[str, str] = {}
        for i in range(args.rounds):
            order = list(runs) if i % 2 == 0 else list(reversed(runs))
            for name in order:
                start = time.perf_counter()
                outputs[name] = runs[name]()
                times[name].append(time.perf_counter() - start)
        loop.close()
    assert outputs["turn"] == outputs["tools"], (outputs, "both paths must give the same answer")

    best = {name: min(ts) for name, ts in times.items()}
    ratio = statistics.median(a / b for a, b in zip(times["turn"], times["tools"], strict=True))
    overhead_ms = statistics.median(
        (a - b) * 1000 for a, b in zip(times["turn"], times["tools"], strict=True)
    )
    rows = [
        ["the same calls through the tools", f"{best['tools'] * 1000:.0f}", "1.000"],
        ["one Copilot turn: agents.run(task=…)", f"{best['turn'] * 1000:.0f}", f"{ratio:.3f}"],
    ]
    summary = {
        "model": args.model,
        "threads": THREADS,
        "new_tokens": N_TOKENS,
        "tools_wall_ms": round(best["tools"] * 1000, 1),
        "turn_wall_ms": round(best["turn"] * 1000, 1),
        "turn_vs_tools_wall": round(ratio, 4),
        "turn_vs_tools_goal": 1.10,
        "turn_overhead_ms": round(overhead_ms, 2),
        "rounds": args.rounds,
    }
    notes = (
        f"Goal: turn/tools ≤ 1.10 (measured {ratio:.3f}; the agents add a median "
        f"{overhead_ms:.1f} ms per turn). Most of it is AgentChat's own: routing a turn's four "
        "messages and ten tool-call events through its runtime, with a handful of hand-offs "
        "to worker threads, costs 5–8 ms here even for agents that do nothing. The overhead is "
        "fixed, so the ratio falls towards 1 as the model's runs grow (the tiny model's take "
        "milliseconds)."
    )
    if args.model == "tiny":
        notes += " " + SMOLLM2_NOTE
    report(
        args,
        name="agents",
        title="Agents: a Copilot turn against the same calls through the tools",
        columns=["path (request → answer)", "best wall ms", "median ratio"],
        rows=rows,
        summary=summary,
        notes=notes,
    )


if __name__ == "__main__":
    main()
