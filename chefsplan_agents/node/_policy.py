"""What a provider node accepts: the checks it runs on a task *before* claiming it.

A refused task costs the node nothing: it never claimed, so it posted no bond and cannot be
slashed. Every refusal carries a one-line reason that the node logs and records.

A claim puts the node's bond at stake until the task settles, so the policy refuses terms that
could cost it: a bond above the operator's caps, deadlines or a challenge window that would
lock the bond for longer than the operator allows, and windows too short for this node to run
the task. The last check needs the node's own speed (:class:`GenerationSpeed`, measured by the
node on its own model): a requester who posts a task with a one-second commit window and a
large bond would otherwise take the bond of every node that claims it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chefsplan_agents.bundles import DEFAULT_MAX_BUNDLE_BYTES, TaskBundle
from chefsplan_agents.errors import ConfigError, TaskRefused
from chefsplan_agents.llm import Generation
from chefsplan_agents.market import TaskParams

__all__ = [
    "DEFAULT_BOND_FLOOR_WEI",
    "DEFAULT_CHAIN_MARGIN_S",
    "DEFAULT_MAX_BOND_PER_BOUNTY",
    "DEFAULT_MAX_BOND_WEI",
    "DEFAULT_MAX_CHALLENGE_WINDOW_S",
    "DEFAULT_MAX_DEADLINE_HORIZON_S",
    "DEFAULT_TIME_SAFETY_FACTOR",
    "GenerationSpeed",
    "NodePolicy",
]

DEFAULT_MAX_BOND_WEI = 10**17
"""0.1 ether: the most a node puts at stake on one task unless its operator says otherwise."""

DEFAULT_MAX_BOND_PER_BOUNTY = 10
"""Above :data:`DEFAULT_BOND_FLOOR_WEI`, a bond may be at most this many times the bounty: a
node never risks more than ten tasks' earnings on one task, however the requester prices it."""

DEFAULT_BOND_FLOOR_WEI = 10**15
"""Bonds up to 0.001 ether are taken whatever the bounty (a free network's tasks pay 1 wei and
ask this much, :data:`chefsplan_agents.network.DEFAULT_BOND_WEI`)."""

DEFAULT_TIME_SAFETY_FACTOR = 2.0
"""The node's estimated run time is doubled before it is compared with a task's windows: other
jobs on the same CPU (HTTP jobs, a second task) and a cold cache slow a run down."""

DEFAULT_CHAIN_MARGIN_S = 30
"""Seconds added for storing the result and getting a transaction mined (two to three blocks
on Ethereum mainnet; far more than an L2 or a devnet needs)."""

DEFAULT_MAX_DEADLINE_HORIZON_S = 6 * 3600
"""Claim and reveal deadlines at most six hours ahead: a bond is locked until the reveal
deadline at worst, and a market task is meant to settle in minutes."""

DEFAULT_MAX_CHALLENGE_WINDOW_S = 24 * 3600
"""A day: long enough for watchers to challenge, short enough to get the bond back."""

# A generation this short says more about start-up overhead than about speed.
_MIN_OBSERVED_TOKENS = 8
# Weight of a new observation in the running estimate of seconds per token.
_OBSERVATION_WEIGHT = 0.25
# Never divide by zero: a model that stops at once leaves no rate to measure.
_MIN_RATE = 1e-3


def _rate(tokens: int, per_s: float, total_ms: float) -> float:
    if per_s > 0:
        return per_s
    if total_ms > 0:
        return max(tokens, 1) / (total_ms / 1000)
    return 0.0


@dataclass(frozen=True)
class GenerationSpeed:
    """How fast this node runs its model, measured on the node itself.

    A node measures it with a short real generation when it starts (the same run whose speeds
    its offer publishes) and keeps a running estimate from every task it completes afterwards,
    so a node slowed down by load estimates slower.

    Attributes:
        generation_tokens_per_s: New tokens per second.
        prefill_tokens_per_s: Prompt tokens per second. A backend that reports no prefill
            time (a fake model) gets its generation rate, which overestimates the time.
    """

    generation_tokens_per_s: float
    prefill_tokens_per_s: float

    def __post_init__(self) -> None:
        if not (self.generation_tokens_per_s > 0 and self.prefill_tokens_per_s > 0):
            raise ConfigError("generation speeds must be positive tokens per second")

    @classmethod
    def from_generation(cls, generation: Generation) -> GenerationSpeed:
        """The speeds one generation ran at."""
        t = generation.timings
        total_ms = t.prompt_ms + t.generation_ms
        generated = max(
            _rate(generation.completion_tokens, t.generation_tokens_per_s, total_ms), _MIN_RATE
        )
        prefill = t.prompt_tokens_per_s if t.prompt_tokens_per_s > 0 else generated
        return cls(generated, max(prefill, _MIN_RATE))

    def seconds(self, prompt_tokens: int, max_tokens: int) -> float:
        """Estimated seconds to prefill ``prompt_tokens`` and generate ``max_tokens``."""
        return prompt_tokens / self.prefill_tokens_per_s + max_tokens / self.generation_tokens_per_s

    def observe(self, generation: Generation) -> GenerationSpeed:
        """The running estimate after one more completed generation.

        Averages seconds per token (not tokens per second), so one slow run weighs as much as
        it cost; generations too short to time are ignored.
        """
        if generation.completion_tokens < _MIN_OBSERVED_TOKENS:
            return self
        seen = GenerationSpeed.from_generation(generation)
        w = _OBSERVATION_WEIGHT

        def blend(old: float, new: float) -> float:
            return 1 / ((1 - w) / old + w / new)

        prefill = self.prefill_tokens_per_s
        if generation.timings.prompt_tokens_per_s > 0 and generation.prompt_tokens >= 8:
            prefill = blend(prefill, seen.prefill_tokens_per_s)
        return GenerationSpeed(
            blend(self.generation_tokens_per_s, seen.generation_tokens_per_s), prefill
        )


@dataclass(frozen=True)
class NodePolicy:
    """The terms a provider node works on.

    Attributes:
        min_bounty_wei: Refuse tasks paying less than this per replica.
        price_per_1k_tokens_wei: Refuse tasks whose bounty is below this price for the
            ``max_tokens`` they ask for (also published in the node's offer).
        max_tokens: Refuse tasks asking for more new tokens than this.
        max_bond_wei: Refuse tasks demanding a larger bond than this (``None``: no absolute
            cap; the default is :data:`DEFAULT_MAX_BOND_WEI`).
        max_bond_per_bounty: Refuse tasks whose bond is above ``bond_floor_wei`` and more than
            this many times the bounty per replica (``None``: no such cap).
        bond_floor_wei: Bonds up to this are not held against the bounty.
        max_bundle_bytes: Refuse bundles larger than this, before parsing them.
        accepted_models: Model sha256 digests the node runs; empty means only its own model.
            A task must name one of them (or, naming no hash, the node's model name).
        time_safety_factor: The node's estimated run time (its measured speed, the prompt's
            length and ``max_tokens``) is multiplied by this before it is compared with a
            task's windows.
        chain_margin_s: Seconds added to every estimate for storing the result and getting
            transactions mined; also the least time left to reveal after the commit phase.
        max_deadline_horizon_s: Refuse tasks whose claim or reveal deadline lies further
            ahead than this (a claimed bond stays locked until then at worst).
        max_challenge_window_s: Refuse tasks with a longer challenge window.
    """

    min_bounty_wei: int = 1
    price_per_1k_tokens_wei: int = 0
    max_tokens: int = 512
    max_bond_wei: int | None = DEFAULT_MAX_BOND_WEI
    max_bond_per_bounty: int | None = DEFAULT_MAX_BOND_PER_BOUNTY
    bond_floor_wei: int = DEFAULT_BOND_FLOOR_WEI
    max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES
    accepted_models: frozenset[str] = field(default_factory=frozenset)
    time_safety_factor: float = DEFAULT_TIME_SAFETY_FACTOR
    chain_margin_s: int = DEFAULT_CHAIN_MARGIN_S
    max_deadline_horizon_s: int = DEFAULT_MAX_DEADLINE_HORIZON_S
    max_challenge_window_s: int = DEFAULT_MAX_CHALLENGE_WINDOW_S

    def __post_init__(self) -> None:
        for name in (
            "min_bounty_wei",
            "price_per_1k_tokens_wei",
            "max_bond_wei",
            "max_bond_per_bounty",
            "bond_floor_wei",
            "chain_margin_s",
            "max_challenge_window_s",
        ):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"node policy {name} must not be negative")
        if self.max_tokens < 1:
            raise ConfigError(f"node policy max_tokens must be at least 1 (got {self.max_tokens})")
        if self.max_bundle_bytes < 1:
            raise ConfigError("node policy max_bundle_bytes must be positive")
        if not self.time_safety_factor >= 1:
            raise ConfigError(
                f"node policy time_safety_factor must be at least 1 (got {self.time_safety_factor})"
            )
        if self.max_deadline_horizon_s < 1:
            raise ConfigError("node policy max_deadline_horizon_s must be positive")

    def models(self, own_sha256: str) -> frozenset[str]:
        """The model digests accepted by a node that runs ``own_sha256``."""
        return self.accepted_models or frozenset({own_sha256})

    def check_terms(self, params: TaskParams, *, now: int | None = None) -> None:
        """Refuse a task on its on-chain terms alone (no bundle fetched yet).

        Args:
            params: The task's terms.
            now: The chain's time; without it the deadline horizons are not checked.

        Raises:
            TaskRefused: The bounty is below ``min_bounty_wei``, the bond above a cap, a
                deadline too far ahead or the challenge window too long.
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
        ratio = self.max_bond_per_bounty
        if (
            ratio is not None
            and params.bond > self.bond_floor_wei
            and params.bond > ratio * params.bounty_per_replica
        ):
            raise TaskRefused(
                f"bond {params.bond} wei is over {ratio} times the bounty of "
                f"{params.bounty_per_replica} wei this node would earn"
            )
        if params.challenge_window > self.max_challenge_window_s:
            raise TaskRefused(
                f"challenge window of {params.challenge_window} s is over this node's limit of "
                f"{self.max_challenge_window_s} s"
            )
        if now is None:
            return
        for what, deadline in (
            ("claim", params.claim_deadline),
            ("reveal", params.reveal_deadline),
        ):
            if deadline - now > self.max_deadline_horizon_s:
                raise TaskRefused(
                    f"{what} deadline is {deadline - now} s ahead, over this node's horizon of "
                    f"{self.max_deadline_horizon_s} s"
                )

    def run_seconds(self, speed: GenerationSpeed, prompt_tokens: int, max_tokens: int) -> float:
        """Seconds this node allows itself to run a task and see its result mined."""
        estimate = speed.seconds(prompt_tokens, max_tokens)
        return self.time_safety_factor * estimate + self.chain_margin_s

    def check_windows(self, params: TaskParams, *, needed_s: float) -> None:
        """Refuse a task whose windows this node cannot meet after claiming it.

        Args:
            params: The task's terms.
            needed_s: :meth:`run_seconds` for the task's prompt and ``max_tokens``.

        Raises:
            TaskRefused: The commit timeout (counted from the claim) is shorter than
                ``needed_s``, or, with several replicas, the reveal window after the commit
                phase is shorter than ``chain_margin_s``.
        """
        if params.commit_timeout < needed_s:
            raise TaskRefused(
                f"commit window of {params.commit_timeout} s is shorter than the {needed_s:.0f} s "
                "this node needs to run the task and commit (its bond would be slashed)"
            )
        if params.replicas > 1:
            # Reveals may only open at the end of the commit phase if a replica never commits.
            left = params.reveal_deadline - params.commit_phase_end
            if left < self.chain_margin_s:
                raise TaskRefused(
                    f"reveal window of {left} s after the commit phase is shorter than this "
                    f"node's margin of {self.chain_margin_s} s"
                )

    def check_run_first(self, params: TaskParams, *, needed_s: float, now: int) -> None:
        """Refuse a task the node cannot run before its claim deadline (a task it runs before
        claiming: assigned to it, or one whose commit window is too short).

        Raises:
            TaskRefused: The claim deadline is less than ``needed_s`` ahead.
        """
        left = params.claim_deadline - now
        if left < needed_s:
            raise TaskRefused(
                f"claim window of {left} s left is shorter than the {needed_s:.0f} s this node "
                "needs to run the task first"
            )

    def check_run_then_claim(self, params: TaskParams, *, needed_s: float, now: int) -> None:
        """Refuse an open task the node cannot take by running it first and committing in its
        claim (the way past a commit window too short to run the task after claiming).

        The claim carries the commitment, so the commit timeout no longer matters; the run
        must end before the claim deadline and the reveal must fit before the reveal deadline
        (with several replicas, after the commit phase at worst).

        Raises:
            TaskRefused: The claim deadline is less than ``needed_s`` ahead, or less than
                ``chain_margin_s`` is left to reveal.
        """
        self.check_run_first(params, needed_s=needed_s, now=now)
        reveal_from = now + needed_s
        if params.replicas > 1:
            reveal_from = max(reveal_from, params.commit_phase_end)
        left = params.reveal_deadline - reveal_from
        if left < self.chain_margin_s:
            raise TaskRefused(
                f"reveal window of {left:.0f} s left after running the task is shorter than "
                f"this node's margin of {self.chain_margin_s} s"
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
