"""Every shipped adversary fails the re-score with the check that should catch it (tiny models)."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Callable as _C
from typing import Any

import pytest

from chefsplan_agents.identity import Identity
from chefsplan_agents.llm import LlamaCppBackend
from chefsplan_agents.testing import (
    Adaptive,
    ChangeToken,
    Cheat,
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
from chefsplan_agents.verify import rescore_result

MakeTask = _C[..., Any]

CheatFactory = Callable[[LlamaCppBackend], Cheat]

CASES: list[tuple[str, CheatFactory, str]] = [
    ("lazy", lambda _: Lazy(), "token"),
    ("wrong-model-lying", lambda other: WrongModel(other), "token"),
    ("wrong-model-named", lambda other: WrongModel(other, claim_pinned=False), "model"),
    ("tamper", lambda _: Tamper(edit=lambda p: p + "C"), "token"),
    ("text-swap", lambda _: TextSwap(), "text"),
    ("truncate", lambda _: Truncate(), "end"),
    ("pad", lambda _: Pad(), "token"),
    ("change-token", lambda _: ChangeToken(), "token"),
    (
        "change-token-honest-fingerprint",
        lambda _: ChangeToken(fix_fingerprint=False),
        "fingerprint",
    ),
    ("adaptive-always", lambda _: Adaptive(TextSwap(), fraction=1.0), "text"),
]


@pytest.mark.parametrize(("name", "factory", "check"), CASES, ids=[c[0] for c in CASES])
def test_each_cheat_fails_with_its_check(
    name: str,
    factory: CheatFactory,
    check: str,
    scripted: LlamaCppBackend,
    random_llm: LlamaCppBackend,
    make_task: MakeTask,
    cheater: Identity,
) -> None:
    task, cid = make_task(scripted)
    cheat = factory(random_llm)
    forged = cheat.forge(task, cid, scripted, cheater)
    assert forged.node_did == cheater.did
    verdict = rescore_result(scripted, task, forged)
    assert not verdict.passed, name
    assert verdict.check == check, verdict.reason
    assert verdict.reason and "\n" not in verdict.reason


def test_sampling_when_greedy_was_asked_fails(
    random_llm: LlamaCppBackend, make_task: MakeTask, cheater: Identity
) -> None:
    # The scripted model is so peaked that sampling it gives its greedy answer; the random one
    # spreads its probability, as real models do.
    task, cid = make_task(random_llm, "Dinner for two", max_tokens=24)
    forged = SampledWhenGreedy().forge(task, cid, random_llm, cheater)
    verdict = rescore_result(random_llm, task, forged)
    assert not verdict.passed
    assert verdict.check == "fingerprint", verdict.reason


def test_the_honest_baseline_passes(
    scripted: LlamaCppBackend, make_task: MakeTask, cheater: Identity
) -> None:
    task, cid = make_task(scripted)
    result = honest_result(task, cid, scripted, cheater)
    verdict = rescore_result(scripted, task, result)
    assert result.output == "CHEFSPLAN OK"
    assert verdict.passed, verdict.reason
    assert verdict.check == "" and verdict.positions_checked == len(result.token_ids)


def test_a_copy_of_another_tasks_result_names_the_wrong_task(
    scripted: LlamaCppBackend, make_task: MakeTask, cheater: Identity
) -> None:
    other_task, other_cid = make_task(scripted, "Say hello")
    source = honest_result(other_task, other_cid, scripted, Identity.generate())
    task, cid = make_task(scripted)
    verdict = rescore_result(scripted, task, Copycat(source).forge(task, cid, scripted, cheater))
    assert not verdict.passed
    assert verdict.check == "task"


def test_a_copy_of_this_tasks_result_is_not_the_rescores_to_catch(
    scripted: LlamaCppBackend, make_task: MakeTask, cheater: Identity
) -> None:
    # A greedy answer copied from a replica of the same task is the right answer: the market's
    # commit-reveal (hashes committed before any is revealed) is what stops copying.
    task, cid = make_task(scripted)
    source = honest_result(task, cid, scripted, Identity.generate())
    copy = Copycat(source).forge(task, cid, scripted, cheater)
    assert copy.node_did == cheater.did
    assert rescore_result(scripted, task, copy).passed


def test_an_adaptive_cheater_is_honest_off_its_fraction(
    scripted: LlamaCppBackend, make_task: MakeTask, cheater: Identity
) -> None:
    cheat = Adaptive(TextSwap(), fraction=0.5, salt=b"s")
    tasks = [make_task(scripted, f"Say hi {i}") for i in range(12)]
    picked = [cheat.cheats_on(cid) for _, cid in tasks]
    assert 0 < sum(picked) < len(picked)  # some of each at this fraction
    for (task, cid), cheats in zip(tasks, picked, strict=True):
        verdict = rescore_result(scripted, task, cheat.forge(task, cid, scripted, cheater))
        assert verdict.passed is not cheats
        assert verdict.check == ("text" if cheats else "")
