"""What a provider node accepts: the checks it runs on a task *before* claiming it.

A refused task costs the node nothing: it never claimed, so it posted no bond and cannot be
slashed. Every refusal carries a one-line reason that the node logs and records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chefsplan_agents.bundles import DEFAULT_MAX_BUNDLE_BYTES, TaskBundle
from chefsplan_agents.errors import ConfigError, TaskRefused
from chefsplan_agents.market import TaskParams

__all__ = ["NodePolicy"]


@dataclass(frozen=True)
class NodePolicy:
    """The terms a provider node works on.

    Attributes:
        min_bounty_wei: Refuse tasks paying less than this per replica.
        price_per_1k_tokens_wei: Refuse tasks whose bounty is below this price for the
            ``max_tokens`` they ask for (also published in the node's offer).
        max_tokens: Refuse tasks asking for more new tokens than this.
        max_bond_wei: Refuse tasks demanding a larger bond than this (``None``: any bond).
        max_bundle_bytes: Refuse bundles larger than this, before parsing them.
        accepted_models: Model sha256 digests the node runs; empty means only its own model.
            A task must name one of them (or, naming no hash, the node's model name).
    """

    min_bounty_wei: int = 1
    price_per_1k_tokens_wei: int = 0
    max_tokens: int = 512
    max_bond_wei: int | None = None
    max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES
    accepted_models: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        for name in ("min_bounty_wei", "price_per_1k_tokens_wei"):
            if getattr(self, name) < 0:
                raise ConfigError(f"node policy {name} must not be negative")
        if self.max_tokens < 1:
            raise ConfigError(f"node policy max_tokens must be at least 1 (got {self.max_tokens})")
        if self.max_bundle_bytes < 1:
            raise ConfigError("node policy max_bundle_bytes must be positive")

    def models(self, own_sha256: str) -> frozenset[str]:
        """The model digests accepted by a node that runs ``own_sha256``."""
        return self.accepted_models or frozenset({own_sha256})

    def check_terms(self, params: TaskParams) -> None:
        """Refuse a task on its on-chain terms alone (no bundle fetched yet).

        Raises:
            TaskRefused: The bounty is below ``min_bounty_wei`` or the bond above
                ``max_bond_wei``.
        """
        if params.bounty_per_replica < self.min_bounty_wei:
            raise TaskRefused(
                f"bounty {params.bounty_per_replica} wei per replica is below this node's "
                f"minimum of {self.min_bounty_wei} wei"
            )
        if self.max_bond_wei is not None and params.bond > self.max_bond_wei:
            raise TaskRefused(
                f"bond {params.bond} wei is above this node's maximum of {self.max_bond_wei} wei"
            )

    def check_bundle(
        self, bundle: TaskBundle, params: TaskParams, *, model_sha256: str, model_name: str
    ) -> None:
        """Refuse a verified bundle this node will not run.

        Raises:
            TaskRefused: Unknown model, too many tokens, or a bounty below the node's price.
        """
        self.check_request(bundle, model_sha256=model_sha256, model_name=model_name)
        asked = bundle.params.max_tokens
        price = self.price_per_1k_tokens_wei * asked // 1000
        if params.bounty_per_replica < price:
            raise TaskRefused(
                f"bounty {params.bounty_per_replica} wei is below this node's price of {price} "
                f"wei for {asked} tokens"
            )

    def check_request(self, bundle: TaskBundle, *, model_sha256: str, model_name: str) -> None:
        """Refuse a bundle for another model or asking for too many tokens (no payment terms:
        the check for jobs sent straight to the node's HTTP API).

        Raises:
            TaskRefused: Unknown model or too many tokens.
        """
        wanted = bundle.model
        if wanted.sha256 is not None:
            if wanted.sha256 not in self.models(model_sha256):
                raise TaskRefused(
                    f"task wants model sha256 {wanted.sha256}; this node runs {model_sha256}"
                )
        elif wanted.name != model_name:
            raise TaskRefused(f"task wants model {wanted.name!r}; this node runs {model_name!r}")
        asked = bundle.params.max_tokens
        if asked > self.max_tokens:
            raise TaskRefused(
                f"task asks for max_tokens={asked}, over this node's limit of {self.max_tokens}"
            )
