"""The adversarial suite: every cheater is caught through the policy, no honest result fails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chefsplan_agents.bundles import GenerationParams, ResultBundle, TaskBundle
from chefsplan_agents.devnet import Devnet
from chefsplan_agents.llm import LlamaCppBackend, resolve_model
from chefsplan_agents.verify import (
    BLIND_SPOTS,
    Models,
    SuiteReport,
    VerificationPolicy,
    run_adversarial_suite,
)

# The policy's draws depend on each result's bytes (timings, keys), so they differ between runs.
# At the default floor (p = 0.3) a cheater escapes 20 cheating tasks with 0.7^20 = 0.08 %, and
# one of the 11 established cheaters would in ~1 % of runs; at a floor of 0.4 it is 0.6^20 = 4e-5
# each, which a test that must never flake needs.
POLICY = VerificationPolicy(min_probability=0.4, salt=b"adversarial-suite")


def _devnet_results(verifier: LlamaCppBackend) -> list[tuple[TaskBundle, str, ResultBundle]]:
    """Honest results from a devnet's provider node (two threads), as the chain settled them."""
    out = []
    with Devnet.create(nodes=1, model="tiny", n_threads=2) as net:
        assert net.model_sha256 == verifier.info.sha256
        for i in range(8):
            handle = net.delegate(f"Menu idea {i}", params=GenerationParams(max_tokens=24))
            done = net.wait(handle, timeout=120)
            out.append((handle.bundle, handle.bundle_cid, done.result))
    return out


@pytest.fixture(scope="module")
def report(scripted: LlamaCppBackend, random_llm: LlamaCppBackend) -> Iterator[SuiteReport]:
    # Honest results also come from two-thread nodes: other hardware settings must pass.
    with (
        LlamaCppBackend(resolve_model("tiny"), n_threads=2) as scripted_2,
        LlamaCppBackend(resolve_model("tiny-random"), n_threads=2) as random_2,
    ):
        models = Models(scripted, scripted_2, random_llm, random_2, wrong=random_llm)
        yield run_adversarial_suite(
            models,
            cheating_tasks=20,
            honest_tasks=5,
            strategies=("full", "policy"),
            policy=POLICY,
            node_results=_devnet_results(scripted),
        )


def test_the_suite_runs_at_least_200_tasks(report: SuiteReport) -> None:
    assert report.total_tasks >= 200


def test_no_honest_result_fails(report: SuiteReport) -> None:
    assert report.stats["node"]["full"].tasks == 8  # the devnet node's results were judged
    for name, per in report.stats.items():
        for strategy, stats in per.items():
            assert stats.false_positives == 0, (name, strategy)


def test_every_cheater_is_detected(report: SuiteReport) -> None:
    for name in report.cheaters:
        if name in BLIND_SPOTS:
            continue
        assert report.stats[name]["policy"].detected > 0, name
        rate = report.stats[name]["full"].detection_rate
        assert rate is not None and rate >= 0.95, (name, rate)


def test_every_cheater_is_caught_within_20_cheating_tasks(report: SuiteReport) -> None:
    for strategy in ("full", "policy"):
        worst = report.max_tasks_to_catch(strategy)
        assert worst is not None and worst <= 20, (strategy, worst)


def test_the_policy_checks_a_fraction_of_established_providers(report: SuiteReport) -> None:
    honest = report.stats["honest-1-thread"]
    assert honest["policy"].verify_ms < honest["full"].verify_ms
    newcomer = report.stats["new-lazy"]["policy"]
    assert newcomer.detected == newcomer.cheating
    assert report.policy_probability == 0.4
