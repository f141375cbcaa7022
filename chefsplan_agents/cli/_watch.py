"""``chefsplan watch``: follow the market, re-score sampled results inside their challenge
window and challenge the forged ones (see :class:`chefsplan_agents.verify.Watcher`)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from chefsplan_agents.bundles import GenerationParams
from chefsplan_agents.chain import Chain
from chefsplan_agents.cli._app import JsonOption, app, err, out, print_json, settings
from chefsplan_agents.cli._network import (
    ContractsOption,
    KeystoreOption,
    RpcOption,
    keystore_identity,
    open_network,
)
from chefsplan_agents.devnet import DEVNET_MODELS, Devnet
from chefsplan_agents.errors import ChainUnavailable, ConfigError, MarketError, StoreUnavailable
from chefsplan_agents.identity import Identity
from chefsplan_agents.llm import LLMBackend, open_backend, resolve_model
from chefsplan_agents.market import MarketClient, Timeouts
from chefsplan_agents.storage import ContentStore
from chefsplan_agents.testing import Lazy
from chefsplan_agents.verify import Watcher, WatchEvent

# A panel is drawn from providers outside the task: 3 panelists and the task's one replica.
_MIN_DEVNET_NODES = 4
_DEVNET_WINDOW = Timeouts(challenge_window=3600)
_DEVNET_MAX_STEPS = 400
_MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class _Where:
    chain: Chain
    market: MarketClient
    store: ContentStore
    address: str
    label: str
    devnet: Devnet | None  # an in-process devnet to step (None: poll the network)


def _check_flags(devnet: int, devnet_tasks: int, model: str | None) -> None:
    if devnet != 0 and not _MIN_DEVNET_NODES <= devnet <= 16:
        raise ConfigError(
            f"--devnet must be 0 (watch the configured network) or {_MIN_DEVNET_NODES} to 16 "
            f"nodes: a challenge panel needs 3 providers outside the task (got {devnet})"
        )
    if devnet and devnet_tasks < 1:
        raise ConfigError(f"--devnet-tasks must be at least 1 (got {devnet_tasks})")
    if devnet and model is not None and model not in DEVNET_MODELS and not model.endswith(".gguf"):
        known = ", ".join(sorted(DEVNET_MODELS))
        raise ConfigError(f"unknown --model {model!r}; use one of: {known}, or a .gguf path")


@contextlib.contextmanager
def _devnet_target(nodes: int, model: str, tasks: int, n_threads: int) -> Iterator[_Where]:
    # TESTING MODE on purpose: node 0 forges its results (chefsplan_agents.testing.Lazy),
    # so there is something to catch.
    with Devnet.create(
        nodes=nodes, model=model, share_model=True, n_threads=n_threads, cheaters={0: Lazy()}
    ) as net:
        identity = Identity.generate()
        address = net.chain.add_account(identity.export_secrets()[1])
        net.chain.transfer(address, 10**18)
        for i in range(tasks):
            net.delegate(
                "Say hi",
                assignee=net.nodes[i % nodes].address,
                timeouts=_DEVNET_WINDOW,
                params=GenerationParams(max_tokens=12),
            )
        label = f"a {nodes}-node devnet ({model}; node 0 cheats), {tasks} tasks posted"
        yield _Where(net.chain, net.market, net.store, address, label, net)


@contextlib.contextmanager
def _network_target(
    keystore: Path | None, rpc: str | None, contracts: str | None
) -> Iterator[_Where]:
    with open_network(rpc, contracts) as net:
        identity = keystore_identity(keystore)
        address = net.chain.add_account(identity.export_secrets()[1])
        market = MarketClient(net.deployment.market, from_block=net.deployment.deployed_at)
        yield _Where(net.chain, market, net.store, address, repr(net.chain), None)


def _printer(as_json: bool) -> Callable[[WatchEvent], None]:
    def show(event: WatchEvent) -> None:
        if as_json:
            print_json(event.as_json())
            return
        task = f"{event.task_id[:12]}… " if event.task_id else ""
        err.print(f"{event.kind:<12} {task}{event.detail}")

    return show


@app.command("watch")
def watch_command(
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate",
            help="Share of checkable results to re-score, 0 to 1 (default 0.2; with --devnet, "
            "1: every result, so the cheating node is caught on a short run).",
            min=0.0,
            max=1.0,
        ),
    ] = None,
    max_spend: Annotated[
        int | None,
        typer.Option(
            "--max-spend",
            help="Most wei of challenge bonds at stake or lost at once; a bond an upheld "
            "challenge returned no longer counts (default: 10 challenge bonds).",
            min=0,
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            help="Where the watcher keeps its records and cursor (default: ./watch-state; "
            "with --devnet, the devnet's own temporary folder).",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="The watcher's model (default: llm.model; with --devnet: tiny, and the "
            "devnet's model too). Tasks pinning another model are skipped.",
        ),
    ] = None,
    n_threads: Annotated[int, typer.Option("--threads", help="llama.cpp threads.", min=1)] = 1,
    max_tasks: Annotated[
        int,
        typer.Option(
            "--max-tasks",
            help="Stop once this many tasks were checked or skipped (0: never).",
            min=0,
        ),
    ] = 0,
    once: Annotated[
        bool,
        typer.Option(
            "--once",
            help="One pass over the market, then exit (with --devnet: once every posted task "
            "is checked and every challenge decided).",
        ),
    ] = False,
    poll: Annotated[
        float, typer.Option("--poll", help="Seconds between passes when idle.", min=0.0)
    ] = 2.0,
    devnet: Annotated[
        int,
        typer.Option(
            "--devnet",
            help="Watch an in-process devnet with this many nodes (4 to 16; node 0 cheats) "
            "instead of the configured network.",
        ),
    ] = 0,
    devnet_tasks: Annotated[
        int, typer.Option("--devnet-tasks", help="Tasks the devnet's requester posts.")
    ] = 2,
    keystore: KeystoreOption = None,
    rpc: RpcOption = None,
    contracts: ContractsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Follow the market, re-score sampled results inside their challenge window with a
    local model, and challenge (posting the bond from the keystore's account) every result
    whose winning output fails; follow each challenge to its decision and withdraw.

    With --json, each event is one JSON line on stdout; otherwise status goes to stderr and a
    summary to stdout.
    """
    _check_flags(devnet, devnet_tasks, model)
    if rate is None:
        rate = 1.0 if devnet else 0.2
    current = settings()
    if devnet:
        spec = model or "tiny"
        target = _devnet_target(devnet, spec, devnet_tasks, n_threads)
        llm_settings = current.llm.model_copy(update={"model": spec, "n_threads": n_threads})
    else:
        target = _network_target(keystore, rpc, contracts)
        llm_settings = current.llm.model_copy(update={"n_threads": n_threads})
        if model is not None:
            llm_settings = llm_settings.model_copy(update={"model": model})
    if llm_settings.server_url is None and not devnet:
        resolve_model(llm_settings.model)  # a missing model file is reported before any work
    show = _printer(as_json)
    with target as where:
        with open_backend(llm_settings) as llm:
            if state_dir is None:
                state_dir = where.devnet.workdir / "watch" if where.devnet else Path("watch-state")
            watcher = _watcher(where, llm, state_dir, rate, max_spend, show)
            if not as_json:
                err.print(
                    f"chefsplan watch: {where.label}; account {where.address}, rate {rate:g}, "
                    f"cap {watcher.max_spend_wei} wei, model {llm.info.name}"
                )
            try:
                _loop(watcher, where, max_tasks=max_tasks, once=once, poll=poll)
            except KeyboardInterrupt:
                err.print("stopped")
        _summary(watcher, as_json)


def _watcher(
    where: _Where,
    llm: LLMBackend,
    state_dir: Path,
    rate: float,
    max_spend: int | None,
    show: Callable[[WatchEvent], None],
) -> Watcher:
    cap = 10 * where.market.challenge_bond if max_spend is None else max_spend
    watcher = Watcher(
        where.address,
        where.chain,
        where.market,
        where.store,
        llm,
        state_dir=state_dir,
        rate=rate,
        max_spend_wei=cap,
        on_event=show,
    )
    if where.devnet is not None:
        where.devnet.add_watcher(watcher)
    return watcher


def _loop(watcher: Watcher, where: _Where, *, max_tasks: int, once: bool, poll: float) -> None:
    if where.devnet is not None:
        # The devnet's nodes and the watcher step together; its clock moves when all idle.
        total = len(where.devnet.market.events("TaskPosted"))
        goal = min(max_tasks, total) if max_tasks else total
        # On a devnet "one pass" means every posted task checked and every challenge decided:
        # the run is the devnet's whole story, and stopping half-way would show none of it.
        for _ in range(_DEVNET_MAX_STEPS):
            where.devnet.step()
            if watcher.finished >= goal and not watcher.busy:
                return
        raise MarketError(f"the devnet did not finish {goal} checks in {_DEVNET_MAX_STEPS} steps")
    backoff = max(poll, 1.0)
    while True:
        try:
            busy = watcher.tick() > 0
        except (ChainUnavailable, StoreUnavailable) as exc:
            if once:
                raise
            # A restarting RPC node or IPFS daemon must not end a watcher with challenges in
            # flight: its state is saved, so the next pass picks up where this one stopped.
            err.print(f"warning: {exc}; retrying in {backoff:g} s")
            time.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)
            continue
        backoff = max(poll, 1.0)
        if once or (max_tasks and watcher.finished >= max_tasks and not watcher.busy):
            return
        if not busy:
            time.sleep(poll)


def _summary(watcher: Watcher, as_json: bool) -> None:
    counts: dict[str, int] = {}
    for record in watcher.records:
        counts[str(record.stage)] = counts.get(str(record.stage), 0) + 1
    upheld = sum(1 for r in watcher.records if r.upheld)
    doc = {
        "event": "summary",
        "tasks": counts,
        "challenges_upheld": upheld,
        "spent_wei": watcher.spent_wei,
        "posted_wei": watcher.posted_wei,
        "withdrawn_wei": watcher.withdrawn_wei,
    }
    if as_json:
        print_json(doc)
        return
    table = Table(title="watch summary", show_header=False)
    table.add_column("field")
    table.add_column("value")
    for stage, n in sorted(counts.items()):
        table.add_row(f"tasks {stage}", str(n))
    table.add_row("challenges upheld", str(upheld))
    table.add_row("bonds posted (wei)", str(watcher.posted_wei))
    table.add_row("bonds at stake or lost (wei)", str(watcher.spent_wei))
    table.add_row("withdrawn (wei)", str(watcher.withdrawn_wei))
    out.print(table)
