"""``chefsplan chain``: deploy the contracts and look at a chain."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer

from chefsplan_agents.chain import (
    DEFAULT_CHALLENGE_BOND,
    DEFAULT_MIN_STAKE,
    DEFAULT_UNSTAKE_COOLDOWN,
    Chain,
    attach_contracts,
    deploy_contracts,
    open_chain,
)
from chefsplan_agents.cli._app import JsonOption, app, err, out, print_json, settings
from chefsplan_agents.config import ChainSettings
from chefsplan_agents.errors import ConfigError
from chefsplan_agents.market import MarketClient
from chefsplan_agents.registry import RegistryClient

KEY_ENV = "ETH_PRIVATE_KEY"

chain_app = typer.Typer(
    name="chain",
    help="Deploy the contracts and inspect the chain.",
    no_args_is_help=True,
)
app.add_typer(chain_app)

RpcOption = Annotated[
    str | None,
    typer.Option("--rpc", help="JSON-RPC URL of an EVM node; default: the configured chain."),
]


def _settings(rpc: str | None) -> ChainSettings:
    chain = settings().chain
    if rpc:
        chain = chain.model_copy(update={"backend": "jsonrpc", "rpc_url": rpc})
    return chain


def _key(key_env: str, settings: ChainSettings) -> list[str]:
    key = os.environ.get(key_env, "").strip()
    if not key and settings.backend == "jsonrpc":
        raise ConfigError(
            f"no deployer key: set ${key_env} to the private key of a funded account "
            "(it is read from the environment so it never appears in the shell history)"
        )
    return [key] if key else []


@chain_app.command("deploy")
def deploy_command(
    rpc: RpcOption = None,
    min_stake: Annotated[
        int, typer.Option(help="Wei a provider must stake to register.", min=0)
    ] = DEFAULT_MIN_STAKE,
    unstake_cooldown: Annotated[
        int, typer.Option(help="Seconds between requesting an unstake and withdrawing.", min=0)
    ] = DEFAULT_UNSTAKE_COOLDOWN,
    challenge_bond: Annotated[
        int, typer.Option(help="Wei a challenger posts (more than zero).", min=1)
    ] = DEFAULT_CHALLENGE_BOND,
    key_env: Annotated[
        str, typer.Option(help="Environment variable holding the deployer's private key.")
    ] = KEY_ENV,
    as_json: JsonOption = False,
) -> None:
    """Deploy AgentRegistry, TaskMarket and OutputLog; print their addresses as JSON.

    The output is the value of ``chain.contracts`` in the config (or of
    ``CHEFSPLAN_CHAIN__CONTRACTS``).
    """
    chain_settings = _settings(rpc)
    with open_chain(chain_settings, private_keys=_key(key_env, chain_settings)) as chain:
        err.print(
            f"deploying to chain {chain.chain_id} at {chain.endpoint} from {chain.default_account}"
        )
        deployment = deploy_contracts(
            chain,
            min_stake=min_stake,
            unstake_cooldown=unstake_cooldown,
            challenge_bond=challenge_bond,
        )
        _print(deployment.addresses, as_json)


@chain_app.command("info")
def info_command(
    rpc: RpcOption = None,
    contracts: Annotated[
        str | None,
        typer.Option(help='Contract addresses as JSON ({"AgentRegistry": "0x…", …}).'),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Print the chain's id, head and, when contracts are known, their parameters as JSON."""
    chain_settings = _settings(rpc)
    addresses: dict[str, str] = dict(chain_settings.contracts)
    if contracts:
        try:
            parsed = json.loads(contracts)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--contracts is not JSON: {exc.msg}") from exc
        if not isinstance(parsed, dict):
            raise ConfigError('--contracts must be a JSON object {"AgentRegistry": "0x…", …}')
        addresses = {str(k): str(v) for k, v in parsed.items()}
    with open_chain(chain_settings) as chain:
        _print(_info(chain, addresses), as_json)


def _print(doc: dict[str, Any], as_json: bool) -> None:
    # Both forms are JSON: --json keeps it on one line for scripts.
    if as_json:
        print_json(doc)
    else:
        out.print(json.dumps(doc, indent=2), markup=False)


def _info(chain: Chain, addresses: dict[str, str]) -> dict[str, Any]:
    info: dict[str, Any] = {
        "endpoint": chain.endpoint,
        "chain_id": chain.chain_id,
        "block": chain.block_number(),
        "timestamp": chain.block_timestamp(),
    }
    if addresses:
        deployment = attach_contracts(chain, addresses)
        registry = RegistryClient(deployment.registry)
        market = MarketClient(deployment.market)
        info["contracts"] = deployment.addresses
        info["registry"] = {
            "providers": registry.count(),
            "min_stake": registry.min_stake,
            "unstake_cooldown": registry.unstake_cooldown,
            "owner": registry.owner,
        }
        info["market"] = {"challenge_bond": market.challenge_bond, "panel_size": market.panel_size}
    return info
