"""A split document's wall time as provider nodes are added: 1, 2 and 4 node processes.

A document of ``PARAGRAPHS`` paragraphs (each one chunk: two together pass
``max_chunk_chars``) goes to the network two ways, at trust ``low``:

* **tools**: ``split_and_delegate(net, document, instruction)`` — split, every chunk posted
  (assigned round-robin over the providers) before any is awaited, merged in order;
* **copilot**: one Copilot turn, ``await team(net).run(task=...)`` on a request whose document
  follows a ``---`` line — the Copilot's plan, Matching's ranking, posting and collection,
  Compliance's policy check and verdict logged on chain, the merged answer.

The chain is a real anvil (automine); each provider is a ``chefsplan node run`` OS process
running the stub model (``stub:SECONDS``: a fixed sleep per task, no CPU), content a shared
``LocalCidStore`` folder (``--store-path``), so the numbers measure the market and the agents,
not llama.cpp. Each node count gets fresh contracts (no provider of an earlier count is
listed). Wall times are the best of ``--rounds``; ``speed-up_k = wall_1 / wall_k``,
``efficiency_k = speed-up_k / k`` (1.0 is linear) and ``vs ideal`` divides the stub's own time,
``ceil(chunks / k) × SECONDS``, by the wall.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fleet import ANVIL_DEV_KEY, anvil, new_requester, node_processes  # noqa: E402
from _report import parser, report  # noqa: E402

from chefsplan_agents.agents import build_plan, parse_request, team  # noqa: E402
from chefsplan_agents.chain import deploy_contracts, open_chain  # noqa: E402
from chefsplan_agents.config import ChainSettings  # noqa: E402
from chefsplan_agents.market import MarketClient  # noqa: E402
from chefsplan_agents.network import Network  # noqa: E402
from chefsplan_agents.storage import LocalCidStore  # noqa: E402
from chefsplan_agents.tools import split_and_delegate  # noqa: E402

COUNTS = (1, 2, 4)
PARAGRAPHS = 8
N_TOKENS = 32
ROUNDS = 2
INSTRUCTION = "Summarise this course of the tasting menu in one line:"
SENTENCES = (
    "The kitchen brines the {item} overnight and dries it on racks until the skin is taut.",
    "A stock of roasted bones, leek tops and a strip of kombu simmers for six hours beside it.",
    "Service starts with the {item} seared hard in a black pan and basted with brown butter.",
    "It is plated on a warm stone bowl with pickled shallot, charred cabbage and herb oil.",
    "The sauce is the reduced stock mounted with cold butter and a few drops of cider vinegar.",
    "Guests with a nut allergy get the same course with toasted seeds instead of hazelnuts.",
    "The pastry section sends a small bite of rye crisp with whipped cultured cream alongside.",
    "Each plate is checked at the pass for temperature, seasoning and the line of the sauce.",
    "Leftover trim goes to the staff meal, and the bones go back into tomorrow's stock pot.",
    "The sommelier pours a dry white from the Loire or, for those who prefer, a cold cider.",
)
ITEMS = ("trout", "duck", "celeriac", "lamb", "beetroot", "cod", "quail", "pear")


def document() -> str:
    """``PARAGRAPHS`` paragraphs of about 900 characters, one course each."""
    return "\n\n".join(
        f"Course {i + 1}, the {item}. " + " ".join(s.format(item=item) for s in SENTENCES)
        for i, item in enumerate(ITEMS[:PARAGRAPHS])
    )


def request_text(doc: str) -> str:
    return f"trust: low\nmax_tokens: {N_TOKENS}\n{INSTRUCTION}\n---\n{doc}"


def measure_k(
    k: int, seconds: float, rounds: int, rpc_url: str, work: Path
) -> tuple[dict[str, float], int]:
    """Best wall seconds per path with ``k`` node processes, and the chunks per document."""
    blocks = work / f"blocks{k}"
    doc = document()
    with open_chain(
        ChainSettings(backend="jsonrpc", rpc_url=rpc_url), private_keys=[ANVIL_DEV_KEY]
    ) as chain:
        deployment = deploy_contracts(chain)
        market = MarketClient(deployment.market, from_block=deployment.deployed_at)
        fleet = node_processes(
            chain,
            deployment,
            k,
            seconds=seconds,
            rpc_url=rpc_url,
            store_path=blocks,
            work=work,
            tag=f"k{k}",
        )
        with fleet, LocalCidStore(blocks) as store:
            requester = new_requester(chain, market, deployment.registry, store)
            net = Network(
                chain=chain,
                deployment=deployment,
                store=store,
                requester=requester,
                market=market,
                timeout_s=120 + 20 * PARAGRAPHS * seconds,
            )
            if len(net.providers()) != k:
                raise SystemExit(f"{len(net.providers())} providers listed, {k} running")
            loop = asyncio.new_event_loop()
            agents = team(net)
            outputs: dict[str, str] = {}
            chunks = 0

            def tools() -> str:
                nonlocal chunks
                receipt = split_and_delegate(
                    net, doc, INSTRUCTION, max_tokens=N_TOKENS, trust="low"
                )
                chunks = len(receipt.chunks)
                if receipt.providers != k:
                    raise SystemExit(f"k={k}: {receipt.providers} providers answered, not {k}")
                return receipt.output

            def turn() -> str:
                result = loop.run_until_complete(agents.run(task=request_text(doc)))
                return result.messages[-1].to_text()

            runs: dict[str, Callable[[], str]] = {"tools": tools, "copilot": turn}
            times: dict[str, list[float]] = {name: [] for name in runs}
            for i in range(rounds):
                order = list(runs) if i % 2 == 0 else list(reversed(runs))
                for name in order:
                    start = time.perf_counter()
                    outputs[name] = runs[name]()
                    times[name].append(time.perf_counter() - start)
            loop.close()
    # The Copilot's answer starts with the parts' outputs, one after another, then its sources.
    answers = outputs["tools"].split("\n\n")
    if outputs["copilot"].split("\n")[: len(answers)] != answers:
        raise SystemExit(f"k={k}: the Copilot's answer is not the chunks' outputs in order")
    return {name: min(ts) for name, ts in times.items()}, chunks


def main() -> None:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--seconds", type=float, default=1.0, help="stub model seconds per task")
    cli.add_argument("--rounds", type=int, default=ROUNDS, help="timed rounds per path and k")
    cli.add_argument(
        "--nodes", type=int, nargs="+", default=list(COUNTS), help="node counts (first = base)"
    )
    args = cli.parse_args()
    parts = len(build_plan(parse_request(request_text(document()))).parts)
    if parts != PARAGRAPHS:
        sys.exit(f"the document makes {parts} parts, not {PARAGRAPHS}: resize its paragraphs")

    work = Path(tempfile.mkdtemp(prefix="chefsplan-agents-scale-"))
    walls: dict[int, dict[str, float]] = {}
    chunks = PARAGRAPHS
    try:
        with anvil() as (rpc_url, _):
            for k in args.nodes:
                walls[k], chunks = measure_k(k, args.seconds, args.rounds, rpc_url, work)
                print(f"k={k}: {walls[k]}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = args.nodes[0]
    summary: dict[str, Any] = {
        "stub_seconds_per_task": args.seconds,
        "chunks": chunks,
        "rounds": args.rounds,
    }
    rows = []
    for path in ("tools", "copilot"):
        for k, by_path in walls.items():
            wall = by_path[path]
            speedup = walls[base][path] / wall
            eff = speedup / (k / base)
            ideal = math.ceil(chunks / k) * args.seconds
            summary[f"{path}_wall_s_{k}"] = round(wall, 3)
            summary[f"{path}_speedup_{k}"] = round(speedup, 3)
            summary[f"{path}_efficiency_{k}"] = round(eff, 3)
            rows.append(
                [path, k, f"{wall:.2f}", f"{speedup:.2f}", f"{eff:.2f}", f"{ideal / wall:.2f}"]
            )
    for k, by_path in walls.items():
        summary[f"copilot_vs_tools_{k}"] = round(by_path["copilot"] / by_path["tools"], 3)
    top = args.nodes[-1]
    summary[f"efficiency_{top}"] = summary[f"copilot_efficiency_{top}"]
    notes = (
        f"A document of {PARAGRAPHS} paragraphs ({chunks} chunks, {len(document())} characters) "
        f"at trust low, {N_TOKENS} new tokens per chunk; the stub model sleeps "
        f"{args.seconds:g} s per task; best of {args.rounds} rounds per path. "
        "'tools': `split_and_delegate`; 'copilot': one Copilot turn on the same document "
        "(a `---` request), which adds the plan, Compliance's policy checks and the verdict "
        "logged on chain (copilot ÷ tools: "
        + ", ".join(f"{v['copilot'] / v['tools']:.2f} at k={k}" for k, v in walls.items())
        + "). Speed-up = wall_1 / wall_k, efficiency = speed-up / k; 'vs ideal' = "
        f"⌈chunks / k⌉ × {args.seconds:g} s / wall (the stub's own time, no market at all). "
        f"Measured on a machine with {os.cpu_count()} cores shared with other work "
        f"(load average {os.getloadavg()[0]:.1f} at the end of the run)."
    )
    report(
        args,
        name="agents_scale",
        title="Agents: a split document's wall time vs provider nodes (stub model, anvil)",
        columns=["path", "nodes", "best wall s", "speed-up", "efficiency", "vs ideal"],
        rows=rows,
        summary=summary,
        notes=notes,
    )


if __name__ == "__main__":
    main()
