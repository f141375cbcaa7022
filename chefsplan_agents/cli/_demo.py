"""``chefsplan demo``: the Copilot answers a planning request on an embedded network, with one
node cheating, and prints the answer with its receipts.

An embedded network (in-process EVM with the contracts, a content store with IPFS-identical
CIDs, provider nodes each running the pinned model with llama.cpp) takes the request. The
Copilot plans it into parts, Matching delegates each part at trust ``high`` (three replicas,
two must agree, commit-reveal), Compliance re-scores the winning results with its own copy of
the pinned model and logs its verdicts on chain, and the Copilot answers with the sources.

One node is a cheater (a testing mode of the node, ``chefsplan_agents.testing.WrongModel``):
it runs a cheaper copy of the model (SmolLM2 requantized from Q4_1 to Q4_0; with ``--model
tiny``, the random tiny model instead of the scripted one) and claims the pinned model. Its
results are real, revealed and stored, and caught twice: outvoted by the two honest nodes, so
the market slashes its bond to the requester when the task settles, and failing the re-score
of its own result by the honest model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, TextMessage
from autogen_agentchat.messages import StructuredMessage as _Structured
from rich import box
from rich.table import Table
from rich.text import Text

from chefsplan_agents.agents import ComplianceReport, DelegationReport, Plan, Verdict, team
from chefsplan_agents.bundles import decode_result_bundle, decode_task_bundle
from chefsplan_agents.cli._app import app, out
from chefsplan_agents.cli._devnet import check_devnet_flags, progress_printer
from chefsplan_agents.devnet import DEVNET_MODELS, Devnet
from chefsplan_agents.errors import ConfigError
from chefsplan_agents.llm import LlamaCppBackend, default_cache_dir, resolve_model
from chefsplan_agents.market import Settlement
from chefsplan_agents.network import Network
from chefsplan_agents.node import ProviderNode
from chefsplan_agents.testing import WrongModel, requantize
from chefsplan_agents.verify import RescoreVerdict, rescore_result

DEFAULT_REQUEST = (
    "- Plan a three-course menu for a 40-guest spring dinner, with a vegetarian main course.\n"
    "- List the checks to run on a produce supplier's invoice before paying it."
)

_WEI_PER_ETH = 10**18


@dataclass(frozen=True)
class _CheatModel:
    """What the cheating node runs instead of the pinned model."""

    spec: str
    label: str


def _cheat_model(model: str, status: Callable[[str, str], None]) -> _CheatModel:
    """The cheaper model file for ``model``: requantized once into the model cache."""
    if model == "tiny":
        return _CheatModel("tiny-random", "tiny-random")
    pinned = resolve_model(DEVNET_MODELS.get(model, model))
    target = default_cache_dir() / f"{pinned.path.stem}.requantized-Q4_0.gguf"
    if not target.is_file():
        status("cheater", f"requantizing {pinned.path.name} to Q4_0 (once, into {target.parent})")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        with _quiet_fds():
            requantize(pinned.path, partial, "Q4_0")
        partial.replace(target)
    return _CheatModel(str(target), f"{pinned.name} requantized to Q4_0")


@contextlib.contextmanager
def _quiet_fds() -> Iterator[None]:
    """Silence llama.cpp's quantizer, which prints every tensor to the process's stdout/err."""
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _event_line(item: BaseAgentEvent | BaseChatMessage) -> str | None:
    """One status line for a team event (what the agents are doing now)."""
    content = getattr(item, "content", None)
    if isinstance(content, Plan):
        return f"planned {len(content.parts)} part(s); delegating at trust {content.request.trust}"
    if isinstance(content, DelegationReport):
        return f"{len(content.delegations)} part(s) back from the network; checking them"
    if isinstance(content, ComplianceReport):
        return "verdicts logged on chain; writing the answer"
    if isinstance(item, TextMessage):
        return None
    kind = type(item).__name__
    if kind == "ToolCallRequestEvent" and isinstance(content, list):
        names = ", ".join(str(getattr(c, "name", "?")) for c in content)
        return f"calls {names}" + (
            " — the nodes claim, run, commit and reveal" if "delegate_task" in names else ""
        )
    return None


@dataclass(frozen=True)
class _CheatResult:
    part: int
    task_id: str
    result_cid: str
    output_hash: str
    output: str
    outvoted: bool
    bond_wei: int
    refund_wei: int
    finalize_tx: str
    rescore: RescoreVerdict


def _cheater_results(
    net: Devnet, verifier: LlamaCppBackend, verdicts: list[Verdict], cheater: str
) -> list[_CheatResult]:
    """The cheater's own revealed results, each re-scored with the honest model, and what the
    settlement did with its bond."""
    found = []
    for v in verdicts:
        d = v.delegation
        for tid in d.task_ids:
            record = net.market.get_task(tid)
            if record is None:
                continue
            reveals = net.market.events("ResultRevealed", task_id=tid, provider=cheater)
            if not reveals:
                continue
            cid = str(reveals[0].args["resultCid"])
            result = decode_result_bundle(net.store.get(cid))
            task = decode_task_bundle(net.store.get(record.bundle_cid))
            verdict = rescore_result(verifier, task, result, task_cid=record.bundle_cid)
            finals = net.market.events("TaskFinalized", task_id=tid)
            settlement = Settlement.from_event(finals[0]) if finals else None
            found.append(
                _CheatResult(
                    part=v.part,
                    task_id=tid,
                    result_cid=cid,
                    output_hash="0x" + bytes(reveals[0].args["outputHash"]).hex(),
                    output=result.output,
                    outvoted=result.output_hash != d.output_hash,
                    bond_wei=record.params.bond,
                    refund_wei=settlement.refund if settlement else 0,
                    finalize_tx=finals[0].tx_hash if finals else "",
                    rescore=verdict,
                )
            )
    return found


def _short(value: str | None, keep: int = 14) -> str:
    if not value:
        return "-"
    return value if len(value) <= keep else f"{value[: keep - 4]}…{value[-4:]}"


def _excerpt(text: str, keep: int = 90) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= keep else flat[: keep - 1] + "…"


def _eth(wei: int) -> str:
    return f"{wei / _WEI_PER_ETH:.4f} ETH"


@app.command()
def demo(
    model: Annotated[
        str, typer.Option("--model", help="smollm2 (real model), tiny (test model), or a .gguf.")
    ] = "smollm2",
    nodes: Annotated[
        int, typer.Option("--nodes", help="Provider nodes to start (3 or more; one cheats).")
    ] = 3,
    request: Annotated[
        str, typer.Option("--request", help="What to ask the Copilot (bullets are parts).")
    ] = DEFAULT_REQUEST,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", help="New tokens per part at most.")
    ] = 80,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the answer and receipts as one JSON object.")
    ] = False,
) -> None:
    """The Copilot answers a request on an embedded network where one node cheats: the cheat
    is outvoted, fails the re-score and is slashed on chain; prints the answer and receipts."""
    if nodes < 3:
        raise ConfigError(
            f"--nodes must be at least 3 (got {nodes}): trust 'high' runs each part on three "
            "nodes, one of which cheats"
        )
    check_devnet_flags(nodes, model, 3, 2, max_tokens)
    started = time.perf_counter()
    on_stage, _on_progress, status = progress_printer(quiet=as_json)
    spec = DEVNET_MODELS.get(model, model)
    cheater_index = 0  # it ticks first, so it claims a replica of every task
    with status:
        cheat_model = _cheat_model(model, on_stage)
        on_stage("cheater", f"node {cheater_index + 1} will run {cheat_model.label}")
        with (
            LlamaCppBackend(resolve_model(cheat_model.spec), n_threads=2) as cheat_llm,
            Devnet.create(
                nodes=nodes,
                model=model,
                on_stage=on_stage,
                cheaters={cheater_index: WrongModel(cheat_llm)},
            ) as net,
            LlamaCppBackend(resolve_model(spec), n_threads=2) as verifier,
        ):
            network = net.network
            network.verifier = verifier  # Compliance re-scores with the pinned model
            cheater = net.nodes[cheater_index]
            on_stage("copilot", "planning the request")
            messages = asyncio.run(_run_team(network, request, max_tokens, on_stage))
            answer = next((m.content for m in reversed(messages) if isinstance(m, TextMessage)), "")
            reports = [
                m.content
                for m in messages
                if isinstance(m, _Structured) and isinstance(m.content, ComplianceReport)
            ]
            verdicts = [v for r in reports for v in r.verdicts]
            on_stage("audit", "re-scoring the cheater's own results with the pinned model")
            caught = _cheater_results(net, verifier, verdicts, cheater.address)
            reputation = net.registry.reputation(cheater.address)
            cheater_reputation = _reputation(net, cheater.address)
            requester_credit = net.market.balance_of(net.requester.address)
            node_rows = [
                {
                    "node": i + 1,
                    "did": n.did,
                    "address": n.address,
                    "cheats": n.cheat is not None,
                    "model_run": cheat_model.label if n.cheat is not None else f"{spec} (pinned)",
                    "model_claimed_sha256": net.model_sha256,
                    "reputation": _reputation(net, n.address),
                }
                for i, n in enumerate(net.nodes)
            ]
    elapsed = time.perf_counter() - started

    if as_json:
        doc = _json_doc(request, answer, verdicts, caught, node_rows, cheater, requester_credit)
        doc["cheater"]["reputation"] = cheater_reputation
        doc["wall_s"] = round(elapsed, 2)
        out.print(json.dumps(doc, sort_keys=True), markup=False, soft_wrap=True)
        return
    out.print(Text("Request", style="bold"))
    out.print(request, markup=False, highlight=False)
    out.print()
    out.print(Text("The Copilot's answer", style="bold"))
    out.print(answer, markup=False, highlight=False)
    out.print()
    for v in verdicts:
        out.print(_part_table(v, [c for c in caught if c.part == v.part]))
    out.print(_nodes_table(node_rows))
    slashed = sum(c.bond_wei for c in caught if c.outvoted)
    out.print(
        f"cheater {cheater.did[:24]}… on chain: reputation won {reputation.won}, lost "
        f"{reputation.lost}, bonds slashed {reputation.slashed} ({_eth(slashed)} to the "
        f"requester, whose market credit is now {_eth(requester_credit)})",
        markup=False,
        highlight=False,
    )
    out.print(f"done in {elapsed:.1f} s")


def _reputation(net: Devnet, address: str) -> dict[str, int]:
    rep = net.registry.reputation(address)
    return {"won": rep.won, "lost": rep.lost, "slashed": rep.slashed}


async def _run_team(
    network: Network, request: str, max_tokens: int, on_stage: Callable[[str, str], None]
) -> list[BaseAgentEvent | BaseChatMessage]:
    """Run the three agents on ``request``; every part at trust ``high``."""
    text = f"trust: high\nmax_tokens: {max_tokens}\n{request}"
    agents = team(network, trust="high", max_tokens=max_tokens, max_attempts=1)
    messages: list[BaseAgentEvent | BaseChatMessage] = []
    async for item in agents.run_stream(task=text):
        if isinstance(item, BaseAgentEvent | BaseChatMessage):
            messages.append(item)
            line = _event_line(item)
            if line:
                on_stage(item.source, line)
    return messages


def _verdict_row(v: Verdict) -> dict[str, Any]:
    d = v.delegation
    return {
        "part": v.part + 1,
        "prompt": d.prompt,
        "decision": v.decision,
        "reasons": list(v.reasons),
        "status": d.status,
        "output": d.output,
        "output_hash": d.output_hash,
        "result_cid": d.result_cid,
        "task_ids": list(d.task_ids),
        "provider_did": d.provider_did,
        "agreed": d.agreed,
        "replicas": d.replicas,
        "dissenters": list(d.dissenters),
        "rescore_passed": d.verification.passed if d.verification else None,
        "second_opinion": v.second_opinion.verdict if v.second_opinion else None,
        "policy_passed": v.policy.allowed if v.policy else None,
        "verdict_log_tx": v.logged.tx_hash if v.logged else None,
        "finalize_tx": d.receipt.finalize_tx if d.receipt else None,
        "bundle_cid": d.receipt.bundle_cid if d.receipt else None,
        "committers": [
            {"did": c.did, "address": c.address, "output_hash": c.output_hash, "agreed": c.agreed}
            for c in (d.receipt.committers if d.receipt else ())
        ],
    }


def _json_doc(
    request: str,
    answer: str,
    verdicts: list[Verdict],
    caught: list[_CheatResult],
    node_rows: list[dict[str, Any]],
    cheater: ProviderNode,
    requester_credit: int,
) -> dict[str, Any]:
    return {
        "request": request,
        "answer": answer,
        "parts": [_verdict_row(v) for v in verdicts],
        "nodes": node_rows,
        "cheater": {
            "did": cheater.did,
            "address": cheater.address,
            "cheat": cheater.cheat.name if cheater.cheat is not None else None,
            "results": [
                {
                    "part": c.part + 1,
                    "task_id": c.task_id,
                    "result_cid": c.result_cid,
                    "output_hash": c.output_hash,
                    "output": c.output,
                    "outvoted": c.outvoted,
                    "bond_slashed_wei": c.bond_wei if c.outvoted else 0,
                    "settlement_refund_wei": c.refund_wei,
                    "finalize_tx": c.finalize_tx,
                    "rescore_passed": c.rescore.passed,
                    "rescore_check": c.rescore.check,
                    "rescore_reason": c.rescore.reason,
                    "rescore_top1_fraction": c.rescore.top1_fraction,
                }
                for c in caught
            ],
        },
        "requester_market_credit_wei": requester_credit,
    }


def _kv_table(title: str) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE, show_header=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    return table


def _part_table(v: Verdict, cheats: list[_CheatResult]) -> Table:
    d = v.delegation
    table = _kv_table(f"Part {v.part + 1}: {_excerpt(d.prompt.splitlines()[-1], 60)}")
    verdict = v.decision.upper() + (f": {'; '.join(v.reasons)}" if v.reasons else "")
    table.add_row("verdict", verdict)
    table.add_row("answered by", d.provider_did or "-")
    table.add_row("agreement", f"{d.agreed} of {d.replicas} nodes (commit-reveal vote, quorum 2)")
    table.add_row("result CID", d.result_cid or "-")
    if d.verification is not None:
        table.add_row(
            "re-score",
            ("passed" if d.verification.passed else "FAILED")
            + f" ({d.verification.top1_fraction:.0%} of tokens ranked first by the pinned model)",
        )
    if v.second_opinion is not None:
        table.add_row("second opinion", v.second_opinion.verdict)
    if v.policy is not None:
        table.add_row("policy", "passed" if v.policy.allowed else "broken")
    if d.receipt is not None:
        table.add_row("settled", f"finalize tx {_short(d.receipt.finalize_tx, 24)}")
    if v.logged is not None:
        table.add_row("verdict log", f"OutputLog tx {_short(v.logged.tx_hash, 24)}")
    for c in cheats:
        table.add_row("cheater", f"{c.result_cid} (its own result)")
        table.add_row("  output", repr(_excerpt(c.output, 50)))
        table.add_row(
            "  vote",
            "OUTVOTED by the two honest nodes" if c.outvoted else "agreed with the majority",
        )
        why = f"{c.rescore.check}: {c.rescore.reason}" if c.rescore.reason else ""
        table.add_row(
            "  re-score",
            ("passed" if c.rescore.passed else "FAILED")
            + f" ({c.rescore.top1_fraction:.0%} of tokens ranked first; {why})",
        )
        table.add_row(
            "  bond",
            f"{_eth(c.bond_wei)} slashed to the requester by the settlement"
            if c.outvoted
            else "returned",
        )
    return table


def _nodes_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Nodes: every offer claims the pinned model", title_justify="left")
    for col in ("node", "DID", "runs", "on chain"):
        table.add_column(col, no_wrap=col in ("node", "DID"))
    for r in rows:
        rep = r["reputation"]
        runs = Text(r["model_run"])
        if r["cheats"]:
            runs.append(" CHEATS", style="bold red")
        table.add_row(
            str(r["node"]),
            _short(r["did"], 22),
            runs,
            f"won {rep['won']}, lost {rep['lost']}, slashed {rep['slashed']}",
        )
    return table
