"""Typed client for the ``AgentRegistry`` contract."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chefsplan_agents.chain import (
    BoundContract,
    Chain,
    Event,
    Receipt,
    to_address,
    to_bytes32,
)
from chefsplan_agents.errors import RegistryError

__all__ = [
    "OUTCOME_AUDIT_FAILED",
    "OUTCOME_AUDIT_PASSED",
    "OUTCOME_LOST",
    "OUTCOME_NONE",
    "OUTCOME_SLASHED",
    "OUTCOME_WON",
    "ProviderRecord",
    "RegistryClient",
    "Reputation",
]

# Outcome codes of ``recordOutcomes`` (the market reports one per provider and task).
OUTCOME_NONE = 0
OUTCOME_WON = 1
OUTCOME_LOST = 2
OUTCOME_SLASHED = 3
#: Won a task whose result a challenge panel kept (a passed audit).
OUTCOME_AUDIT_PASSED = 4
#: In a majority a challenge panel overturned: lost, bond slashed, a failed audit.
OUTCOME_AUDIT_FAILED = 5


@dataclass(frozen=True)
class Reputation:
    """A provider's counters as the registry keeps them.

    Attributes:
        won: Tasks where the provider was in the accepted majority.
        lost: Tasks where it was outvoted (its bond slashed).
        slashed: Bonds slashed for any reason (lost, no-show, reopened).
        audits_passed: Canary tasks answered correctly.
        audits_failed: Canary tasks answered wrongly.
    """

    won: int = 0
    lost: int = 0
    slashed: int = 0
    audits_passed: int = 0
    audits_failed: int = 0

    @property
    def tasks(self) -> int:
        """Settled tasks the provider took part in (won or lost)."""
        return self.won + self.lost

    @property
    def success_rate(self) -> float:
        """A Laplace-smoothed success rate in ``(0, 1)``: 0.5 for a newcomer.

        A point estimate; to rank providers use :func:`~chefsplan_agents.registry.reputation_score`,
        which also weighs how much evidence stands behind the rate.

        Wins and passed audits count for, losses, slashes and failed audits against.
        """
        good = self.won + self.audits_passed
        bad = self.slashed + self.audits_failed
        return (good + 1) / (good + bad + 2)


@dataclass(frozen=True)
class ProviderRecord:
    """One registered provider node.

    Attributes:
        address: The provider's EVM address.
        did: Its DID.
        offer_cid: CID of its signed offer credential.
        offer_hash: Hash of the offer bytes (32 bytes).
        stake: Wei staked.
        active: Whether it may claim tasks (registered, not unstaking).
        unstake_available_at: Unix time the stake unlocks (0 if no unstake was requested).
        reputation: Its counters.
    """

    address: str
    did: str
    offer_cid: str
    offer_hash: bytes
    stake: int
    active: bool
    unstake_available_at: int
    reputation: Reputation


def _record(address: str, raw: Mapping[str, Any]) -> ProviderRecord:
    return ProviderRecord(
        address=address,
        did=str(raw["did"]),
        offer_cid=str(raw["offerCid"]),
        offer_hash=bytes(raw["offerHash"]),
        stake=int(raw["stake"]),
        active=bool(raw["active"]),
        unstake_available_at=int(raw["unstakeAvailableAt"]),
        reputation=Reputation(
            won=int(raw["won"]),
            lost=int(raw["lost"]),
            slashed=int(raw["slashed"]),
            audits_passed=int(raw["auditsPassed"]),
            audits_failed=int(raw["auditsFailed"]),
        ),
    )


class RegistryClient:
    """Register provider nodes, manage their stake and offers, and read the registry.

    Reverts surface as the contract's custom errors (``chefsplan_agents.chain.errors``):
    ``StakeTooLow``, ``AlreadyRegistered``, ``NotRegistered``, ``CooldownActive``, ….

    A registration's DID is only what the provider claims: any address may name any DID. To
    find who a DID really is, use :meth:`RegistryIndex.query(did=...)
    <chefsplan_agents.registry.RegistryIndex.query>`, which keeps only registrations whose
    offer the DID signed for that address, chain and registry.

    Args:
        contract: The deployed ``AgentRegistry`` (``Deployment.registry``).
    """

    def __init__(self, contract: BoundContract) -> None:
        if contract.name != "AgentRegistry":
            raise RegistryError(f"RegistryClient needs an AgentRegistry, not {contract.name}")
        self.contract = contract

    @classmethod
    def at(cls, chain: Chain, address: str) -> RegistryClient:
        """Bind the registry deployed at ``address``."""
        return cls(chain.contract("AgentRegistry", address))

    @property
    def chain(self) -> Chain:
        """The chain the registry lives on."""
        return self.contract.chain

    @property
    def address(self) -> str:
        """The registry contract's address."""
        return self.contract.address

    # ------------------------------------------------------------------ provider actions

    def register(
        self,
        did: str,
        offer_cid: str,
        offer_hash: bytes | str,
        *,
        stake: int,
        sender: str | None = None,
    ) -> Receipt:
        """Register ``sender`` as a provider.

        Args:
            did: The provider's DID (its offer, signed by the DID, must name ``sender``, the
                chain and this registry for readers to accept the registration).
            offer_cid: CID of its signed offer on IPFS.
            offer_hash: Hash of the offer bytes.
            stake: Wei to stake (at least :attr:`min_stake`).
            sender: The provider's account.
        """
        return self.contract.transact(
            "register",
            did,
            offer_cid,
            to_bytes32(offer_hash, "offer_hash"),
            sender=sender,
            value=stake,
        )

    def update_offer(
        self, offer_cid: str, offer_hash: bytes | str, *, sender: str | None = None
    ) -> Receipt:
        """Point the sender's registration at a new signed offer."""
        return self.contract.transact(
            "updateOffer", offer_cid, to_bytes32(offer_hash, "offer_hash"), sender=sender
        )

    def add_stake(self, amount: int, *, sender: str | None = None) -> Receipt:
        """Add ``amount`` wei to the sender's stake."""
        return self.contract.transact("addStake", sender=sender, value=amount)

    def request_unstake(self, *, sender: str | None = None) -> Receipt:
        """Leave the active set; the stake unlocks after the cooldown."""
        return self.contract.transact("requestUnstake", sender=sender)

    def withdraw_stake(self, *, sender: str | None = None) -> Receipt:
        """Pay the sender's whole stake back (after the cooldown) and end its registration: the
        DID and offer are cleared, the reputation counters stay, and it may register again."""
        return self.contract.transact("withdrawStake", sender=sender)

    # ------------------------------------------------------------------ roles

    def set_market(self, market: str, *, sender: str | None = None) -> Receipt:
        """Bind the market allowed to record outcomes (owner only, once)."""
        return self.contract.transact("setMarket", to_address(market, "market"), sender=sender)

    def record_outcomes(self, outcomes: Mapping[str, int], *, sender: str | None = None) -> Receipt:
        """Record task outcomes (``OUTCOME_*`` by provider); only the market may."""
        providers = [to_address(p, "provider") for p in outcomes]
        return self.contract.transact(
            "recordOutcomes", providers, [int(v) for v in outcomes.values()], sender=sender
        )

    def slash_stake(self, provider: str, amount: int, *, sender: str | None = None) -> Receipt:
        """Take up to ``amount`` of a provider's stake; only the market may (``NotMarket``).

        The market does this when a challenge against the provider is upheld, or when a
        panelist does not reveal its vote.
        """
        return self.contract.transact(
            "slashStake", to_address(provider, "provider"), int(amount), sender=sender
        )

    # ------------------------------------------------------------------ views

    def stake_of(self, address: str) -> int:
        """Wei staked by ``address`` (zero if not registered)."""
        return int(self.contract.call("stakeOf", to_address(address, "provider")))

    def get_provider(self, address: str) -> ProviderRecord | None:
        """The provider registered at ``address``, or ``None``."""
        checksum = to_address(address, "provider")
        raw = self.contract.call("getProvider", checksum)
        if not raw["registered"]:
            return None
        return _record(checksum, raw)

    def reputation(self, address: str) -> Reputation:
        """The counters of ``address`` (all zero if not registered)."""
        record = self.get_provider(address)
        return record.reputation if record else Reputation()

    def is_active(self, address: str) -> bool:
        """Whether ``address`` may claim tasks."""
        return bool(self.contract.call("isActive", to_address(address, "provider")))

    def count(self) -> int:
        """Number of addresses ever registered (each once)."""
        return int(self.contract.call("count"))

    def providers(self, *, active_only: bool = False) -> list[ProviderRecord]:
        """Every registered provider in first-registration order (or only the active ones)."""
        out = []
        for index in range(self.count()):
            address = str(self.contract.call("providerAt", index))
            record = self.get_provider(address)
            if record is not None and (record.active or not active_only):
                out.append(record)
        return out

    def events(self, name: str, *, from_block: int = 0, provider: str | None = None) -> list[Event]:
        """Past registry events (``ProviderRegistered``, ``ReputationUpdated``, …)."""
        filters = {"provider": to_address(provider, "provider")} if provider else None
        return self.contract.get_logs(name, from_block=from_block, filters=filters)

    @property
    def min_stake(self) -> int:
        """Wei a provider must stake to register."""
        return int(self.contract.call("minStake"))

    @property
    def unstake_cooldown(self) -> int:
        """Seconds between requesting an unstake and withdrawing."""
        return int(self.contract.call("unstakeCooldown"))

    @property
    def owner(self) -> str:
        """The deployer, who binds the market."""
        return str(self.contract.call("owner"))

    @property
    def market(self) -> str | None:
        """The bound market, or ``None``."""
        address = str(self.contract.call("market"))
        return None if int(address, 16) == 0 else address
