"""``chefsplan devnet``: run one delegated task on a fresh in-process network."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Annotated

import typer
from rich.table import Table

from chefsplan_agents.bundles import GenerationParams
from chefsplan_agents.cli._app import app, err, out
from chefsplan_agents.devnet import DEVNET_MODELS, Devnet
from chefsplan_agents.errors import ConfigError
from chefsplan_agents.llm import resolve_model
from chefsplan_agents.market._requester import DelegationProgress, DelegationReceipt

_STAGE_TEXT = {
    "posted": "task posted; waiting for claims",
    "claimed": "replicas claimed; running the model",
    "committed": "results committed; waiting for reveals",
    "revealed": "results revealed; settling",
    "finalized": "settled; fetching the result by CID",
}


def check_devnet_flags(
    nodes: int, model: str, replicas: int, quorum: int, max_tokens: int = 1
) -> None:
    """Raise a one-line :class:`ConfigError` for devnet flags that cannot work together."""
    if nodes < 1:
        raise ConfigError(f"--nodes must be at least 1 (got {nodes})")
    if model not in DEVNET_MODELS and not model.endswith(".gguf"):
        known = ", ".join(sorted(DEVNET_MODELS))
        raise ConfigError(f"unknown --model {model!r}; use one of: {known}, or a .gguf path")
    if model not in DEVNET_MODELS:
        # Before anything starts, so the error is the only line printed.
        resolve_model(model)
    if replicas < 1:
        raise ConfigError(f"--replicas must be at least 1 (got {replicas})")
    if replicas > nodes:
        raise ConfigError(f"--replicas {replicas} needs at least {replicas} nodes; raise --nodes")
    if quorum > replicas:
        raise ConfigError(f"--quorum {quorum} is more than --replicas {replicas}")
    if 2 * quorum <= replicas:
        raise ConfigError(
            f"--quorum {quorum} is not a majority of {replicas} replicas; use at least "
            f"{replicas // 2 + 1}"
        )
    if max_tokens < 1:
        raise ConfigError(f"--max-tokens must be at least 1 (got {max_tokens})")


StageFn = Callable[[str, str], None]
ProgressFn = Callable[[DelegationProgress], None]


def progress_printer(
    *, quiet: bool = False
) -> tuple[StageFn, ProgressFn, AbstractContextManager[object]]:
    """Live status on stderr: a spinner plus one line per stage and progress change.

    Returns:
        ``(on_stage, on_progress, status)``: callbacks for :meth:`Devnet.create` and
        :meth:`Devnet.run_task`, and the spinner to enter around them. ``quiet`` gives
        callbacks that print nothing.
    """
    if quiet:
        return (lambda _s, _d: None), (lambda _p: None), nullcontext()
    status = err.status("starting the devnet")

    def on_stage(stage: str, detail: str) -> None:
        status.update(f"{stage}: {detail}")
        err.print(f"• {stage}: {detail}")

    def on_progress(progress: DelegationProgress) -> None:
        text = _STAGE_TEXT.get(progress.stage, progress.stage)
        counts = (
            f"claimed {progress.claimed}/{progress.replicas}, committed "
            f"{progress.committed}, revealed {progress.revealed}"
        )
        status.update(f"{text} ({counts})")
        err.print(f"• {progress.stage}: {counts}")

    return on_stage, on_progress, status


def receipt_tables(receipt: DelegationReceipt) -> tuple[Table, Table]:
    """The receipt as two tables: the task, and one row per replica."""
    summary = Table(title="delegated task", show_header=False)
    summary.add_column("field")
    summary.add_column("value")
    for key in ("output", "output_hash", "task_id", "bundle_cid", "result_cid", "finalize_tx"):
        summary.add_row(key, str(getattr(receipt, key)))
    summary.add_row("gas_used", f"{receipt.gas_used:,}")
    replicas = Table(title="replicas (full values: --json)")
    for col in ("did", "address", "output_hash", "claim_tx", "commit_tx", "reveal_tx"):
        replicas.add_column(col, no_wrap=True)
    for r in receipt.replicas:
        replicas.add_row(
            _short(r.did),
            _short(r.address),
            _short(r.output_hash),
            _short(r.claim_tx),
            _short(r.commit_tx),
            _short(r.reveal_tx),
        )
    return summary, replicas


def _short(value: str | None) -> str:
    if not value:
        return "-"
    return value if len(value) <= 14 else f"{value[:10]}…{value[-4:]}"


@app.command("devnet")
def devnet(
    task: Annotated[str, typer.Option("--task", help="The prompt to delegate.")],
    nodes: Annotated[int, typer.Option("--nodes", help="Provider nodes to start.")] = 3,
    model: Annotated[
        str, typer.Option("--model", help="tiny (test model), smollm2, or a .gguf path.")
    ] = "tiny",
    replicas: Annotated[
        int | None, typer.Option("--replicas", help="Nodes that run the task (default: all).")
    ] = None,
    quorum: Annotated[
        int | None,
        typer.Option("--quorum", help="Matching outputs needed (default: a majority)."),
    ] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="New tokens at most.")] = 128,
    share_model: Annotated[
        bool, typer.Option("--share-model", help="Load the model once for all nodes.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the receipt as one JSON object.")
    ] = False,
    assign: Annotated[
        bool,
        typer.Option(
            "--assign",
            help="Assign the task to the first node: one replica, run at once and settled in "
            "one transaction.",
        ),
    ] = False,
) -> None:
    """Start a devnet (chain, contracts, store, N nodes), delegate one task, print its receipt."""
    if assign and replicas not in (None, 1):
        raise ConfigError(f"--assign gives the task to one node; drop --replicas {replicas}")
    n_replicas = 1 if assign else nodes if replicas is None else replicas
    n_quorum = n_replicas // 2 + 1 if quorum is None else quorum
    check_devnet_flags(nodes, model, n_replicas, n_quorum, max_tokens)
    params = GenerationParams(max_tokens=max_tokens)
    on_stage, on_progress, status = progress_printer(quiet=as_json)
    with (
        status,
        Devnet.create(nodes=nodes, model=model, share_model=share_model, on_stage=on_stage) as net,
    ):
        assignee = net.nodes[0].address if assign else None
        if assignee is not None:
            on_stage("post", f"assigning to node {assignee}")
        else:
            on_stage("post", f"delegating to {n_replicas} of {nodes} nodes, quorum {n_quorum}")
        receipt = net.run_task(
            task,
            replicas=n_replicas,
            quorum=n_quorum,
            params=params,
            on_progress=on_progress,
            assignee=assignee,
        )
    if as_json:
        out.print(json.dumps(receipt.to_json(), sort_keys=True), markup=False, soft_wrap=True)
        return
    for table in receipt_tables(receipt):
        out.print(table)
