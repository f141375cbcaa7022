"""Deploy the package's contracts, or attach to ones already deployed."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from chefsplan_agents.chain._base import BoundContract, Chain
from chefsplan_agents.config import ChainSettings
from chefsplan_agents.errors import ChainError, ConfigError

__all__ = [
    "CONTRACT_NAMES",
    "DEFAULT_CHALLENGE_BOND",
    "DEFAULT_MIN_STAKE",
    "DEFAULT_UNSTAKE_COOLDOWN",
    "Deployment",
    "attach_contracts",
    "deploy_contracts",
    "open_deployment",
]

log = logging.getLogger(__name__)

CONTRACT_NAMES: tuple[str, ...] = ("AgentRegistry", "TaskMarket", "OutputLog")
DEFAULT_MIN_STAKE = 10**16  # 0.01 ether
DEFAULT_UNSTAKE_COOLDOWN = 24 * 3600
DEFAULT_CHALLENGE_BOND = 10**16


@dataclass(frozen=True)
class Deployment:
    """The package's contracts on one chain.

    Attributes:
        chain: The chain they live on.
        registry: The ``AgentRegistry``.
        market: The ``TaskMarket``.
        output_log: The ``OutputLog``.
        deployed_at: Block of the first deployment transaction (0 when attached), where event
            scans start.
    """

    chain: Chain = field(repr=False)
    registry: BoundContract
    market: BoundContract
    output_log: BoundContract
    deployed_at: int = 0

    @property
    def addresses(self) -> dict[str, str]:
        """Addresses by contract name, the shape of ``ChainSettings.contracts``."""
        return {
            "AgentRegistry": self.registry.address,
            "TaskMarket": self.market.address,
            "OutputLog": self.output_log.address,
        }


def deploy_contracts(
    chain: Chain,
    *,
    min_stake: int = DEFAULT_MIN_STAKE,
    unstake_cooldown: int = DEFAULT_UNSTAKE_COOLDOWN,
    challenge_bond: int = DEFAULT_CHALLENGE_BOND,
    sender: str | None = None,
) -> Deployment:
    """Deploy fresh contracts and wire them together.

    Deploys ``AgentRegistry(min_stake, unstake_cooldown)``, ``TaskMarket(registry,
    challenge_bond)`` (challenges are decided by panels of registered providers) and
    ``OutputLog``, then binds the market to the registry.

    Args:
        chain: Where to deploy.
        min_stake: Wei a provider must stake to register.
        unstake_cooldown: Seconds between ``requestUnstake`` and ``withdrawStake``.
        challenge_bond: Wei a challenger posts.
        sender: The deploying account (default: the chain's default account).

    Returns:
        The deployment, with the deployer as the registry's owner.

    Raises:
        ChainError: A parameter is out of range.
        TxReverted: A constructor or wiring call reverted.
    """
    for name, value in (
        ("min_stake", min_stake),
        ("unstake_cooldown", unstake_cooldown),
        ("challenge_bond", challenge_bond),
    ):
        if value < 0:
            raise ChainError(f"{name} must not be negative (got {value})")
    deployer = sender or chain.default_account
    start = chain.block_number() + 1
    registry_at = chain.deploy("AgentRegistry", min_stake, unstake_cooldown, sender=deployer)
    market_at = chain.deploy("TaskMarket", registry_at, challenge_bond, sender=deployer)
    log_at = chain.deploy("OutputLog", sender=deployer)
    registry = chain.contract("AgentRegistry", registry_at)
    registry.transact("setMarket", market_at, sender=deployer)
    deployment = Deployment(
        chain=chain,
        registry=registry,
        market=chain.contract("TaskMarket", market_at),
        output_log=chain.contract("OutputLog", log_at),
        deployed_at=start,
    )
    log.info("deployed contracts on %s: %s", chain.endpoint, deployment.addresses)
    return deployment


def attach_contracts(chain: Chain, addresses: Mapping[str, str]) -> Deployment:
    """Bind contracts already deployed at known addresses.

    Args:
        chain: The chain they live on.
        addresses: An address for each of ``AgentRegistry``, ``TaskMarket`` and ``OutputLog``.

    Raises:
        ConfigError: An address is missing.
        ContractNotDeployed: There is no code at an address.
    """
    missing = [name for name in CONTRACT_NAMES if not addresses.get(name)]
    if missing:
        raise ConfigError(
            f"chain.contracts lacks an address for {', '.join(missing)}; give all of "
            f"{', '.join(CONTRACT_NAMES)} or none to deploy fresh ones"
        )
    return Deployment(
        chain=chain,
        registry=chain.contract("AgentRegistry", addresses["AgentRegistry"]),
        market=chain.contract("TaskMarket", addresses["TaskMarket"]),
        output_log=chain.contract("OutputLog", addresses["OutputLog"]),
    )


def open_deployment(chain: Chain, settings: ChainSettings) -> Deployment:
    """Attach to ``settings.contracts`` if given, otherwise deploy fresh contracts."""
    if settings.contracts:
        return attach_contracts(chain, settings.contracts)
    return deploy_contracts(chain)
