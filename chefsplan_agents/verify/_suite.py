"""The adversarial suite: honest and forged results through the requester's verification path.

Each *provider* answers a stream of tasks: honest ones (the node's runner at one or two
threads: other hardware settings must never fail), and one cheater per adversary of
:mod:`chefsplan_agents.testing`. Every result goes through each *strategy*:

* ``full`` — every result re-scored in full;
* ``spot`` — every result spot-checked (``mode="spot"``);
* ``policy`` — :class:`~chefsplan_agents.verify.VerificationPolicy` at ``trust="normal"``: new
  providers re-scored in full, established ones with the policy's probability;
* ``redundancy`` — a second replica (an honest node at another thread count) runs the task; equal
  output hashes are accepted unchecked, differing ones are arbitrated by re-score
  (:func:`~chefsplan_agents.verify.arbitrate`).

Per adversary and strategy it records the detection rate, the cheating tasks until the first
catch and the verification compute ratio (verifier model time, plus the extra generation of a
redundant replica, over the generation time of the tasks); honest results that fail are false
positives. ``benchmarks/verify.py`` and ``tests/unit/verify/test_adversarial_suite.py`` run it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from chefsplan_agents.bundles import (
    GenerationParams,
    ModelRequirement,
    ResultBundle,
    TaskBundle,
    encode_bundle,
    sign_bundle,
)
from chefsplan_agents.identity import Identity
from chefsplan_agents.llm import LLMBackend
from chefsplan_agents.storage import compute_cid
from chefsplan_agents.testing import (
    Adaptive,
    ChangeToken,
    Cheat,
    ChosenSeed,
    Copycat,
    Lazy,
    Pad,
    SampledWhenGreedy,
    Tamper,
    TextSwap,
    Truncate,
    WrongModel,
    honest_result,
)
from chefsplan_agents.verify._arbitrate import arbitrate
from chefsplan_agents.verify._policy import ProviderStats, VerificationPolicy
from chefsplan_agents.verify._rescore import RescoreMode, rescore_result

__all__ = [
    "BLIND_SPOTS",
    "STRATEGIES",
    "Models",
    "StrategyStats",
    "SuiteReport",
    "run_adversarial_suite",
]

log = logging.getLogger(__name__)

Strategy = Literal["full", "spot", "policy", "redundancy"]
#: The strategies every result goes through.
STRATEGIES: tuple[Strategy, ...] = ("full", "spot", "policy", "redundancy")

_PROMPTS = (
    "Plan a vegetarian dinner for four",
    "List three soups for winter",
    "Suggest a dessert without nuts",
    "Write a shopping list for pancakes",
    "Name a quick lunch for a picnic",
    "Describe a menu for a child's party",
    "Give a gluten free breakfast idea",
    "Pair a wine with roast chicken",
)


@dataclass(frozen=True)
class Models:
    """The backends the suite runs.

    Attributes:
        greedy: The pinned model of greedy tasks; also the verifier and the one-thread node.
        greedy_other: The same model file at another thread count (the second honest node).
        sampled: The pinned model of sampled tasks (must spread its probability; verifier too).
        sampled_other: The same at another thread count.
        wrong: Another model a ``WrongModel`` cheater runs instead of the pinned one.
    """

    greedy: LLMBackend
    greedy_other: LLMBackend
    sampled: LLMBackend
    sampled_other: LLMBackend
    wrong: LLMBackend


@dataclass(frozen=True)
class _Provider:
    name: str
    cheat: Callable[[ResultBundle], Cheat] | None  # from the previous task's honest result
    sampled: bool = False  # a sampled task (temperature 1, the task's seed)
    spread: bool = False  # on the model that spreads its probability (models.sampled)
    established: bool = True
    threads_other: bool = False  # honest: run on the other-thread-count node
    adaptive: bool = False


def _providers(models: Models) -> list[_Provider]:
    wrong = models.wrong
    return [
        _Provider("honest-1-thread", None),
        _Provider("honest-2-threads", None, threads_other=True),
        _Provider("honest-new", None, established=False, threads_other=True),
        _Provider("honest-sampled", None, sampled=True, spread=True, threads_other=True),
        _Provider("lazy", lambda _: Lazy()),
        _Provider("wrong-model", lambda _: WrongModel(wrong)),
        _Provider("copycat", lambda prev: Copycat(prev), spread=True),
        _Provider("tamper", lambda _: Tamper(edit=lambda p: p + "C")),
        _Provider("text-swap", lambda _: TextSwap()),
        _Provider("truncate", lambda _: Truncate()),
        _Provider("pad", lambda _: Pad()),
        _Provider("change-token", lambda _: ChangeToken()),
        _Provider("sampled-when-greedy", lambda _: SampledWhenGreedy(), spread=True),
        _Provider("chosen-seed", lambda _: ChosenSeed(), sampled=True, spread=True),
        _Provider("adaptive-20%", lambda _: Adaptive(TextSwap(), 0.2), adaptive=True),
        _Provider("new-lazy", lambda _: Lazy(), established=False),
        # A runner-up within NEAR_TIE_NATS of the first choice: the re-score's documented blind
        # spot (the model that spreads its probability has such near ties).
        _Provider("change-token-near-tie", lambda _: ChangeToken(), spread=True),
    ]


#: Cheaters no re-score mode but ``exact`` can catch (reported, not expected to be caught).
BLIND_SPOTS = ("change-token-near-tie",)


@dataclass
class StrategyStats:
    """One provider's results under one strategy.

    Attributes:
        tasks: Tasks answered.
        cheating: Tasks it cheated on.
        detected: Cheating tasks caught.
        false_positives: Honest answers that failed.
        first_catch: Cheating tasks until the first catch (1-based; ``None``: never caught).
        verify_ms: Verifier model time.
        extra_generation_ms: Generation time of redundant replicas.
        generation_ms: Generation time of the tasks (an honest node's, as the reference).
    """

    tasks: int = 0
    cheating: int = 0
    detected: int = 0
    false_positives: int = 0
    first_catch: int | None = None
    verify_ms: float = 0.0
    extra_generation_ms: float = 0.0
    generation_ms: float = 0.0

    @property
    def detection_rate(self) -> float | None:
        """Caught share of cheating tasks (``None`` when it never cheated)."""
        return self.detected / self.cheating if self.cheating else None

    @property
    def honest_tasks(self) -> int:
        """Tasks answered honestly."""
        return self.tasks - self.cheating

    @property
    def compute_ratio(self) -> float:
        """Verification compute over generation compute."""
        return (self.verify_ms + self.extra_generation_ms) / max(self.generation_ms, 1e-9)


@dataclass
class SuiteReport:
    """Everything the suite measured.

    Attributes:
        stats: ``stats[provider][strategy]``.
        cheaters: Provider names that cheat.
        policy_probability: The policy's check probability of an established provider.
    """

    stats: dict[str, dict[str, StrategyStats]] = field(default_factory=dict)
    cheaters: tuple[str, ...] = ()
    policy_probability: float = 0.0

    @property
    def total_tasks(self) -> int:
        """Tasks answered over all providers."""
        return sum(s["full"].tasks for s in self.stats.values())

    def strategy_total(self, strategy: str) -> StrategyStats:
        """One strategy's numbers summed over every provider (the whole mix)."""
        out = StrategyStats()
        for per in self.stats.values():
            s = per[strategy]
            out.tasks += s.tasks
            out.cheating += s.cheating
            out.detected += s.detected
            out.false_positives += s.false_positives
            out.verify_ms += s.verify_ms
            out.extra_generation_ms += s.extra_generation_ms
            out.generation_ms += s.generation_ms
        return out

    def max_tasks_to_catch(self, strategy: str) -> int | None:
        """The most cheating tasks any cheater got through before its first catch (``None``:
        some cheater was never caught)."""
        firsts = [
            self.stats[c][strategy].first_catch for c in self.cheaters if c not in BLIND_SPOTS
        ]
        if any(f is None for f in firsts):
            return None
        return max(f for f in firsts if f is not None)


def _task(requester: Identity, llm: LLMBackend, i: int, sampled: bool) -> tuple[TaskBundle, str]:
    extra = {"temperature": 1.0, "seed": 1000 + i} if sampled else {}
    task = TaskBundle(
        kind="completion",
        prompt=f"{_PROMPTS[i % len(_PROMPTS)]} (request {i})",
        params=GenerationParams(max_tokens=24, **extra),
        model=ModelRequirement(sha256=llm.info.sha256),
        requester_did=requester.did,
    )
    task = sign_bundle(task, requester)
    return task, compute_cid(encode_bundle(task))


def _gen_ms(result: ResultBundle) -> float:
    return result.timings.prompt_ms + result.timings.generation_ms


def _judge(
    s: StrategyStats,
    strategy: Strategy,
    drawn: RescoreMode | None,
    model: LLMBackend,
    task: TaskBundle,
    cid: str,
    mine: ResultBundle,
    replica: ResultBundle | None,
    *,
    reference: ResultBundle,
    cheating: bool,
) -> None:
    """Put one result through one strategy and count what happened."""
    s.tasks += 1
    s.cheating += cheating
    s.generation_ms += _gen_ms(reference)
    failed = False
    if strategy == "redundancy" and replica is not None:
        # The replica costs one more generation; its wall time on a node sharing cores with
        # others is no measure of compute, the reference's is.
        s.extra_generation_ms += _gen_ms(reference)
        if replica.output_hash != mine.output_hash:
            decision = arbitrate(model, task, {"mine": mine, "other": replica})
            s.verify_ms += decision.rescore_ms
            failed = "mine" in decision.wrong
    else:
        mode: RescoreMode | None = drawn
        if strategy != "policy":
            mode = "spot" if strategy == "spot" else "full"
        if mode is not None:
            verdict = rescore_result(model, task, mine, task_cid=cid, mode=mode)
            s.verify_ms += verdict.rescore_ms
            failed = not verdict.passed
    if cheating and failed:
        s.detected += 1
        if s.first_catch is None:
            s.first_catch = s.cheating
    elif failed:
        s.false_positives += 1
        log.warning("an honest result failed under %s", strategy)


def run_adversarial_suite(
    models: Models,
    *,
    cheating_tasks: int = 20,
    honest_tasks: int = 20,
    policy: VerificationPolicy | None = None,
    strategies: Sequence[Strategy] = STRATEGIES,
    node_results: Sequence[tuple[TaskBundle, str, ResultBundle]] = (),
) -> SuiteReport:
    """Run every provider's task stream through every strategy.

    Args:
        models: The backends.
        cheating_tasks: Cheating tasks per cheater (an adaptive one answers until it cheated
            this often).
        honest_tasks: Tasks per honest provider.
        policy: The verification policy (default: a seeded one, so runs repeat).
        strategies: The strategies to run.
        node_results: Honest ``(task, task_cid, result)`` triples from real provider nodes
            (a devnet's) on tasks pinned to ``models.greedy``'s model: they go through every
            strategy as provider ``node`` and must never fail.

    Returns:
        The report.
    """
    policy = policy or VerificationPolicy(salt=b"adversarial-suite")
    requester = Identity.generate()
    established = ProviderStats(reputation=0.65, stake_wei=10**18, tasks_won=10)
    newcomer = ProviderStats(reputation=0.09, stake_wei=10**18)
    bounty = 10**15
    report = SuiteReport(policy_probability=policy.probability(established, bounty))
    providers = _providers(models)
    for backend in (models.greedy, models.greedy_other, models.sampled, models.sampled_other):
        # A backend's first call pays one-off set-up; it would skew the generation reference.
        warm, warm_cid = _task(requester, backend, 0, False)
        honest_result(warm, warm_cid, backend, requester)
    report.cheaters = tuple(p.name for p in providers if p.cheat is not None)
    task_no = 0
    if node_results:
        node_stats: dict[str, StrategyStats] = {s: StrategyStats() for s in strategies}
        report.stats["node"] = node_stats
        node_checks = policy.plan(established, "normal", bounty)
        for task, cid, result in node_results:
            second = honest_result(task, cid, models.greedy_other, requester)
            for strategy in strategies:
                _judge(
                    node_stats[strategy],
                    strategy,
                    policy.selects(node_checks, result),
                    models.greedy,
                    task,
                    cid,
                    result,
                    second,
                    reference=result,
                    cheating=False,
                )
    for provider in providers:
        node = Identity.generate()
        witness = Identity.generate()
        per: dict[str, StrategyStats] = {s: StrategyStats() for s in strategies}
        report.stats[provider.name] = per
        stats = established if provider.established else newcomer
        checks = policy.plan(stats, "normal", bounty)
        model = models.sampled if provider.spread else models.greedy
        other = models.sampled_other if provider.spread else models.greedy_other
        previous: ResultBundle | None = None
        cheated = answered = 0
        limit = cheating_tasks if provider.cheat is not None else honest_tasks
        while (cheated if provider.cheat is not None else answered) < limit:
            task_no += 1
            answered += 1
            task, cid = _task(requester, model, task_no, provider.sampled)
            reference = honest_result(task, cid, model, witness)
            replica = None
            if "redundancy" in strategies:
                replica = honest_result(task, cid, other, witness)
            if provider.cheat is None:
                mine = honest_result(task, cid, other if provider.threads_other else model, node)
                cheating = False
            else:
                cheat = provider.cheat(previous or reference)
                cheating = not isinstance(cheat, Adaptive) or cheat.cheats_on(cid)
                mine = cheat.forge(task, cid, model, node)
            previous = reference
            cheated += cheating
            drawn = policy.selects(checks, mine)
            for strategy in strategies:
                _judge(
                    per[strategy],
                    strategy,
                    drawn,
                    model,
                    task,
                    cid,
                    mine,
                    replica,
                    reference=reference,
                    cheating=cheating,
                )
    return report
