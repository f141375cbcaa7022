"""Market throughput as provider nodes are added: 1, 2, 4, 8 nodes.

Every node runs the stub model (``stub:SECONDS``: a fixed sleep per task, no CPU), so the
numbers measure the market and the node daemon, not llama.cpp. ``--per-node`` tasks per node are
posted up front (1 replica each, no challenge window); throughput is tasks settled per wall
second, from the first ``postTask`` to the last ``TaskFinalized``, and
``scaling_efficiency_k = throughput_k / (k × throughput_1)`` (1.0 is linear).

* **anvil**: each node is a ``chefsplan node run`` OS process; the chain is a real anvil
  (automine), content a shared ``LocalCidStore`` folder (``--store-path``: the JavaScript IPFS
  daemon alone would eat a large share of the machine's two cores).
* **embedded**: the same nodes as threads running ``run_forever`` in one process, on the
  in-process EVM (py-evm, one lock) of a devnet with the stub model.

After the clock stops every task's result is fetched by CID and verified
(:meth:`Requester.wait_result`) and must be the stub's answer.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fleet import ANVIL_DEV_KEY, anvil, new_requester, node_log, node_processes  # noqa: E402
from _report import parser, report  # noqa: E402

from chefsplan_agents.chain import deploy_contracts, open_chain  # noqa: E402
from chefsplan_agents.config import ChainSettings  # noqa: E402
from chefsplan_agents.devnet import Devnet  # noqa: E402
from chefsplan_agents.llm import STUB_MODEL_SHA256, ChatMessage, StubBackend  # noqa: E402
from chefsplan_agents.market import MarketClient  # noqa: E402
from chefsplan_agents.market._requester import Requester, TaskHandle, Timeouts  # noqa: E402
from chefsplan_agents.storage import LocalCidStore  # noqa: E402

COUNTS = (1, 2, 4, 8)
TIMEOUTS = Timeouts(claim_window=3600, commit_timeout=600, reveal_window=600)
PROMPT = "Plate course {i} of the tasting menu"
# Independent requesters posting at the same time (one account each).
REQUESTERS = 4


def _expected(i: int) -> str:
    return StubBackend(0.0).chat([ChatMessage(role="user", content=PROMPT.format(i=i))]).text


def _post_and_wait(requesters: list[Requester], n_tasks: int, timeout: float) -> float:
    """Post ``n_tasks`` tasks, wait until all settled; the wall seconds; results verified.

    Task ``i`` is posted by requester ``i % len(requesters)``; the requesters post at the same
    time, each from its own thread, as independent users of a market would.
    """
    handles: dict[int, TaskHandle] = {}
    errors: list[BaseException] = []

    def post(r: int) -> None:
        try:
            for i in range(r, n_tasks, len(requesters)):
                handles[i] = requesters[r].delegate(
                    PROMPT.format(i=i),
                    bounty_per_replica=10**15,
                    bond=10**15,
                    model=STUB_MODEL_SHA256,
                    timeouts=TIMEOUTS,
                )
        except BaseException as err:  # noqa: BLE001 - re-raised below
            errors.append(err)

    started = time.monotonic()
    posters = [threading.Thread(target=post, args=(r,)) for r in range(len(requesters))]
    for thread in posters:
        thread.start()
    for thread in posters:
        thread.join()
    if errors:
        raise errors[0]
    first_block = min(h.posted_block for h in handles.values())
    contract = requesters[0].market.contract
    deadline = started + timeout
    while True:
        done = contract.get_logs("TaskFinalized", from_block=first_block)
        if len({bytes(e.args["taskId"]) for e in done}) >= n_tasks:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(done)}/{n_tasks} tasks settled within {timeout:g} s")
        time.sleep(0.05)
    wall = time.monotonic() - started
    for i, handle in sorted(handles.items()):
        receipt = requesters[i % len(requesters)].wait_result(handle, timeout=30)
        if receipt.output != _expected(i):
            raise SystemExit(f"task {i}: wrong output {receipt.output!r}")
    return wall


@dataclass(frozen=True)
class Run:
    """One measurement: throughput, lost claim races, CPU the nodes and the chain used."""

    tasks_per_s: float
    lost_races: int
    node_cpu_cores: float
    chain_cpu_cores: float


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes used so far (Linux ``/proc``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


LOST_RACE = "did not get task"


class _LostRaces(logging.Handler):
    """Counts the node threads' lost claim races (and keeps their warnings off the screen)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if LOST_RACE in record.getMessage():
            self.count += 1


def run_anvil(
    k: int, per_node: int, seconds: float, rpc_url: str, anvil_pid: int, work: Path
) -> Run:
    """``k`` node processes on anvil."""
    blocks = work / f"blocks{k}"
    settings = ChainSettings(backend="jsonrpc", rpc_url=rpc_url)
    with open_chain(settings, private_keys=[ANVIL_DEV_KEY]) as chain:
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
        with fleet as procs, LocalCidStore(blocks) as store:
            requesters = [
                new_requester(chain, market, deployment.registry, store) for _ in range(REQUESTERS)
            ]
            pids = [p.pid for p in procs]
            nodes_cpu, chain_cpu = _cpu_seconds(pids), _cpu_seconds([anvil_pid])
            wall = _post_and_wait(requesters, k * per_node, timeout=120 + 10 * per_node)
            nodes_cpu = _cpu_seconds(pids) - nodes_cpu
            chain_cpu = _cpu_seconds([anvil_pid]) - chain_cpu
    lost = sum(node_log(work, f"k{k}", i).read_text().count(LOST_RACE) for i in range(k))
    return Run(k * per_node / wall, lost, nodes_cpu / wall, chain_cpu / wall)


def run_embedded(k: int, per_node: int, seconds: float, work: Path) -> Run:
    """``k`` node threads on the in-process EVM (CPU: the whole process, requester included)."""
    package_log = logging.getLogger("chefsplan_agents")
    counter = _LostRaces()
    package_log.addHandler(counter)
    package_log.propagate = False
    with Devnet.create(
        nodes=k, model=f"stub:{seconds}", store="local", workdir=work / f"devnet{k}"
    ) as net:
        requesters = [net.requester] + [
            new_requester(net.chain, net.market, net.deployment.registry, net.store)
            for _ in range(REQUESTERS - 1)
        ]
        threads = [
            threading.Thread(target=node.run_forever, args=(0.1,), daemon=True)
            for node in net.nodes
        ]
        for thread in threads:
            thread.start()
        try:
            cpu = time.process_time()
            wall = _post_and_wait(requesters, k * per_node, timeout=120 + 10 * per_node)
            cpu = time.process_time() - cpu
        finally:
            for node in net.nodes:
                node.stop()
            for thread in threads:
                thread.join(timeout=30)
            package_log.removeHandler(counter)
    return Run(k * per_node / wall, counter.count, cpu / wall, 0.0)


def main() -> None:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--seconds", type=float, default=2.0, help="stub model seconds per task")
    # Enough tasks per node to measure steady-state throughput: with few, the requester's
    # one-at-a-time posting staggers the nodes' starts and one extra round dominates the wall.
    cli.add_argument("--per-node", type=int, default=8, help="tasks posted per node")
    cli.add_argument(
        "--nodes", type=int, nargs="+", default=list(COUNTS), help="node counts (first = base)"
    )
    cli.add_argument(
        "--chains",
        nargs="+",
        choices=["anvil", "embedded"],
        default=["anvil", "embedded"],
        help="which setups to measure",
    )
    args = cli.parse_args()
    work = Path(tempfile.mkdtemp(prefix="chefsplan-scale-"))
    results: dict[str, dict[int, Run]] = {chain: {} for chain in args.chains}
    try:
        with anvil() as (rpc_url, anvil_proc):
            for k in args.nodes if "anvil" in args.chains else ():
                results["anvil"][k] = run_anvil(
                    k, args.per_node, args.seconds, rpc_url, anvil_proc.pid, work
                )
                print(f"anvil    k={k}: {results['anvil'][k]}", file=sys.stderr)
        for k in args.nodes if "embedded" in args.chains else ():
            # Threads on the in-process EVM are CPU-bound (one process, one EVM lock): cap the
            # tasks so the comparison stays minutes, not tens of minutes, at 8 threads.
            results["embedded"][k] = run_embedded(k, min(args.per_node, 4), args.seconds, work)
            print(f"embedded k={k}: {results['embedded'][k]}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = args.nodes[0]
    ideal = 1.0 / args.seconds  # one node, no overhead at all
    summary: dict[str, Any] = {
        "stub_seconds_per_task": args.seconds,
        "tasks_per_node": args.per_node,
    }
    rows = []
    for backend, by_k in results.items():
        for k, run in by_k.items():
            tput = run.tasks_per_s
            eff = tput / (k / base * by_k[base].tasks_per_s)
            summary[f"{backend}_tasks_per_s_{k}"] = round(tput, 4)
            summary[f"{backend}_scaling_efficiency_{k}"] = round(eff, 3)
            summary[f"{backend}_lost_claim_races_{k}"] = run.lost_races
            summary[f"{backend}_node_cpu_cores_{k}"] = round(run.node_cpu_cores, 3)
            if backend == "anvil":
                summary[f"anvil_chain_cpu_cores_{k}"] = round(run.chain_cpu_cores, 3)
            rows.append(
                [
                    backend,
                    k,
                    k * (args.per_node if backend == "anvil" else min(args.per_node, 4)),
                    f"{tput:.3f}",
                    f"{eff:.2f}",
                    f"{tput / (k * ideal):.2f}",
                    run.lost_races,
                    f"{run.node_cpu_cores:.2f}",
                    f"{run.chain_cpu_cores:.2f}" if backend == "anvil" else "-",
                ]
            )
    top = args.nodes[-1]
    first = args.chains[0]
    summary[f"scaling_efficiency_{top}"] = summary[f"{first}_scaling_efficiency_{top}"]
    notes = (
        f"Stub model sleeping {args.seconds:g} s per task; {args.per_node} tasks per node posted "
        f"up front by {REQUESTERS} requesters at once (at most 4 tasks per node on the "
        "in-process EVM), 1 replica each. "
        "Efficiency = throughput_k / (k × throughput_1); "
        f"'vs ideal' divides by k / {args.seconds:g} s (no market overhead at all). "
        "Goal: scaling efficiency ≥ 0.9 up to 8 nodes. 'lost races': claims that reverted "
        "because another node claimed the task first (a node gives its claim 50 ms before it "
        "starts the model, and a model started for a claim that then fails stops at its next "
        "token). "
        "CPU columns: CPU seconds per wall second of the node "
        "processes (embedded: the whole process, requester included) and of anvil, on a "
        f"machine with {os.cpu_count()} cores."
    )
    report(
        args,
        name="scale",
        title="Market throughput vs provider nodes (stub model)",
        columns=[
            "chain",
            "nodes",
            "tasks",
            "tasks/s",
            "efficiency",
            "vs ideal",
            "lost races",
            "node CPU (cores)",
            "anvil CPU (cores)",
        ],
        rows=rows,
        summary=summary,
        notes=notes,
    )


if __name__ == "__main__":
    main()
