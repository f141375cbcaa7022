"""``chefsplan task``: post a task to the market, show it, watch it settle."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from chefsplan_agents.bundles import GenerationParams, TaskBundle, decode_task_bundle
from chefsplan_agents.chain import to_bytes32
from chefsplan_agents.cli._app import JsonOption, app, err, out, print_json
from chefsplan_agents.cli._devnet import receipt_tables
from chefsplan_agents.cli._network import (
    ContractsOption,
    KeystoreOption,
    Network,
    RpcOption,
    keystore_identity,
    open_network,
)
from chefsplan_agents.errors import BundleError, MarketError, StorageError
from chefsplan_agents.identity import Identity
from chefsplan_agents.market import (
    DelegationProgress,
    DelegationReceipt,
    MarketClient,
    Requester,
    Settlement,
    TaskHandle,
    TaskRecord,
    TaskResult,
)
from chefsplan_agents.registry import RegistryClient

task_app = typer.Typer(
    name="task",
    help="Post a task to the market, show it, and watch it settle.",
    no_args_is_help=True,
)
app.add_typer(task_app)

TaskIdArgument = Annotated[str, typer.Argument(help="The task id (0x + 64 hex digits).")]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait for settlement.", min=0)
]

STAGES = ("posted", "claimed", "committed", "revealed", "finalized")


def _requester(net: Network, identity: Identity) -> Requester:
    market = MarketClient(net.deployment.market, from_block=net.deployment.deployed_at)
    registry = RegistryClient(net.deployment.registry)
    return Requester(identity, net.chain, market, net.store, registry=registry)


def _task_id(raw: str) -> bytes:
    return to_bytes32(raw, "task id")


def _record(requester: Requester, task_id: bytes) -> TaskRecord:
    record = requester.market.get_task(task_id)
    if record is None:
        raise MarketError(
            f"no task 0x{task_id.hex()} on the market at {requester.market.address}; check the "
            "id and the chain (--rpc, --contracts)"
        )
    return record


def _handle(requester: Requester, record: TaskRecord) -> TaskHandle:
    try:
        bundle = decode_task_bundle(requester.store.get(record.bundle_cid))
    except (StorageError, BundleError) as exc:
        raise StorageError(
            f"cannot read the task's bundle {record.bundle_cid} from the configured store: {exc}"
        ) from exc
    posted = requester.market.events("TaskPosted", task_id=record.task_id)[0]
    return TaskHandle(
        task_id=record.task_id,
        params=record.params,
        bundle_cid=record.bundle_cid,
        bundle=bundle,
        post_tx=posted.tx_hash,
        post_gas=requester.chain.gas_used(posted.tx_hash),
        posted_block=record.posted_block,
    )


def _prompt(bundle: TaskBundle) -> str:
    if bundle.messages:
        return bundle.messages[-1].content
    return bundle.prompt or ""


def _progress_table(progress: DelegationProgress, task_id: str) -> Table:
    table = Table(title=f"task {task_id[:10]}…{task_id[-4:]}", show_header=False)
    table.add_column("stage")
    table.add_column("replicas")
    reached = STAGES.index(progress.stage) if progress.stage in STAGES else 0
    counts = {
        "posted": "",
        "claimed": f"{progress.claimed}/{progress.replicas}",
        "committed": f"{progress.committed}/{progress.replicas}",
        "revealed": f"{progress.revealed}/{progress.replicas}",
        "finalized": "",
    }
    for i, stage in enumerate(STAGES):
        mark = "✓" if i <= reached else "·"
        table.add_row(f"{mark} {stage}", counts[stage])
    return table


def _watch(
    requester: Requester, handle: TaskHandle, timeout: float, quiet: bool
) -> DelegationReceipt:
    task_id = "0x" + handle.task_id.hex()
    if quiet:
        return requester.wait_result(handle, timeout)
    first = requester.progress(handle)
    with Live(_progress_table(first, task_id), console=err, auto_refresh=False) as live:

        def on_progress(progress: DelegationProgress) -> None:
            live.update(_progress_table(progress, task_id), refresh=True)

        return requester.wait_result(handle, timeout, on_progress)


def _print_receipt(receipt: DelegationReceipt, as_json: bool) -> None:
    if as_json:
        print_json({"status": "finalized", **receipt.to_json()})
        return
    for table in receipt_tables(receipt):
        out.print(table)


@task_app.command("post")
def post_command(
    prompt: Annotated[str, typer.Argument(help="The prompt to delegate.")],
    model: Annotated[
        str,
        typer.Option(
            "--model", help="The model that must run it: a GGUF sha256 (64 hex) or a model name."
        ),
    ],
    replicas: Annotated[int, typer.Option("--replicas", help="Nodes that run it.", min=1)] = 1,
    quorum: Annotated[
        int | None,
        typer.Option("--quorum", help="Matching outputs needed (default: a majority).", min=1),
    ] = None,
    bounty: Annotated[
        int, typer.Option("--bounty", help="Wei paid to each winning replica.", min=1)
    ] = 10**15,
    bond: Annotated[
        int | None,
        typer.Option("--bond", help="Wei each node posts to claim (default: the bounty).", min=1),
    ] = None,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", help="New tokens at most.", min=1)
    ] = 128,
    watch: Annotated[
        bool, typer.Option("--watch", help="Then follow it until it settles (like task watch).")
    ] = False,
    timeout: TimeoutOption = 600.0,
    keystore: KeystoreOption = None,
    rpc: RpcOption = None,
    contracts: ContractsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sign PROMPT as a task bundle, store it, and post it with its bounty escrowed; print the
    task id. The requester is the keystore's identity; its account pays the bounty."""
    identity = keystore_identity(keystore)
    with open_network(rpc, contracts) as net:
        requester = _requester(net, identity)
        handle = requester.delegate(
            prompt,
            replicas=replicas,
            quorum=quorum,
            bounty_per_replica=bounty,
            bond=bounty if bond is None else bond,
            model=model,
            params=GenerationParams(max_tokens=max_tokens),
        )
        posted = {
            "task_id": "0x" + handle.task_id.hex(),
            "bundle_cid": handle.bundle_cid,
            "post_tx": handle.post_tx,
            "requester": requester.address,
            "replicas": handle.params.replicas,
            "quorum": handle.params.quorum,
            "escrow_wei": str(handle.params.escrow),
        }
        if not watch:
            if as_json:
                print_json({"status": "posted", **posted})
            else:
                for key, value in posted.items():
                    out.print(f"{key}: {value}")
            return
        if not as_json:
            err.print(f"posted task {posted['task_id']} (bundle {handle.bundle_cid})")
        receipt = _watch(requester, handle, timeout, quiet=as_json)
    _print_receipt(receipt, as_json)


def _show(requester: Requester, record: TaskRecord) -> dict[str, Any]:
    handle = _handle(requester, record)
    progress = requester.progress(handle)
    p = record.params
    doc: dict[str, Any] = {
        "task_id": "0x" + record.task_id.hex(),
        "status": "open" if record.state.open else progress.stage,
        "stage": progress.stage,
        "prompt": _prompt(handle.bundle),
        "bundle_cid": record.bundle_cid,
        "requester": p.requester,
        "replicas": p.replicas,
        "quorum": p.quorum,
        "claimed": progress.claimed,
        "committed": progress.committed,
        "revealed": progress.revealed,
        "bounty_per_replica_wei": str(p.bounty_per_replica),
        "bond_wei": str(p.bond),
        "claim_deadline": p.claim_deadline,
        "reveal_deadline": p.reveal_deadline,
        "post_tx": handle.post_tx,
    }
    if requester.market.events("TaskCancelled", task_id=record.task_id):
        doc["status"] = "cancelled"
    finalized = requester.market.events("TaskFinalized", task_id=record.task_id)
    if finalized:
        settlement = Settlement.from_event(finalized[-1])
        doc["status"] = "finalized"
        doc["result"] = settlement.result.name.lower()
        if settlement.result is TaskResult.ACCEPTED:
            # The settled hash, the result by CID, its signer: checked like a requester does.
            receipt = requester.wait_result(handle, timeout=0)
            doc.update(
                output=receipt.output,
                output_hash=receipt.output_hash,
                result_cid=receipt.result_cid,
                finalize_tx=receipt.finalize_tx,
                winners=settlement.winners,
                replicas_detail=[r.to_json() for r in receipt.replicas],
            )
    return doc


@task_app.command("show")
def show_command(
    task_id: TaskIdArgument,
    rpc: RpcOption = None,
    contracts: ContractsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a task: its terms, how many replicas claimed, committed and revealed, and once
    settled the verified result (fetched by CID, checked against the hash on chain)."""
    tid = _task_id(task_id)
    with open_network(rpc, contracts) as net:
        # Reading needs no key: a throwaway identity never signs or pays for anything here.
        requester = _requester(net, Identity.generate())
        doc = _show(requester, _record(requester, tid))
    if as_json:
        print_json(doc)
        return
    details = doc.pop("replicas_detail", None)
    table = Table(title=f"task {doc['task_id']}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    for key, value in doc.items():
        table.add_row(key, str(value))
    out.print(table)
    if details:
        replicas = Table(title="replicas")
        for column in ("address", "output_hash", "reveal_tx"):
            replicas.add_column(column, no_wrap=True)
        for r in details:
            replicas.add_row(r["address"], str(r["output_hash"]), str(r["reveal_tx"]))
        out.print(replicas)


@task_app.command("watch")
def watch_command(
    task_id: TaskIdArgument,
    timeout: TimeoutOption = 600.0,
    keystore: KeystoreOption = None,
    rpc: RpcOption = None,
    contracts: ContractsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Follow a task live (claimed, committed, revealed, finalized) until it settles or
    --timeout passes, then print the verified receipt.

    When the reveals are in and no node settled the task, the keystore's account settles it
    (it pays the gas).
    """
    tid = _task_id(task_id)
    identity = keystore_identity(keystore)
    started = time.monotonic()
    with open_network(rpc, contracts) as net:
        requester = _requester(net, identity)
        handle = _handle(requester, _record(requester, tid))
        receipt = _watch(requester, handle, timeout, quiet=as_json)
    if not as_json:
        err.print(f"settled in {time.monotonic() - started:.1f} s")
    _print_receipt(receipt, as_json)
