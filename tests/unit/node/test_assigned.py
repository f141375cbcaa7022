"""Tasks assigned to one node: run first, then claim, reveal and settle in one transaction."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from _outages import FailingPuts

from chefsplan_agents.devnet import Devnet
from chefsplan_agents.errors import ChainUnavailable, MarketError, StoreUnavailable
from chefsplan_agents.llm import SCRIPTED_OUTPUT
from chefsplan_agents.market._requester import Timeouts
from chefsplan_agents.node import NodePolicy, RetryPolicy, TaskRecordState, TaskStage
from chefsplan_agents.storage import compute_cid

BOUNTY = 10**15
BOND = 2 * 10**15


@pytest.fixture(scope="module")
def net() -> Iterator[Devnet]:
    policy = NodePolicy(min_bounty_wei=10**14, max_tokens=64)
    with Devnet.create(nodes=3, model="tiny", n_threads=1, n_ctx=256, policy=policy) as devnet:
        yield devnet


@pytest.fixture(autouse=True)
def _fresh_nodes(net: Devnet) -> Iterator[None]:
    yield
    for i, node in enumerate(net.nodes):  # undo a test's outage wrappers
        if node.market is not net.market or node.store is not net.store:
            net.restart_node(i)
    net.drain()


def _tid(task_id: bytes) -> str:
    return "0x" + task_id.hex()


def test_assigned_task_settles_in_one_transaction_after_the_run(net: Devnet) -> None:
    chosen = net.nodes[1]
    won_before = net.registry.reputation(chosen.address).won
    paid_before = chosen.withdrawn_wei
    receipt = net.run_task(
        "Only you", bounty_per_replica=BOUNTY, bond=BOND, assignee=chosen.address
    )
    assert receipt.output == SCRIPTED_OUTPUT
    [replica] = receipt.replicas
    assert replica.address == chosen.address
    # One transaction claimed, revealed and settled it (a reveal from the claim stands for
    # its commitment); nothing was committed on its own.
    assert replica.claim_tx == replica.commit_tx == replica.reveal_tx == receipt.finalize_tx
    assert net.market.events("ResultCommitted", task_id=receipt.task_id) == []
    assert receipt.gas_used == net.chain.gas_used(receipt.post_tx) + net.chain.gas_used(
        receipt.finalize_tx
    )
    record = chosen.task(receipt.task_id)
    assert record is not None and record.stage is TaskStage.SETTLED
    assert set(record.txs.values()) == {receipt.finalize_tx}
    # Paid bounty + bond in that same transaction; the win is on its record.
    assert chosen.withdrawn_wei - paid_before == BOUNTY + BOND
    assert net.market.balance_of(chosen.address) == 0
    assert net.registry.reputation(chosen.address).won == won_before + 1
    for other in net.nodes:
        if other is chosen:
            continue
        refused = other.task(receipt.task_id)
        assert refused is not None and refused.stage is TaskStage.REFUSED
        assert refused.reason == f"the task is assigned to provider {chosen.address}"


def test_other_nodes_refuse_an_assigned_task_without_fetching_its_bundle(net: Devnet) -> None:
    data = b'{"not": "stored anywhere"}'
    missing_cid = compute_cid(data)  # never put: fetching it would fail
    assert not net.store.has(missing_cid)
    chosen = net.nodes[2]
    params = net.market.new_task(
        hashlib.sha256(data).digest(),
        bounty_per_replica=BOUNTY,
        bond=BOND,
        requester=net.requester.address,
        assignee=chosen.address,
    )
    net.market.post_task(params, missing_cid)
    for node in net.nodes[:2]:
        node.tick()
        record = node.task(net.market.task_id(params))
        assert record is not None and record.stage is TaskStage.REFUSED
        assert record.reason == f"the task is assigned to provider {chosen.address}"


def test_requester_refuses_an_assigned_task_with_several_replicas(net: Devnet) -> None:
    with pytest.raises(MarketError, match="assigned to one provider has one replica") as info:
        net.delegate("Three of one", replicas=3, assignee=net.nodes[0].address)
    assert "\n" not in str(info.value)


class _SettleOutage:
    """claimAndFinalize fails as if the chain node were down (``landed``: after it was mined,
    as when the answer is lost on the way back)."""

    def __init__(self, inner: Any, *, landed: bool) -> None:
        self._inner = inner
        self._landed = landed

    def claim_and_finalize(self, *args: Any, **kwargs: Any) -> Any:
        if self._landed:
            self._inner.claim_and_finalize(*args, **kwargs)
        raise ChainUnavailable("chain node at http://127.0.0.1:8545 is not answering")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.mark.parametrize("landed", [False, True], ids=["before-send", "after-mined"])
def test_crash_around_claim_and_finalize_settles_once_after_restart(
    net: Devnet, landed: bool
) -> None:
    node = net.nodes[0]
    node.market = _SettleOutage(net.market, landed=landed)  # type: ignore[assignment]
    node.retry = RetryPolicy(attempts=1)
    handle = net.delegate("Settle after a crash", assignee=node.address)
    with pytest.raises(ChainUnavailable):
        node.tick()  # runs the model and stores the result; the settlement is lost
    tid = _tid(handle.task_id)
    crashed = node.task(tid)
    assert crashed is not None and crashed.stage is TaskStage.SETTLING
    assert crashed.result_cid and crashed.output_hash
    assert net.market.task_state(handle.task_id).open is not landed

    node.market = net.market  # the chain node is back
    fresh = net.restart_node(0)  # nothing in memory; the record says SETTLING
    fresh.tick()
    receipt = net.wait(handle, timeout=60)
    assert receipt.result_cid == crashed.result_cid
    assert len(net.market.events("ReplicaClaimed", task_id=handle.task_id)) == 1
    done = fresh.task(tid)
    assert done is not None and done.stage is TaskStage.SETTLED


def test_settling_record_lost_to_a_power_failure_is_reconciled_from_events(net: Devnet) -> None:
    # SETTLING is not flushed: a power failure just after the settlement landed can leave the
    # RUNNING record on disk. The node must find its own settlement, not run the task again.
    node = net.nodes[0]
    handle = net.delegate("Settled, then the power went", assignee=node.address)
    tid = _tid(handle.task_id)
    running: list[TaskRecordState] = []
    real_save = node.state.save

    def save(record: TaskRecordState, **kwargs: Any) -> None:
        if record.stage is TaskStage.RUNNING:
            running.append(record)
        real_save(record, **kwargs)

    node.state.save = save  # type: ignore[method-assign]
    node.tick()
    receipt = net.wait(handle, timeout=60)
    stale = running[-1]  # the last RUNNING write (the run is counted, then uncounted)
    node.state.save = real_save  # type: ignore[method-assign]
    node.state.save(stale)  # what the disk held when the power came back
    fresh = net.restart_node(0)
    reloaded = fresh.task(tid)
    assert reloaded is not None and reloaded.stage is TaskStage.RUNNING
    runs: list[str] = []
    real_run = fresh.run_bundle

    def run_bundle(*args: Any, **kwargs: Any) -> Any:
        runs.append(str(args[1]))
        return real_run(*args, **kwargs)

    fresh.run_bundle = run_bundle  # type: ignore[method-assign]
    fresh.tick()
    done = fresh.task(tid)
    assert done is not None and done.stage is TaskStage.SETTLED
    assert runs == []  # not run again
    assert len(net.market.events("ReplicaClaimed", task_id=handle.task_id)) == 1
    assert receipt.replicas[0].address == fresh.address


def test_crash_mid_run_runs_again_after_restart(net: Devnet) -> None:
    node = net.nodes[0]
    node.store = FailingPuts(net.store)  # type: ignore[assignment]
    node.retry = RetryPolicy(attempts=1)
    handle = net.delegate("Run me again", assignee=node.address)
    with pytest.raises(StoreUnavailable):
        node.tick()
    tid = _tid(handle.task_id)
    crashed = node.task(tid)
    assert crashed is not None and crashed.stage is TaskStage.RUNNING
    assert net.market.events("ReplicaClaimed", task_id=handle.task_id) == []

    node.store = net.store  # the daemon is back
    fresh = net.restart_node(0)
    fresh.tick()
    receipt = net.wait(handle, timeout=60)
    [replica] = receipt.replicas
    assert replica.address == fresh.address and receipt.output == SCRIPTED_OUTPUT
    done = fresh.task(tid)
    assert done is not None and done.stage is TaskStage.SETTLED, done


def test_a_task_cancelled_during_the_run_is_lost_and_not_retried(net: Devnet) -> None:
    node = net.nodes[0]
    handle = net.delegate("Never mind", assignee=node.address)
    net.market.cancel(handle.params)  # before the node's tick: its settlement will revert
    assert node.tick() == 1
    record = node.task(_tid(handle.task_id))
    assert record is not None and record.stage is TaskStage.LOST
    assert "claim failed" in (record.reason or "") and "UnknownTask" in (record.reason or "")
    assert node.tick() == 0
    assert net.market.events("ReplicaClaimed", task_id=handle.task_id) == []


def test_assigned_task_with_a_challenge_window_is_claimed_first(net: Devnet) -> None:
    chosen = net.nodes[2]
    receipt = net.run_task(
        "Claim, then reveal",
        assignee=chosen.address,
        timeouts=Timeouts(challenge_window=60),
    )
    [replica] = receipt.replicas
    assert replica.address == chosen.address
    # Not single-shot: the ordinary claim before the run, settled after the window.
    assert replica.claim_tx != receipt.finalize_tx
    record = chosen.task(receipt.task_id)
    assert record is not None and record.stage is TaskStage.SETTLED


def test_records_with_something_at_stake_reach_the_disk_before_the_step(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from chefsplan_agents.identity import Identity
    from chefsplan_agents.market import TaskParams
    from chefsplan_agents.node import NodeStateStore, TaskRecordState

    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    store = NodeStateStore(tmp_path / "state")
    params = TaskParams(Identity.generate().address, b"\x02" * 32, 1, 1, 5, 6, 7, 8, 20, 0, 9)
    record = TaskRecordState("0xab", params, "bafyx", TaskStage.REFUSED)
    flushed = {}
    for stage in TaskStage:
        before = len(synced)
        store.save(record.advance(stage))
        flushed[stage] = len(synced) > before
    # A salt or a claim at stake: flushed. Nothing at stake (final records, an assigned task,
    # whose one transaction bonds and pays back): not.
    assert {s for s, f in flushed.items() if f} == {
        TaskStage.CLAIMING,
        TaskStage.CLAIMED,
        TaskStage.COMMITTING,
        TaskStage.COMMITTED,
        TaskStage.REVEALING,
        TaskStage.REVEALED,
    }


def test_another_providers_assigned_task_is_refused_without_a_warning(
    net: Devnet, caplog: pytest.LogCaptureFixture
) -> None:
    chosen = net.nodes[2]
    with caplog.at_level("DEBUG", logger="chefsplan_agents.node"):
        receipt = net.run_task(
            "Quietly", bounty_per_replica=BOUNTY, bond=BOND, assignee=chosen.address
        )
    about_it = [r for r in caplog.records if receipt.task_id in r.getMessage()]
    refusals = [r for r in about_it if "refused task" in r.getMessage()]
    # The two other nodes note it at debug level: an assignment elsewhere is routine.
    assert {r.levelname for r in refusals} == {"DEBUG"}
    assert len(refusals) == 2
