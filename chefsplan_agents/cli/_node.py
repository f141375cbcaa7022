"""``chefsplan node``: run a provider node daemon."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from chefsplan_agents.bundles import parse_tags
from chefsplan_agents.chain import attach_contracts, deploy_contracts, open_chain
from chefsplan_agents.cli._app import app, err, out
from chefsplan_agents.config import ChainSettings, LLMSettings, StorageSettings
from chefsplan_agents.errors import ConfigError
from chefsplan_agents.identity import load_keystore
from chefsplan_agents.llm import open_backend
from chefsplan_agents.market import MarketClient
from chefsplan_agents.node import (
    DEFAULT_BOND_FLOOR_WEI,
    DEFAULT_CHAIN_MARGIN_S,
    DEFAULT_MAX_BOND_PER_BOUNTY,
    DEFAULT_MAX_BOND_WEI,
    DEFAULT_MAX_CHALLENGE_WINDOW_S,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_DEADLINE_HORIZON_S,
    DEFAULT_TIME_SAFETY_FACTOR,
    NodePolicy,
    ProviderNode,
)
from chefsplan_agents.registry import RegistryClient
from chefsplan_agents.storage import open_store
from chefsplan_agents.testing import CHEAT_NAMES, cheat_by_name, check_cheat
from chefsplan_agents.verify import Panelist

node_app = typer.Typer(help="Run a provider node.", no_args_is_help=True)
app.add_typer(node_app, name="node")


def _contracts(raw: str) -> dict[str, str]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--contracts is not JSON: {exc.msg}") from exc
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError('--contracts must be a JSON object {"AgentRegistry": "0x…", …}')
    return {str(k): str(v) for k, v in value.items()}


@node_app.command("run")
def run_node(
    keystore: Annotated[
        Path,
        typer.Option(
            "--keystore",
            help="The node's keystore; its passphrase comes from $CHEFSPLAN_KEYSTORE_PASSPHRASE.",
        ),
    ],
    chain_url: Annotated[
        str, typer.Option("--chain", help="JSON-RPC URL of the EVM node.")
    ] = "http://127.0.0.1:8545",
    contracts: Annotated[
        str | None,
        typer.Option("--contracts", help='Deployed addresses as JSON ({"AgentRegistry": …}).'),
    ] = None,
    deploy: Annotated[
        bool, typer.Option("--deploy", help="Deploy fresh contracts from the node's account.")
    ] = False,
    ipfs: Annotated[
        str | None,
        typer.Option("--ipfs", help="Multiaddr of an IPFS daemon's RPC API."),
    ] = None,
    store_path: Annotated[
        Path | None,
        typer.Option("--store-path", help="A local blockstore folder instead of --ipfs."),
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            "--model", help="tiny, smollm2-135m, a .gguf path, or stub:SECONDS (a fake model)."
        ),
    ] = "smollm2-135m",
    state_dir: Annotated[
        Path, typer.Option("--state-dir", help="Where the node keeps its task records.")
    ] = Path("node-state"),
    n_threads: Annotated[int, typer.Option("--threads", help="llama.cpp threads.", min=1)] = 2,
    n_ctx: Annotated[int, typer.Option("--ctx", help="Context length.", min=64)] = 2048,
    stake: Annotated[
        int | None, typer.Option("--stake", help="Wei to stake (default: the minimum).", min=0)
    ] = None,
    min_bounty: Annotated[
        int, typer.Option("--min-bounty", help="Refuse tasks paying less (wei).", min=0)
    ] = 1,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", help="Refuse tasks asking for more.", min=1)
    ] = 512,
    http_port: Annotated[
        int | None,
        typer.Option(
            "--http-port", help="Serve the signed HTTP job API (0: any free port).", min=0
        ),
    ] = None,
    http_host: Annotated[
        str, typer.Option("--http-host", help="Interface for the HTTP API.")
    ] = "127.0.0.1",
    http_allow: Annotated[
        list[str] | None,
        typer.Option(
            "--http-allow",
            help="A requester DID that may start (free) HTTP jobs; repeat for more.",
        ),
    ] = None,
    http_open: Annotated[
        bool,
        typer.Option(
            "--http-open", help="Let any DID start HTTP jobs (jobs are free: trusted networks)."
        ),
    ] = False,
    http_max_connections: Annotated[
        int,
        typer.Option("--http-max-connections", help="HTTP connections served at once.", min=1),
    ] = DEFAULT_MAX_CONNECTIONS,
    max_bond: Annotated[
        int,
        typer.Option(
            "--max-bond", help="Refuse tasks demanding a larger bond (wei; 0: no cap).", min=0
        ),
    ] = DEFAULT_MAX_BOND_WEI,
    max_bond_per_bounty: Annotated[
        int,
        typer.Option(
            "--max-bond-per-bounty",
            help="Refuse tasks whose bond is over this many times the bounty (0: no cap).",
            min=0,
        ),
    ] = DEFAULT_MAX_BOND_PER_BOUNTY,
    bond_floor: Annotated[
        int,
        typer.Option(
            "--bond-floor",
            help="Bonds up to this (wei) are taken whatever the bounty.",
            min=0,
        ),
    ] = DEFAULT_BOND_FLOOR_WEI,
    time_safety_factor: Annotated[
        float,
        typer.Option(
            "--time-safety-factor",
            help="Multiply the node's measured run time by this before fitting task windows.",
            min=1.0,
        ),
    ] = DEFAULT_TIME_SAFETY_FACTOR,
    chain_margin: Annotated[
        int,
        typer.Option(
            "--chain-margin",
            help="Seconds added to every run-time estimate to get a transaction mined.",
            min=0,
        ),
    ] = DEFAULT_CHAIN_MARGIN_S,
    max_horizon: Annotated[
        int,
        typer.Option(
            "--max-horizon",
            help="Refuse tasks whose claim or reveal deadline is further ahead (seconds).",
            min=1,
        ),
    ] = DEFAULT_MAX_DEADLINE_HORIZON_S,
    max_challenge_window: Annotated[
        int,
        typer.Option(
            "--max-challenge-window",
            help="Refuse tasks with a longer challenge window (seconds).",
            min=0,
        ),
    ] = DEFAULT_MAX_CHALLENGE_WINDOW_S,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", help="Seconds between polls when idle.", min=0.01)
    ] = 1.0,
    tag: Annotated[
        list[str] | None,
        typer.Option(
            "--tag",
            help="key=value the node states in its signed offer (e.g. jurisdiction=EU); "
            "repeat for more (at most 16).",
        ),
    ] = None,
    testing_cheat: Annotated[
        str | None,
        typer.Option(
            "--testing-cheat",
            help="TESTING ONLY: forge results this way instead of running the model honestly "
            f"({', '.join(CHEAT_NAMES)}), so a test network can show a cheater caught.",
        ),
    ] = None,
    testing_cheat_model: Annotated[
        Path | None,
        typer.Option(
            "--testing-cheat-model",
            help="TESTING ONLY: the cheaper GGUF a wrong-model cheat runs while claiming --model.",
        ),
    ] = None,
    testing_cheat_fraction: Annotated[
        float,
        typer.Option(
            "--testing-cheat-fraction",
            help="TESTING ONLY: share of tasks cheated on (honest on the rest).",
        ),
    ] = 1.0,
) -> None:
    """Register on the market and serve tasks until SIGTERM or Ctrl-C.

    Prints one JSON line when ready: the node's DID, address, offer CID and the contracts.
    """
    if deploy and contracts:
        raise ConfigError("give either --deploy or --contracts, not both")
    if not deploy and not contracts:
        raise ConfigError("say which contracts to use: --contracts JSON, or --deploy fresh ones")
    if (ipfs is None) == (store_path is None):
        raise ConfigError("give exactly one content store: --ipfs MULTIADDR or --store-path DIR")
    tags = parse_tags(tag or ())
    if testing_cheat is None and (testing_cheat_model is not None or testing_cheat_fraction != 1.0):
        raise ConfigError("--testing-cheat-model and --testing-cheat-fraction need --testing-cheat")
    if testing_cheat is not None:
        # Checked before anything is loaded or sent, so a typo costs nothing.
        check_cheat(
            testing_cheat,
            other_model=testing_cheat_model is not None,
            fraction=testing_cheat_fraction,
        )
    identity = load_keystore(keystore)
    evm_key = "0x" + identity.export_secrets()[1].hex()
    settings = ChainSettings(backend="jsonrpc", rpc_url=chain_url)
    with open_chain(settings, private_keys=[evm_key]) as chain:
        if deploy:
            deployment = deploy_contracts(chain, sender=identity.address)
        else:
            deployment = attach_contracts(chain, _contracts(contracts or "{}"))
        store = open_store(
            StorageSettings(backend="kubo", ipfs_api=ipfs)
            if ipfs
            else StorageSettings(backend="local", path=store_path)
        )
        backend = open_backend(LLMSettings(model=model, n_threads=n_threads, n_ctx=n_ctx))
        other = (
            open_backend(
                LLMSettings(model=str(testing_cheat_model), n_threads=n_threads, n_ctx=n_ctx)
            )
            if testing_cheat_model is not None
            else None
        )
        cheat = (
            cheat_by_name(testing_cheat, other_model=other, fraction=testing_cheat_fraction)
            if testing_cheat is not None
            else None
        )
        if cheat is not None:
            err.print(
                f"[bold red]TESTING MODE[/]: this node forges its results ({testing_cheat}); "
                "honest nodes and verifiers will catch it and its bond and stake will be slashed"
            )
        with store, backend as llm, other or contextlib.nullcontext():
            node = ProviderNode(
                identity,
                chain,
                RegistryClient(deployment.registry),
                MarketClient(deployment.market, from_block=deployment.deployed_at),
                store,
                llm,
                state_dir=str(state_dir),
                policy=NodePolicy(
                    min_bounty_wei=min_bounty,
                    max_tokens=max_tokens,
                    max_bond_wei=max_bond or None,
                    max_bond_per_bounty=max_bond_per_bounty or None,
                    bond_floor_wei=bond_floor,
                    time_safety_factor=time_safety_factor,
                    chain_margin_s=chain_margin,
                    max_deadline_horizon_s=max_horizon,
                    max_challenge_window_s=max_challenge_window,
                ),
                stake=stake,
                tags=tags,
                cheat=cheat,
            )
            # A node sits on challenge panels it is drawn for (a silent panelist is slashed).
            node.add_duty(Panelist.for_node(node))
            if http_port is not None:
                node.serve_http(
                    host=http_host,
                    port=http_port,
                    allowed_requesters=tuple(http_allow or ()),
                    open_to_all=http_open,
                    max_connections=http_max_connections,
                )
                if not http_allow and not http_open:
                    err.print(
                        "the HTTP API refuses every job: name requesters with --http-allow DID "
                        "(or --http-open on a trusted network)"
                    )
            status = node.start()
            ready = {
                "status": "ready",
                "did": status.did,
                "address": status.address,
                "offer_cid": status.offer_cid,
                "contracts": deployment.addresses,
                "endpoint": node.endpoint,
            }
            out.print(json.dumps(ready, sort_keys=True), markup=False, soft_wrap=True)
            out.file.flush()
            if not logging.getLogger().isEnabledFor(logging.INFO):
                err.print(f"node {status.did} serving {llm.info.name} on {chain_url}")
            try:
                node.run_forever(poll_interval)
            finally:
                node.close()
