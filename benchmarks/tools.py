"""The tools' cost: a ``delegate_task`` call against the same ``Requester`` call underneath.

Model: SmolLM2-135M Q4_1, 2 threads, greedy, 64 new tokens, one chat prompt, one provider node
on the embedded devnet (in-process EVM, in-memory CID store). ``--model tiny`` runs the
scripted test model instead, whose runs take milliseconds: the ratio then shows the tools'
fixed cost alone.

* ``tool_vs_requester_wall``: wall time of ``delegate_task(devnet.network, prompt,
  trust="low")`` — the registry index brought up to date and queried, the plan (model, bounty,
  assignee), the balance and spending-cap check, the bundle signed and stored, ``postTask``,
  the node's run and ``claimAndFinalize``, the result fetched by CID and verified, the receipt
  built — divided by the wall time of what an app would write without the tools:
  ``Requester.delegate(prompt, assignee=node, …)`` then ``Devnet.wait``. Goal ≤ 1.02.

Both paths run once per round, every other round in reverse order; the ratio is the median of
the ratios within a round (the machine is shared and drifts over a minute), wall times the best
of the rounds.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import parser, report  # noqa: E402

from chefsplan_agents.bundles import GenerationParams  # noqa: E402
from chefsplan_agents.devnet import Devnet  # noqa: E402
from chefsplan_agents.errors import ModelNotFound  # noqa: E402
from chefsplan_agents.tools import delegate_task  # noqa: E402

N_TOKENS = 64
ROUNDS = 12
THREADS = 2
QUESTION = "Write a short recipe for a tomato soup, step by step, with quantities."


def main() -> None:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--rounds", type=int, default=ROUNDS, help="timed rounds per path")
    cli.add_argument(
        "--model",
        default="smollm2",
        help="devnet model (tiny: the scripted test model, to see the fixed overhead alone)",
    )
    args = cli.parse_args()

    try:
        devnet = Devnet.create(nodes=1, model=args.model, n_threads=THREADS, n_ctx=2048)
    except ModelNotFound as err:
        sys.exit(f"benchmarks/tools.py needs SmolLM2: {err}")
    with devnet:
        net = devnet.network
        node = devnet.nodes[0]
        first = delegate_task(net, QUESTION, max_tokens=N_TOKENS, trust="low")  # warm-up
        bounty = first.bounty_per_replica_wei

        def tool() -> str:
            return delegate_task(net, QUESTION, max_tokens=N_TOKENS, trust="low").output

        def requester() -> str:
            handle = devnet.requester.delegate(
                QUESTION,
                model=devnet.model_sha256,
                params=GenerationParams(max_tokens=N_TOKENS),
                bounty_per_replica=bounty,
                bond=net.bond_wei,
                assignee=node.address,
            )
            return devnet.wait(handle).output

        runs: dict[str, Any] = {"requester": requester, "tool": tool}
        runs["requester"]()
        times: dict[str, list[float]] = {name: [] for name in runs}
        outputs: dict[str, str] = {}
        for i in range(args.rounds):
            order = list(runs) if i % 2 == 0 else list(reversed(runs))
            for name in order:
                start = time.perf_counter()
                outputs[name] = runs[name]()
                times[name].append(time.perf_counter() - start)
    assert outputs["tool"] == outputs["requester"], "both paths must produce the same answer"

    best = {name: min(ts) for name, ts in times.items()}
    ratio = statistics.median(a / b for a, b in zip(times["tool"], times["requester"], strict=True))
    overhead_ms = statistics.median(
        (a - b) * 1000 for a, b in zip(times["tool"], times["requester"], strict=True)
    )
    rows = [
        ["Requester.delegate + Devnet.wait", f"{best['requester'] * 1000:.0f}", "1.000"],
        ['delegate_task(trust="low")', f"{best['tool'] * 1000:.0f}", f"{ratio:.3f}"],
    ]
    summary = {
        "model": args.model,
        "threads": THREADS,
        "new_tokens": N_TOKENS,
        "requester_wall_ms": round(best["requester"] * 1000, 1),
        "tool_wall_ms": round(best["tool"] * 1000, 1),
        "tool_vs_requester_wall": round(ratio, 4),
        "tool_vs_requester_goal": 1.02,
        "tool_overhead_ms": round(overhead_ms, 2),
        "rounds": args.rounds,
    }
    notes = (
        f"Goal: tool/requester ≤ 1.02 (measured {ratio:.3f}; the tool adds a median "
        f"{overhead_ms:.1f} ms per call: index sync and query, plan, balance check, receipt)."
    )
    report(
        args,
        name="tools",
        title="Tools: delegate_task against the Requester call",
        columns=["path (post → verified result)", "best wall ms", "median ratio"],
        rows=rows,
        summary=summary,
        notes=notes,
    )


if __name__ == "__main__":
    main()
