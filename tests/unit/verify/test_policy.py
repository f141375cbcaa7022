"""The verification policy and arbitration by re-score (tiny models)."""

from __future__ import annotations

from typing import Any

import pytest

from chefsplan_agents.errors import VerificationError
from chefsplan_agents.identity import Identity
from chefsplan_agents.llm import LlamaCppBackend
from chefsplan_agents.testing import Lazy, TextSwap, honest_result
from chefsplan_agents.verify import ProviderStats, VerificationPolicy, arbitrate

NEW = ProviderStats(reputation=0.09, stake_wei=10**18)
OLD = ProviderStats(reputation=0.65, stake_wei=10**18, tasks_won=10)
TRUSTED = ProviderStats(reputation=0.95, stake_wei=10**20, tasks_won=500)


def test_new_providers_are_always_rescored_in_full() -> None:
    checks = VerificationPolicy(salt=b"s").plan(NEW, "normal", 10**15)
    assert checks.always and checks.mode == "full" and not checks.redundant


def test_a_slashed_provider_counts_as_new() -> None:
    slashed = ProviderStats(reputation=0.7, stake_wei=10**18, tasks_won=50, slashed=1)
    assert VerificationPolicy(salt=b"s").plan(slashed, "normal", 1).always


def test_probability_falls_with_reputation_and_stake_and_rises_with_bounty() -> None:
    policy = VerificationPolicy(salt=b"s")
    shaky = ProviderStats(reputation=0.3, stake_wei=10**18, tasks_won=10)
    old, trusted = policy.plan(shaky, "normal", 10**15), policy.plan(TRUSTED, "normal", 10**15)
    assert 1.0 > old.probability > trusted.probability >= policy.min_probability
    rich = policy.plan(TRUSTED, "normal", 10**21)  # a bounty worth more than the stake
    assert rich.probability > 0.9


def test_the_default_floor_catches_a_cheater_within_20_cheating_tasks() -> None:
    # An established cheater escapes n checks with (1 - p)^n: at most 0.1 % over 20 tasks.
    p = VerificationPolicy(salt=b"s").plan(OLD, "normal", 10**15).probability
    assert (1 - p) ** 20 < 1e-3


def test_trust_levels() -> None:
    policy = VerificationPolicy(salt=b"s")
    assert policy.plan(TRUSTED, "low", 1).mode is None
    high = policy.plan(TRUSTED, "high", 1)
    assert high.always and (high.replicas, high.quorum) == (3, 2)
    with pytest.raises(VerificationError):
        policy.plan(TRUSTED, "paranoid", 1)  # type: ignore[arg-type]


def test_the_draw_is_fixed_by_the_result_and_the_secret_salt(
    scripted: LlamaCppBackend, make_task: Any, cheater: Identity
) -> None:
    checks = VerificationPolicy(salt=b"s").plan(OLD, "normal", 1)
    results = []
    for i in range(40):
        task, cid = make_task(scripted, f"Say hi {i}", max_tokens=4)
        results.append(honest_result(task, cid, scripted, cheater))
    picks = [VerificationPolicy(salt=b"s").selects(checks, r) for r in results]
    assert picks == [VerificationPolicy(salt=b"s").selects(checks, r) for r in results]
    assert 0 < sum(p is not None for p in picks) < len(picks)
    other = [VerificationPolicy(salt=b"t").selects(checks, r) for r in results]
    assert other != picks  # without the salt the provider cannot tell which are checked


def test_arbitration_accepts_the_one_output_that_passes(
    scripted: LlamaCppBackend, make_task: Any, cheater: Identity
) -> None:
    task, cid = make_task(scripted)
    honest = honest_result(task, cid, scripted, Identity.generate())
    swapped = TextSwap().forge(task, cid, scripted, cheater)
    lazy = Lazy().forge(task, cid, scripted, cheater)
    decision = arbitrate(scripted, task, {"a": swapped, "b": honest, "c": lazy})
    assert decision.decided and decision.accepted == "b"
    assert decision.result == honest
    assert set(decision.wrong) == {"a", "c"}


def test_arbitration_accepts_nothing_when_nothing_passes(
    scripted: LlamaCppBackend, make_task: Any, cheater: Identity
) -> None:
    task, cid = make_task(scripted)
    forged = {"a": Lazy().forge(task, cid, scripted, cheater)}
    decision = arbitrate(scripted, task, forged)
    assert not decision.decided and decision.wrong == ("a",)
    assert "no revealed result passes" in decision.reason
