"""``chefsplan demo``: the whole network in one process, end to end, with a real model.

An embedded network (in-process EVM with the contracts, a content store with IPFS-identical
CIDs, three provider nodes each running SmolLM2 with llama.cpp) takes one delegated subtask:
redundant runs with commit-reveal votes settle it on chain, a verifier gives a second opinion by
re-scoring the winning output, the output hash is logged on chain, and the receipts are printed.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from chefsplan_agents.bundles import decode_task_bundle
from chefsplan_agents.cli._app import app, out
from chefsplan_agents.cli._devnet import check_devnet_flags, progress_printer, receipt_tables
from chefsplan_agents.config import LLMSettings
from chefsplan_agents.devnet import Devnet
from chefsplan_agents.llm import GenerationParams, open_backend
from chefsplan_agents.market import OutputLogClient
from chefsplan_agents.verify import RescoreVerdict, rescore_result

DEFAULT_TASK = "List three things to check on a supplier invoice before paying it."


def _second_opinion_table(
    votes: int, replicas: int, quorum: int, verdict: RescoreVerdict, log_tx: str
) -> Table:
    table = Table(title="Second opinions", show_header=True)
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail")
    table.add_row(
        "redundant vote (commit-reveal)",
        "agreed" if votes >= quorum else "no quorum",
        f"{votes} of {replicas} replicas revealed the winning hash; quorum {quorum}",
    )
    cost = (
        f"{verdict.rescore_ms:.0f} ms to re-score vs {verdict.claimed_generation_ms:.0f} ms to "
        "generate"
    )
    table.add_row(
        "re-score (one prefill pass)",
        "passed" if verdict.passed else "FAILED",
        f"{verdict.top1_fraction:.0%} of {verdict.tokens} tokens ranked first, fingerprint "
        f"agreement {verdict.fingerprint_agreement:.2f}; {cost}"
        + (f"; {verdict.reason}" if verdict.reason else ""),
    )
    table.add_row("output hash logged on chain", "logged", f"OutputLog tx {log_tx}")
    return table


@app.command()
def demo(
    model: Annotated[
        str, typer.Option("--model", help="smollm2 (real model), tiny (test model), or a .gguf.")
    ] = "smollm2",
    nodes: Annotated[int, typer.Option("--nodes", help="Provider nodes to start.")] = 3,
    task: Annotated[str, typer.Option("--task", help="The subtask to delegate.")] = DEFAULT_TASK,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="New tokens at most.")] = 96,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the receipts as one JSON object.")
    ] = False,
) -> None:
    """Run an embedded network with a real model and print the receipts of one delegated task."""
    replicas, quorum = nodes, nodes // 2 + 1
    check_devnet_flags(nodes, model, replicas, quorum, max_tokens)
    started = time.perf_counter()
    on_stage, on_progress, status = progress_printer(quiet=as_json)
    with status, Devnet.create(nodes=nodes, model=model, on_stage=on_stage) as net:
        on_stage("post", f"delegating to {replicas} nodes, quorum {quorum}")
        receipt = net.run_task(
            task,
            replicas=replicas,
            quorum=quorum,
            params=GenerationParams(max_tokens=max_tokens),
            on_progress=on_progress,
        )
        on_stage("second opinion", "a verifier re-scores the winning output with its own model")
        bundle = decode_task_bundle(net.store.get(receipt.bundle_cid))
        with open_backend(LLMSettings(model=model, n_threads=2)) as verifier:
            verdict = rescore_result(verifier, bundle, receipt.result)
        on_stage("audit log", "logging the output hash on chain (OutputLog)")
        log_receipt = OutputLogClient(net.deployment.output_log).log_output(
            receipt.task_id, receipt.output_hash, receipt.result_cid, sender=net.requester.address
        )
        votes = sum(1 for r in receipt.replicas if r.output_hash == receipt.output_hash)
        reputations = {
            r.did or r.address: net.registry.reputation(r.address).won for r in receipt.replicas
        }
    elapsed = time.perf_counter() - started

    if as_json:
        doc: dict[str, Any] = receipt.to_json()
        doc["second_opinion"] = {
            "votes": votes,
            "quorum": quorum,
            "rescore_passed": verdict.passed,
            "rescore_top1_fraction": verdict.top1_fraction,
            "rescore_fingerprint_agreement": verdict.fingerprint_agreement,
            "rescore_ms": verdict.rescore_ms,
            "generation_ms": verdict.claimed_generation_ms,
        }
        doc["output_log_tx"] = log_receipt.tx_hash
        doc["wall_s"] = round(elapsed, 2)
        out.print(json.dumps(doc, sort_keys=True), soft_wrap=True)
        return

    for table in receipt_tables(receipt):
        out.print(table)
    out.print(
        _second_opinion_table(votes, len(receipt.replicas), quorum, verdict, log_receipt.tx_hash)
    )
    won = ", ".join(f"{did[:20]}… won {n}" for did, n in reputations.items())
    out.print(f"reputation on chain: {won}")
    out.print(f"done in {elapsed:.1f} s")
