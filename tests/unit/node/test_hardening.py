"""A provider node under attack: bundles that stop it, bond-stealing terms, far-off deadlines.
Each test fails on a node without the defence it names."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from _outages import FailingPuts

from chefsplan_agents.bundles import (
    GenerationParams,
    ModelRequirement,
    TaskBundle,
    encode_bundle,
    sign_bundle,
)
from chefsplan_agents.devnet import Devnet
from chefsplan_agents.errors import ChainUnavailable, ConfigError, StoreUnavailable, TaskRefused
from chefsplan_agents.llm import SCRIPTED_OUTPUT, Generation, Timings
from chefsplan_agents.market import TaskParams
from chefsplan_agents.node import GenerationSpeed, NodePolicy, RetryPolicy, TaskStage
from chefsplan_agents.storage import ContentStore

BOUNTY = 10**15
BOND = 2 * 10**15
ADDRESS = "0x" + "11" * 20


class NodeStopped(BaseException):
    """Stands in for a process killed by its input (SIGSEGV in a parser, the OOM killer)."""


@pytest.fixture(scope="module")
def net() -> Iterator[Devnet]:
    policy = NodePolicy(max_tokens=64)
    with Devnet.create(nodes=1, model="tiny", n_threads=1, n_ctx=256, policy=policy) as devnet:
        yield devnet


def _tid(task_id: bytes) -> str:
    return "0x" + task_id.hex()


def _bundle(net: Devnet, prompt: str = "What is on the menu?") -> TaskBundle:
    requester = net.requester.identity
    task = TaskBundle(
        kind="chat",
        messages=({"role": "user", "content": prompt},),  # type: ignore[arg-type]
        params=GenerationParams(max_tokens=32),
        model=ModelRequirement(sha256=net.model_sha256),
        requester_did=requester.did,
    )
    return sign_bundle(task, requester)


def _post(net: Devnet, data: bytes, **terms: Any) -> tuple[TaskParams, str]:
    """Post a task for any bytes on any terms, bypassing the requester's own checks."""
    cid = net.store.put(data)
    values: dict[str, Any] = {"bounty_per_replica": BOUNTY, "bond": BOND, "replicas": 1}
    values.update(terms)
    params = net.market.new_task(
        hashlib.sha256(data).digest(), requester=net.requester.address, **values
    )
    net.market.post_task(params, cid)
    return params, cid


def _claims(net: Devnet, params: TaskParams) -> int:
    return len(net.market.events("ReplicaClaimed", task_id=net.market.task_id(params)))


class _FetchSpy:
    """A store that records every fetch, and stops the node on the fetch of ``poison``."""

    def __init__(self, inner: ContentStore, poison: str | None = None) -> None:
        self._inner = inner
        self.poison = poison
        self.fetched: list[str] = []

    def get(self, cid: str, **kwargs: Any) -> bytes:
        self.fetched.append(cid)
        if cid == self.poison:
            raise NodeStopped(cid)
        return self._inner.get(cid, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


# ---------------------------------------------------------------------------- crash loops


def test_a_bundle_that_stops_the_node_is_not_fetched_again_after_restart(net: Devnet) -> None:
    node = net.nodes[0]
    params, cid = _post(net, encode_bundle(_bundle(net, "Poisoned")))
    node.store = _FetchSpy(net.store, poison=cid)  # type: ignore[assignment]
    with pytest.raises(NodeStopped):
        node.tick()

    fresh = net.restart_node(0)  # same key and state folder, nothing in memory
    spy = _FetchSpy(net.store)
    fresh.store = spy  # type: ignore[assignment]
    fresh.tick()
    assert cid not in spy.fetched
    record = fresh.task(net.market.task_id(params))
    assert record is not None and record.stage is TaskStage.VETTING
    assert "stopped the node" in fresh.refusals()[_tid(net.market.task_id(params))]
    assert _claims(net, params) == 0

    # And the node still works: an honest task after it settles.
    receipt = net.run_task("After the poison", bounty_per_replica=BOUNTY, bond=BOND)
    assert receipt.output == SCRIPTED_OUTPUT
    fresh.store = net.store  # type: ignore[assignment]


def test_a_run_that_stops_the_node_twice_is_given_up(
    net: Devnet, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[str] = []

    def killed(*args: Any, **_kwargs: Any) -> Any:
        runs.append(str(args[1]))
        raise NodeStopped("the model run took the process down")

    handle = net.delegate("Crashes the model", bounty_per_replica=BOUNTY, bond=BOND)
    for _ in range(3):
        node = net.restart_node(0)
        monkeypatch.setattr(node, "run_bundle", killed)
        try:
            node.tick()
        except NodeStopped:
            continue
    # Two runs (the first, one retry after the restart); the third start gives up.
    assert len(runs) == 2
    record = node.task(handle.task_id)
    assert record is not None and record.stage is TaskStage.FAILED
    assert "given up" in (record.reason or "")
    net.restart_node(0)


def test_runs_repeated_for_a_store_outage_are_not_given_up(net: Devnet) -> None:
    node = net.restart_node(0)
    node.store = FailingPuts(net.store)  # type: ignore[assignment]
    node.retry = RetryPolicy(attempts=1)
    handle = net.delegate("The store is down", bounty_per_replica=BOUNTY, bond=BOND)
    with pytest.raises(StoreUnavailable):
        node.tick()  # claims and runs; the result cannot be stored
    for _ in range(3):
        node.tick()  # runs again each time (the result was never stored): the outage goes on
    record = node.task(handle.task_id)
    assert record is not None and record.stage is TaskStage.CLAIMED
    node.store = net.store  # type: ignore[assignment]
    receipt = net.wait(handle, timeout=60)
    assert receipt.output == SCRIPTED_OUTPUT
    done = node.task(handle.task_id)
    assert done is not None and done.stage is TaskStage.SETTLED
    net.restart_node(0)


# ---------------------------------------------------------------------------- policy


def _params(now: int = 1_000_000, **changes: Any) -> TaskParams:
    base = TaskParams(
        requester=ADDRESS,
        bundle_hash=b"\x02" * 32,
        replicas=1,
        quorum=1,
        bounty_per_replica=BOUNTY,
        bond=BOND,
        claim_deadline=now + 600,
        commit_timeout=300,
        reveal_deadline=now + 1500,
        challenge_window=0,
        nonce=1,
    )
    return replace(base, **changes)


def test_policy_caps_the_bond_absolutely_and_against_the_bounty() -> None:
    policy = NodePolicy()
    policy.check_terms(_params(), now=1_000_000)
    with pytest.raises(TaskRefused, match="over 10 times the bounty"):
        policy.check_terms(_params(bounty_per_replica=10**14, bond=10**15 + 1), now=1_000_000)
    # Small bonds are taken whatever the bounty (a free network pays 1 wei).
    policy.check_terms(_params(bounty_per_replica=1, bond=10**15), now=1_000_000)
    with pytest.raises(TaskRefused, match="above this node's maximum"):
        policy.check_terms(_params(bounty_per_replica=10**18, bond=10**18), now=1_000_000)
    NodePolicy(max_bond_wei=None, max_bond_per_bounty=None).check_terms(
        _params(bounty_per_replica=1, bond=10**20)
    )


def test_policy_caps_deadlines_and_the_challenge_window() -> None:
    now = 1_000_000
    policy = NodePolicy(max_deadline_horizon_s=3600, max_challenge_window_s=600)
    policy.check_terms(_params(now, claim_deadline=now + 3600, reveal_deadline=now + 3600))
    with pytest.raises(TaskRefused, match="claim deadline is 3601 s ahead"):
        policy.check_terms(_params(now, claim_deadline=now + 3601), now=now)
    century = now + 100 * 365 * 86400
    with pytest.raises(TaskRefused, match="reveal deadline"):
        policy.check_terms(_params(now, reveal_deadline=century), now=now)
    with pytest.raises(TaskRefused, match="challenge window"):
        policy.check_terms(_params(now, challenge_window=601), now=now)


def test_policy_windows_fit_the_measured_speed() -> None:
    policy = NodePolicy(time_safety_factor=2.0, chain_margin_s=30)
    speed = GenerationSpeed(generation_tokens_per_s=10.0, prefill_tokens_per_s=100.0)
    needed = policy.run_seconds(speed, prompt_tokens=100, max_tokens=100)
    assert needed == pytest.approx(2 * (1 + 10) + 30)
    policy.check_windows(_params(commit_timeout=52), needed_s=needed)
    with pytest.raises(TaskRefused, match="commit window of 51 s"):
        policy.check_windows(_params(commit_timeout=51), needed_s=needed)
    # Several replicas: reveals may open only when the commit phase ends.
    now = 1_000_000
    tight = _params(now, replicas=3, quorum=2, reveal_deadline=now + 600 + 300 + 10)
    with pytest.raises(TaskRefused, match="reveal window of 10 s"):
        policy.check_windows(tight, needed_s=needed)
    with pytest.raises(TaskRefused, match="claim window of 40 s"):
        policy.check_run_first(_params(now, claim_deadline=now + 40), needed_s=needed, now=now)


def test_policy_rejects_bad_settings() -> None:
    for bad in (
        {"time_safety_factor": 0.5},
        {"max_deadline_horizon_s": 0},
        {"chain_margin_s": -1},
        {"max_bond_wei": -1},
    ):
        with pytest.raises(ConfigError):
            NodePolicy(**bad)


def _generation(prompt_tokens: int, prompt_s: float, tokens: int, gen_s: float) -> Generation:
    return Generation(
        text="x" * tokens,
        token_ids=tuple(range(tokens)),
        token_logprobs=(0.0,) * tokens,
        fingerprint=tuple(() for _ in range(tokens)),
        finish_reason="length",
        prompt_tokens=prompt_tokens,
        completion_tokens=tokens,
        timings=Timings.measure(prompt_s, gen_s, prompt_tokens, tokens),
        model_sha256="ab" * 32,
    )


def test_generation_speed_is_measured_and_follows_slow_runs() -> None:
    speed = GenerationSpeed.from_generation(_generation(50, 0.5, 32, 0.32))
    assert speed.generation_tokens_per_s == pytest.approx(100, rel=0.05)
    assert speed.prefill_tokens_per_s == pytest.approx(100, rel=0.05)
    slower = speed.observe(_generation(50, 0.5, 64, 6.4))  # a run at 10 tok/s
    assert 10 < slower.generation_tokens_per_s < 0.5 * speed.generation_tokens_per_s
    assert speed.observe(_generation(50, 0.5, 2, 10.0)) == speed  # too short to time
    # A backend that reports no prefill time is estimated at its generation speed.
    unmeasured = GenerationSpeed.from_generation(_generation(10, 0.0, 32, 1.0))
    assert unmeasured.prefill_tokens_per_s == unmeasured.generation_tokens_per_s


# ---------------------------------------------------------------------------- bond theft


def test_a_short_commit_window_with_a_large_bond_is_refused(net: Devnet) -> None:
    node = net.nodes[0]
    params, _ = _post(
        net,
        encode_bundle(_bundle(net, "Steal")),
        bounty_per_replica=1,
        bond=10**18,
        commit_timeout=1,
    )
    node.tick()
    record = node.task(net.market.task_id(params))
    assert record is not None and record.stage is TaskStage.REFUSED
    assert "bond" in (record.reason or "")
    assert _claims(net, params) == 0


def test_windows_too_short_to_run_the_task_either_way_are_refused(net: Devnet) -> None:
    node = net.nodes[0]
    node.policy = replace(node.policy, max_bond_wei=None, max_bond_per_bounty=None)
    try:
        # Too short to commit after claiming, and claims close before a run first could end.
        params, _ = _post(
            net, encode_bundle(_bundle(net, "Too quick")), commit_timeout=1, claim_window=10
        )
        node.tick()
        record = node.task(net.market.task_id(params))
        assert record is not None and record.stage is TaskStage.REFUSED
        assert "commit window of 1 s" in (record.reason or "")
        assert "claim window of" in (record.reason or "")
        assert _claims(net, params) == 0
    finally:
        node.policy = replace(
            node.policy, max_bond_wei=NodePolicy().max_bond_wei, max_bond_per_bounty=10
        )


def test_a_short_commit_window_is_met_by_committing_in_the_claim(net: Devnet) -> None:
    node = net.nodes[0]
    paid_before = node.withdrawn_wei
    params, _ = _post(net, encode_bundle(_bundle(net, "Quick")), commit_timeout=1)
    task_id = net.market.task_id(params)
    node.tick()
    record = node.task(task_id)
    assert record is not None and record.stage is TaskStage.SETTLED
    # Run first; the claim carried the commitment, so no commit deadline could pass.
    assert record.txs["claim"] == record.txs["commit"]
    [claimed] = net.market.events("ReplicaClaimed", task_id=task_id)
    assert bytes(claimed.args["commitment"]) != bytes(32)
    assert node.withdrawn_wei - paid_before == BOUNTY + BOND
    assert net.market.events("ReplicaReopened", task_id=task_id) == []
    assert not net.market.task_state(task_id).open


def test_a_claim_with_its_commitment_survives_a_restart_before_it_lands(net: Devnet) -> None:
    node = net.nodes[0]
    market = node.market

    class _ClaimOutage:
        def claim(self, *args: Any, **kwargs: Any) -> Any:
            raise ChainUnavailable("chain node at http://127.0.0.1:8545 is not answering")

        def __getattr__(self, name: str) -> Any:
            return getattr(market, name)

    node.market = _ClaimOutage()  # type: ignore[assignment]
    node.retry = RetryPolicy(attempts=1)
    params, _ = _post(net, encode_bundle(_bundle(net, "Claim later")), commit_timeout=1)
    task_id = net.market.task_id(params)
    with pytest.raises(ChainUnavailable):
        node.tick()  # ran and stored the result; the claim could not be sent
    stored = node.task(task_id)
    assert stored is not None and stored.stage is TaskStage.COMMITTING
    node.market = market  # the chain node is back
    fresh = net.restart_node(0)
    fresh.tick()  # claims with the stored commitment, reveals and settles
    done = fresh.task(task_id)
    assert done is not None and done.stage is TaskStage.SETTLED
    assert done.output_hash == stored.output_hash


def test_speed_is_measured_by_a_restarted_node(net: Devnet) -> None:
    fresh = net.restart_node(0)  # never ran start(): knows no speed yet
    assert fresh.speed is None
    receipt = net.run_task("Measured on demand", bounty_per_replica=BOUNTY, bond=BOND)
    assert receipt.output == SCRIPTED_OUTPUT
    assert fresh.speed is not None and fresh.speed.generation_tokens_per_s > 0
