"""Which checks a delegated task gets: a policy over trust, reputation, stake and bounty.

Checking every result costs a re-score per task (about 0.7 of a generation on SmolLM2, see
docs/verification.md); checking a fraction ``p`` of them costs ``p·c`` and lets a provider
that cheats on ``n`` tasks escape with probability ``(1 − p·q)^n`` (``q``: the chance one check
catches the cheat, 1 for every shipped adversary except near-tie swaps). The policy spends the
checks where they deter most:

* a **new** provider (fewer than ``established_wins`` tasks won, or a slash on record) is
  re-scored in full on every task;
* an **established** provider is checked with probability ``p`` that falls with its reputation
  and stake and rises with the bounty (what cheating on this task could gain), never below
  ``min_probability``;
* ``trust="high"`` adds redundancy (replicas that must agree; disagreements are arbitrated by
  re-score, :func:`~chefsplan_agents.verify.arbitrate`), ``trust="low"`` checks nothing.

Whether an established provider's result is checked is drawn *after* it is committed, from
the SHA-256 of the policy's secret salt and the result's canonical bytes: the provider cannot
know at commit time whether this result will be looked at, and cannot grind variants of its
result to find one that escapes, because it does not know the salt.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Literal

from chefsplan_agents.bundles import ResultBundle, encode_bundle
from chefsplan_agents.errors import VerificationError
from chefsplan_agents.registry import IndexedProvider
from chefsplan_agents.verify._rescore import RescoreMode

__all__ = ["Checks", "ProviderStats", "Trust", "VerificationPolicy"]

Trust = Literal["low", "normal", "high"]

_WEI = 10**18


@dataclass(frozen=True)
class ProviderStats:
    """What the policy knows of a provider (from the registry index).

    Attributes:
        reputation: The index's reputation score in ``(0, 1)`` (a newcomer scores 0.09).
        stake_wei: Its stake, which a caught cheat can lose.
        tasks_won: Tasks it won.
        slashed: Times it was slashed.
    """

    reputation: float
    stake_wei: int
    tasks_won: int = 0
    slashed: int = 0

    @classmethod
    def of(cls, provider: IndexedProvider) -> ProviderStats:
        """The stats of a provider listed by the registry index."""
        return cls(
            reputation=provider.score,
            stake_wei=provider.stake,
            tasks_won=provider.reputation.won,
            slashed=provider.reputation.slashed,
        )


@dataclass(frozen=True)
class Checks:
    """The checks planned for one task.

    Attributes:
        mode: Re-score mode when a re-score runs (``None``: no re-score at all).
        probability: Chance the re-score runs (1.0: always; drawn per result by
            :meth:`VerificationPolicy.selects`).
        replicas: Providers that run the task.
        quorum: How many of them must agree on the output hash.
        reason: One line saying why (for receipts and logs).
    """

    mode: RescoreMode | None
    probability: float
    replicas: int = 1
    quorum: int = 1
    reason: str = ""

    @property
    def redundant(self) -> bool:
        """More than one replica runs the task."""
        return self.replicas > 1

    @property
    def always(self) -> bool:
        """Every result is re-scored."""
        return self.mode is not None and self.probability >= 1.0


@dataclass(frozen=True)
class VerificationPolicy:
    """Plans the checks of a task; see the module docs for the rules.

    Attributes:
        established_wins: Tasks won before a provider counts as established.
        max_probability: Spot-check probability of an established provider of reputation 0.
        min_probability: The floor: a cheater on ``n`` tasks escapes with at most
            ``(1 − min_probability)^n`` (0.7^20 ≈ 0.08 % for 20 cheated tasks: the goal
            "caught within 20 cheating tasks" at 99.9 % per cheater; 0.2 left 1.2 %).
        spot_mode: Re-score mode of a sampled check (``"full"``: every token; ``"spot"``: a
            window, cheaper but blind to changes after it).
        replicas: Replicas of a redundant (``trust="high"``) task.
        quorum: Of which this many must agree.
        salt: The requester's secret for the draw (random unless given, e.g. in tests).
    """

    established_wins: int = 5
    max_probability: float = 0.6
    min_probability: float = 0.3
    spot_mode: RescoreMode = "full"
    replicas: int = 3
    quorum: int = 2
    salt: bytes = field(default_factory=lambda: secrets.token_bytes(16), repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.min_probability <= self.max_probability <= 1.0:
            raise VerificationError(
                "the policy needs 0 < min_probability <= max_probability <= 1 "
                f"(got {self.min_probability}, {self.max_probability})"
            )
        if not 1 <= self.quorum <= self.replicas:
            raise VerificationError(
                f"the policy needs 1 <= quorum <= replicas (got {self.quorum}, {self.replicas})"
            )

    def established(self, stats: ProviderStats) -> bool:
        """Whether a provider has enough clean history to be spot-checked, not always."""
        return stats.tasks_won >= self.established_wins and stats.slashed == 0

    def probability(self, stats: ProviderStats, bounty_wei: int) -> float:
        """Spot-check probability of an established provider.

        The larger of a reputation term, ``max_probability · (1 − reputation)``, and a deterrence
        term, ``bounty / (bounty + stake)``: the probability at which the stake a caught cheat
        loses outweighs the bounty an escaped one gains (``p·stake ≥ (1 − p)·bounty``), clamped
        to ``[min_probability, 1]``.
        """
        by_reputation = self.max_probability * (1.0 - min(max(stats.reputation, 0.0), 1.0))
        bounty = max(bounty_wei, 0)
        deterrence = bounty / (bounty + stats.stake_wei) if bounty + stats.stake_wei > 0 else 1.0
        return min(1.0, max(self.min_probability, by_reputation, deterrence))

    def plan(self, provider_stats: ProviderStats, trust: Trust, bounty: int) -> Checks:
        """The checks for a task at ``trust`` given to this provider for ``bounty`` wei.

        Args:
            provider_stats: The (best-ranked) provider's registry stats.
            trust: What the requester asked for: ``low``, ``normal`` or ``high``.
            bounty: The bounty per replica, in wei.

        Returns:
            The checks; draw whether a sampled re-score runs with :meth:`selects`.

        Raises:
            VerificationError: An unknown trust level.
        """
        if trust == "low":
            return Checks(mode=None, probability=0.0, reason="trust=low: unchecked")
        if trust not in ("normal", "high"):
            raise VerificationError(f"trust must be low, normal or high (got {trust!r})")
        redundancy = (self.replicas, self.quorum) if trust == "high" else (1, 1)
        if trust == "high" or not self.established(provider_stats):
            why = "trust=high" if trust == "high" else "new or slashed provider"
            return Checks("full", 1.0, *redundancy, reason=f"{why}: re-scored in full")
        p = self.probability(provider_stats, bounty)
        return Checks(
            self.spot_mode,
            p,
            *redundancy,
            reason=f"established provider (reputation {provider_stats.reputation:.2f}): "
            f"re-scored with probability {p:.2f}",
        )

    def draw(self, result: ResultBundle) -> float:
        """The result's uniform draw in ``[0, 1)``, fixed once the result is committed."""
        digest = hashlib.sha256(self.salt + encode_bundle(result)).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def selects(self, checks: Checks, result: ResultBundle) -> RescoreMode | None:
        """The re-score mode to run on ``result`` under ``checks``, or ``None`` to skip it."""
        if checks.mode is None:
            return None
        if checks.always or self.draw(result) < checks.probability:
            return checks.mode
        return None
