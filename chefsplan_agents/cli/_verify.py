"""``chefsplan verify``: a second opinion on a result, by re-scoring it with a local model."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from chefsplan_agents.bundles import decode_result_bundle, decode_task_bundle
from chefsplan_agents.cli._app import JsonOption, app, err, out, print_json, settings
from chefsplan_agents.errors import BundleError, VerificationError
from chefsplan_agents.llm import open_backend, resolve_model
from chefsplan_agents.storage import open_store
from chefsplan_agents.verify import rescore_result


@app.command("verify")
def verify_command(
    result_cid: Annotated[str, typer.Argument(help="CID of the ResultBundle to check.")],
    task: Annotated[str, typer.Option("--task", help="CID of the TaskBundle it answers.")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="The verifier's model: tiny, smollm2-135m or a .gguf path (default: llm.model). "
            "It must be the model the result names.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Re-score a result with a local model (one prefill pass over prompt and output) and
    print the verdict; exit 1 if it fails.

    Both bundles are read by CID from the configured store (the storage settings) and their
    signatures checked; the verifier's model ranks the claimed tokens and compares the
    committed top-k fingerprint.
    """
    current = settings()
    llm_settings = current.llm if model is None else current.llm.model_copy(update={"model": model})
    if llm_settings.server_url is None:
        resolve_model(llm_settings.model)  # a missing model file is reported before any work
    with open_store(current.storage, current.blockstore_path) as store:
        task_bytes, result_bytes = store.get(task), store.get(result_cid)
    try:
        bundle = decode_task_bundle(task_bytes)
    except BundleError as exc:
        raise BundleError(f"--task {task} is not a usable task bundle: {exc}") from exc
    try:
        result = decode_result_bundle(result_bytes)
    except BundleError as exc:
        raise BundleError(f"{result_cid} is not a usable result bundle: {exc}") from exc
    if result.task_cid != task:
        raise VerificationError(
            f"result {result_cid} answers task {result.task_cid}, not {task}; pass its --task"
        )
    if not as_json:
        err.print(f"re-scoring {len(result.token_ids)} tokens with {llm_settings.model}")
    with open_backend(llm_settings) as llm:
        verdict = rescore_result(llm, bundle, result)
    doc = {
        "result_cid": result_cid,
        "task_cid": task,
        "node_did": result.node_did,
        "passed": verdict.passed,
        "top1_fraction": verdict.top1_fraction,
        "fingerprint_agreement": verdict.fingerprint_agreement,
        "tokens": verdict.tokens,
        "rescore_ms": round(verdict.rescore_ms, 1),
        "claimed_generation_ms": round(verdict.claimed_generation_ms, 1),
        "reason": verdict.reason,
    }
    if as_json:
        print_json(doc)
    else:
        table = Table(title="re-score verdict", show_header=False)
        table.add_column("field")
        table.add_column("value")
        table.add_row("verdict", "passed" if verdict.passed else f"FAILED: {verdict.reason}")
        table.add_row("result", f"{result_cid} by {result.node_did}")
        table.add_row(
            "claimed tokens ranked first", f"{verdict.top1_fraction:.0%} of {verdict.tokens}"
        )
        table.add_row("fingerprint agreement", f"{verdict.fingerprint_agreement:.2f}")
        table.add_row(
            "cost",
            f"{verdict.rescore_ms:.0f} ms to re-score vs {verdict.claimed_generation_ms:.0f} ms "
            "to generate",
        )
        out.print(table)
    if not verdict.passed:
        raise typer.Exit(1)
