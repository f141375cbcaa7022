"""What the network commands share: which chain and contracts, the content store, the keystore.

``registry``, ``task`` and ``verify`` talk to a network that already runs: a chain node with the
contracts deployed (``--rpc`` and ``--contracts``, or ``chain.rpc_url`` and ``chain.contracts``
in the settings) and the content store the nodes use (``[storage]``). The embedded chain lives
only as long as one process, so with no chain configured there is nothing to look at: these
commands say so in one line and point at ``chefsplan devnet``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from chefsplan_agents.chain import Chain, Deployment, attach_contracts, open_chain
from chefsplan_agents.cli._app import settings
from chefsplan_agents.cli._identity import passphrase
from chefsplan_agents.config import ChainSettings, Settings
from chefsplan_agents.errors import ConfigError
from chefsplan_agents.identity import Identity, load_keystore
from chefsplan_agents.storage import ContentStore, open_store

RpcOption = Annotated[
    str | None,
    typer.Option("--rpc", help="JSON-RPC URL of the chain node (default: chain.rpc_url)."),
]
ContractsOption = Annotated[
    str | None,
    typer.Option(
        "--contracts",
        help='Deployed addresses as JSON {"AgentRegistry": "0x…", …} (default: chain.contracts).',
    ),
]
KeystoreOption = Annotated[
    Path | None,
    typer.Option(
        "--keystore",
        "-k",
        help="Keystore of the requester (default: the `keystore` setting); its passphrase "
        "comes from $CHEFSPLAN_KEYSTORE_PASSPHRASE or a prompt.",
    ),
]

NO_CHAIN_HINT = (
    "no chain configured: these commands read a running network; pass --rpc URL (and "
    '--contracts), set chain.backend = "jsonrpc" and chain.rpc_url in the settings, or try '
    "`chefsplan devnet` for a network in one process"
)


def parse_contracts(raw: str) -> dict[str, str]:
    """``--contracts`` JSON as an address map.

    Raises:
        ConfigError: It is not a JSON object of strings.
    """
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--contracts is not JSON: {exc.msg}") from exc
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError('--contracts must be a JSON object {"AgentRegistry": "0x…", …}')
    return {str(k): str(v) for k, v in value.items()}


def target(rpc: str | None, contracts: str | None) -> tuple[Settings, ChainSettings]:
    """The settings, with the chain a command reads (flags over settings).

    Raises:
        ConfigError: No chain is configured, or no contracts are known.
    """
    current = settings()
    chain = current.chain
    if rpc:
        chain = chain.model_copy(update={"backend": "jsonrpc", "rpc_url": rpc})
    if chain.backend != "jsonrpc":
        raise ConfigError(NO_CHAIN_HINT)
    if contracts:
        chain = chain.model_copy(update={"contracts": parse_contracts(contracts)})
    if not chain.contracts:
        raise ConfigError(
            f"no contract addresses for the chain at {chain.rpc_url}: pass --contracts JSON or "
            "set chain.contracts (`chefsplan chain deploy` prints them)"
        )
    return current, chain


@dataclass(frozen=True)
class Network:
    """An open chain with the contracts attached, and the content store."""

    settings: Settings
    chain: Chain
    deployment: Deployment
    store: ContentStore


@contextmanager
def open_network(rpc: str | None, contracts: str | None) -> Iterator[Network]:
    """Open the configured chain and store and attach the contracts; close them afterwards.

    Raises:
        ConfigError: No chain or contracts configured, or bad storage settings.
        ChainUnavailable: The chain node does not answer.
        ContractNotDeployed: No contract at a configured address.
    """
    current, chain_settings = target(rpc, contracts)
    with (
        open_chain(chain_settings) as chain,
        open_store(current.storage, current.blockstore_path) as store,
    ):
        yield Network(current, chain, attach_contracts(chain, chain_settings.contracts), store)


def keystore_identity(keystore: Path | None) -> Identity:
    """Decrypt the requester's identity (passphrase from the environment or a prompt).

    Raises:
        KeystoreError: No keystore there, or a wrong passphrase.
    """
    path = keystore.expanduser() if keystore is not None else settings().keystore_path
    if not path.exists():
        raise ConfigError(
            f"no keystore at {path}: create one with `chefsplan id new` or pass --keystore"
        )
    return load_keystore(path, passphrase(confirm=False))
