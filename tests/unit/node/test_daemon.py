"""The provider node on a real in-process network: chain, contracts, CID store, tiny model."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from _outages import FailingPuts

from chefsplan_agents.bundles import (
    GenerationParams,
    ModelRequirement,
    TaskBundle,
    decode_result_bundle,
    encode_bundle,
    sign_bundle,
    verify_offer,
)
from chefsplan_agents.devnet import Devnet
from chefsplan_agents.errors import (
    ChainUnavailable,
    ConfigError,
    MarketError,
    NodeError,
    StoreUnavailable,
    TaskRefused,
)
from chefsplan_agents.identity import Identity
from chefsplan_agents.llm import SCRIPTED_OUTPUT
from chefsplan_agents.market import TaskParams
from chefsplan_agents.market._requester import Timeouts
from chefsplan_agents.node import (
    NodePolicy,
    NodeStateStore,
    ProviderNode,
    RetryPolicy,
    TaskRecordState,
    TaskStage,
)
from chefsplan_agents.storage import ContentStore, parse_cid

BOUNTY = 10**15
BOND = 2 * 10**15
MIN_BOUNTY = 10**14
MAX_TOKENS = 64


@pytest.fixture(scope="module")
def net() -> Iterator[Devnet]:
    policy = NodePolicy(min_bounty_wei=MIN_BOUNTY, max_tokens=MAX_TOKENS)
    with Devnet.create(nodes=3, model="tiny", n_threads=1, n_ctx=256, policy=policy) as devnet:
        yield devnet


def _bundle(net: Devnet, **changes: Any) -> TaskBundle:
    requester = net.requester.identity
    fields: dict[str, Any] = {
        "kind": "chat",
        "messages": ({"role": "user", "content": "What is on the menu?"},),
        "params": GenerationParams(max_tokens=32),
        "model": ModelRequirement(sha256=net.model_sha256),
        "requester_did": requester.did,
    }
    fields.update(changes)
    return sign_bundle(TaskBundle.model_validate(fields), requester)


def _post_raw(
    net: Devnet, data: bytes, *, bundle_hash: bytes | None = None, bounty: int = BOUNTY
) -> TaskParams:
    """Post a task for arbitrary bytes, bypassing the requester's checks."""
    cid = net.store.put(data)
    params = net.market.new_task(
        bundle_hash or hashlib.sha256(data).digest(),
        bounty_per_replica=bounty,
        bond=BOND,
        replicas=1,
        requester=net.requester.address,
    )
    net.market.post_task(params, cid)
    return params


def _claims(net: Devnet, params: TaskParams) -> int:
    return len(net.market.events("ReplicaClaimed", task_id=net.market.task_id(params)))


# ---------------------------------------------------------------------------- start-up


def test_nodes_register_a_signed_offer_for_their_model(net: Devnet) -> None:
    for node in net.nodes:
        assert node.status is not None
        record = net.registry.get_provider(node.address)
        assert record is not None and record.active
        assert record.did == node.did
        assert record.offer_cid == node.status.offer_cid
        assert record.stake == net.registry.min_stake
        token = net.store.get(record.offer_cid)
        assert record.offer_hash == hashlib.sha256(token).digest()
        offer = verify_offer(token.decode(), expected_issuer=node.did)
        assert offer.model.sha256 == net.model_sha256
        assert offer.evm_address == node.address
        assert offer.generation_tokens_per_s > 0


def test_restarting_start_does_not_register_twice(net: Devnet) -> None:
    node = net.nodes[0]
    before = net.registry.count()
    status = node.start()
    assert net.registry.count() == before
    assert net.registry.get_provider(node.address).offer_cid == status.offer_cid  # type: ignore[union-attr]


# ---------------------------------------------------------------------------- the lifecycle


def test_three_replicas_claim_commit_reveal_and_are_paid(net: Devnet) -> None:
    withdrawn = {n.address: n.withdrawn_wei for n in net.nodes}
    won = {n.address: net.registry.reputation(n.address).won for n in net.nodes}
    requester_before = net.chain.balance(net.requester.address)

    receipt = net.run_task(
        "What is on the menu?", replicas=3, quorum=2, bounty_per_replica=BOUNTY, bond=BOND
    )

    assert receipt.output == SCRIPTED_OUTPUT
    assert receipt.output_hash == "0x" + hashlib.sha256(SCRIPTED_OUTPUT.encode()).hexdigest()
    assert {r.address for r in receipt.replicas} == {n.address for n in net.nodes}
    assert {r.did for r in receipt.replicas} == {n.did for n in net.nodes}
    for replica in receipt.replicas:
        assert replica.output_hash == receipt.output_hash
        assert replica.claim_tx and replica.commit_tx and replica.reveal_tx
    assert receipt.settlement.winners == 3
    assert receipt.gas_used > 0
    for node in net.nodes:
        # Bounty plus the bond back, all of it withdrawn: nothing left in the market.
        assert node.withdrawn_wei - withdrawn[node.address] == BOUNTY + BOND
        assert net.market.balance_of(node.address) == 0
        assert net.registry.reputation(node.address).won == won[node.address] + 1
        assert net.registry.reputation(node.address).slashed == 0
        record = node.task(receipt.task_id)
        assert record is not None and record.stage is TaskStage.SETTLED
    spent = requester_before - net.chain.balance(net.requester.address)
    assert spent >= 3 * BOUNTY  # escrow paid out, plus gas


def test_output_hash_is_settled_on_chain_and_result_verifies_by_cid(net: Devnet) -> None:
    receipt = net.run_task("Settle me", replicas=3, quorum=2)
    [finalized] = net.market.events("TaskFinalized", task_id=receipt.task_id)
    assert "0x" + bytes(finalized.args["outputHash"]).hex() == receipt.output_hash
    assert finalized.args["resultCid"] == receipt.result_cid
    assert finalized.tx_hash == receipt.finalize_tx
    revealed = net.market.events("ResultRevealed", task_id=receipt.task_id)
    assert {e.args["resultCid"] for e in revealed} >= {receipt.result_cid}

    result = decode_result_bundle(net.store.get(receipt.result_cid))  # re-hashed, sig checked
    assert result.output == SCRIPTED_OUTPUT
    assert result.task_cid == receipt.bundle_cid
    assert result.node_did in {n.did for n in net.nodes}
    assert result.model_sha256 == net.model_sha256
    assert result.token_ids and len(result.fingerprint) == len(result.token_ids)
    assert result.timings.generated_tokens == len(result.token_ids)
    assert "llama-cpp-python" in result.llama_cpp_build


def test_single_replica_settles_in_its_reveal(net: Devnet) -> None:
    receipt = net.run_task("Alone", replicas=1)
    [replica] = receipt.replicas
    # The only reveal is the last one: it settles the task in the same transaction.
    assert replica.reveal_tx == receipt.finalize_tx
    others = [n for n in net.nodes if n.address != replica.address]
    for node in others:
        record = node.task(receipt.task_id)
        assert record is not None and record.stage is TaskStage.REFUSED
        # Node 0 ticks first and settles the task in that same tick.
        assert record.reason in ("the task is no longer open", "all 1 replicas are already claimed")


def test_single_replica_skips_the_commit(net: Devnet) -> None:
    receipt = net.run_task("No commit needed", replicas=1)
    [replica] = receipt.replicas
    # The only replica is the last to commit: it reveals straight from its claim.
    assert net.market.events("ResultCommitted", task_id=receipt.task_id) == []
    assert replica.commit_tx == replica.reveal_tx == receipt.finalize_tx
    node = next(n for n in net.nodes if n.address == replica.address)
    record = node.task(receipt.task_id)
    assert record is not None and record.stage is TaskStage.SETTLED
    assert set(record.txs) == {"claim", "reveal", "finalize"}


def test_last_of_three_replicas_reveals_without_committing(net: Devnet) -> None:
    receipt = net.run_task("Two commit, one reveals", replicas=3, quorum=2)
    commits = net.market.events("ResultCommitted", task_id=receipt.task_id)
    reveals = net.market.events("ResultRevealed", task_id=receipt.task_id)
    assert len(commits) == 2 and len(reveals) == 3
    direct = [r for r in receipt.replicas if r.commit_tx == r.reveal_tx]
    assert len(direct) == 1
    assert direct[0].address not in {str(e.args["provider"]) for e in commits}
    assert receipt.settlement.winners == 3


class _RevealOutage:
    """A market client whose reveals fail as if the chain node were down; all else passes."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def reveal(self, *args: Any, **kwargs: Any) -> Any:
        raise ChainUnavailable("chain node at http://127.0.0.1:8545 is not answering")

    reveal_and_finalize = reveal

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_crash_before_a_direct_reveal_reveals_after_restart(net: Devnet) -> None:
    node = net.nodes[0]
    market = node.market
    node.market = _RevealOutage(market)  # type: ignore[assignment]
    node.retry = RetryPolicy(attempts=1)
    handle = net.delegate("Reveal after a crash", replicas=1)
    with pytest.raises(ChainUnavailable):
        node.tick()  # claims, runs, stores the result; the direct reveal cannot be sent
    tid = "0x" + handle.task_id.hex()
    crashed = node.task(tid)
    assert crashed is not None and crashed.stage is TaskStage.REVEALING
    assert net.market.replica(handle.task_id, node.address).state.name == "CLAIMED"

    node.market = market  # the chain node is back
    fresh = net.restart_node(0)
    fresh.tick()  # reconciles with the chain: still claimed, so it reveals directly
    receipt = net.wait(handle, timeout=60)
    [replica] = receipt.replicas
    assert replica.address == fresh.address and replica.claim_tx == crashed.txs["claim"]
    assert net.market.events("ResultCommitted", task_id=handle.task_id) == []
    done = fresh.task(tid)
    assert done is not None and done.stage is TaskStage.SETTLED
    assert net.registry.reputation(fresh.address).slashed == 0


def test_same_bundle_gives_the_same_output_hash(net: Devnet) -> None:
    bundle = _bundle(net)
    cid = net.store.put(encode_bundle(bundle))
    first = net.nodes[0].run_bundle(bundle, cid)
    again = net.nodes[0].run_bundle(bundle, cid)
    other = net.nodes[1].run_bundle(bundle, cid)  # a separately loaded copy of the model
    assert first.output_hash == again.output_hash == other.output_hash
    assert first.token_ids == again.token_ids == other.token_ids
    one = net.run_task(bundle, replicas=1)
    two = net.run_task(bundle, replicas=1)
    assert one.output_hash == two.output_hash == first.output_hash
    assert one.task_id != two.task_id


# ---------------------------------------------------------------------------- refusals


def _assert_refused_by_all(
    net: Devnet, params: TaskParams, fragment: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="chefsplan_agents.node"):
        net.step()
    tid = "0x" + net.market.task_id(params).hex()
    assert _claims(net, params) == 0
    assert net.market.task_state(net.market.task_id(params)).claimed == 0
    for node in net.nodes:
        record = node.task(tid)
        assert record is not None and record.stage is TaskStage.REFUSED, node
        assert fragment in (record.reason or "")
        assert node.refusals()[tid] == record.reason
        assert net.registry.reputation(node.address).slashed == 0
        assert net.market.replica(net.market.task_id(params), node.address).state == 0
    assert fragment in caplog.text


def test_refuses_bundle_whose_hash_differs_from_the_task(
    net: Devnet, caplog: pytest.LogCaptureFixture
) -> None:
    data = encode_bundle(_bundle(net))
    params = _post_raw(net, data, bundle_hash=hashlib.sha256(b"another bundle").digest())
    _assert_refused_by_all(net, params, "the task names", caplog)


def test_refuses_content_that_does_not_match_its_cid(
    net: Devnet, caplog: pytest.LogCaptureFixture
) -> None:
    data = encode_bundle(_bundle(net, messages=({"role": "user", "content": "tamper me"},)))
    params = _post_raw(net, data)
    cid = parse_cid(
        net.market.events("TaskPosted", task_id=net.market.task_id(params))[0].args["bundleCid"]
    )
    store: ContentStore = net.store
    store._write_block(cid.multihash, data.replace(b"tamper", b"TAMPER"))  # type: ignore[attr-defined]
    _assert_refused_by_all(net, params, "cannot be fetched", caplog)


def test_refuses_unknown_model_hash(net: Devnet, caplog: pytest.LogCaptureFixture) -> None:
    data = encode_bundle(_bundle(net, model=ModelRequirement(sha256="ab" * 32)))
    _assert_refused_by_all(net, _post_raw(net, data), "wants model sha256", caplog)


def test_refuses_over_the_token_limit(net: Devnet, caplog: pytest.LogCaptureFixture) -> None:
    data = encode_bundle(_bundle(net, params=GenerationParams(max_tokens=MAX_TOKENS + 1)))
    _assert_refused_by_all(net, _post_raw(net, data), "over this node's limit", caplog)


def test_refuses_malformed_bundle(net: Devnet, caplog: pytest.LogCaptureFixture) -> None:
    data = b'{"schema_version": 1, "type": "chefsplan.TaskBundle", "kind": "chat"}'
    _assert_refused_by_all(net, _post_raw(net, data), "malformed bundle", caplog)


def test_refuses_bundle_with_a_forged_signature(
    net: Devnet, caplog: pytest.LogCaptureFixture
) -> None:
    bundle = _bundle(net)
    forged = bundle.model_copy(update={"params": GenerationParams(max_tokens=33)})
    _assert_refused_by_all(net, _post_raw(net, encode_bundle(forged)), "signature", caplog)


def test_refuses_a_bounty_below_its_minimum(net: Devnet, caplog: pytest.LogCaptureFixture) -> None:
    data = encode_bundle(_bundle(net))
    params = _post_raw(net, data, bounty=MIN_BOUNTY - 1)
    _assert_refused_by_all(net, params, "below this node's minimum", caplog)


# ---------------------------------------------------------------------------- restarts


def test_restarted_node_resumes_its_claimed_task(net: Devnet) -> None:
    node = net.nodes[0]
    node.store = FailingPuts(net.store)  # type: ignore[assignment]
    node.retry = RetryPolicy(attempts=1)
    handle = net.delegate("Survive a crash", replicas=1)
    net.step()  # node 0 claims, runs the model, then cannot store the result
    tid = "0x" + handle.task_id.hex()
    crashed = node.task(tid)
    assert crashed is not None and crashed.stage is TaskStage.CLAIMED
    assert crashed.salt and crashed.txs["claim"]

    fresh = net.restart_node(0)  # nothing kept in memory; same key and state folder
    assert fresh is not node and fresh.store is net.store
    receipt = net.wait(handle, timeout=60)

    [replica] = receipt.replicas
    assert replica.address == fresh.address
    assert replica.claim_tx == crashed.txs["claim"]  # the same claim, not a new one
    done = fresh.task(tid)
    assert done is not None and done.stage is TaskStage.SETTLED
    assert net.registry.reputation(fresh.address).slashed == 0


def test_a_reopened_replica_is_picked_up_by_another_node(net: Devnet) -> None:
    stuck = net.nodes[0]
    stuck.store = FailingPuts(net.store)  # type: ignore[assignment]
    stuck.retry = RetryPolicy(attempts=1)
    try:
        # Long enough for the node's policy: its estimate plus the 30 s chain margin.
        timeouts = Timeouts(commit_timeout=60)
        handle = net.delegate("Left hanging", replicas=1, bond=BOND, timeouts=timeouts)
        # Ticks by hand: an idle Devnet.step() would jump the clock past the claim window.
        with pytest.raises(StoreUnavailable):
            stuck.tick()  # claims, runs the model, cannot store the result: never commits
        assert net.market.replica(handle.task_id, stuck.address).state.name == "CLAIMED"
        for node in net.nodes[1:]:
            node.tick()  # the only replica is taken: they pass it over or lose the claim race
        assert _claims(net, handle.params) == 1

        assert net.requester.reopen_stale(handle) == []  # not due before the commit deadline
        net.chain.advance_time(61)
        owed_before = net.market.balance_of(net.requester.address)
        slashed_before = net.registry.reputation(stuck.address).slashed
        assert net.requester.reopen_stale(handle) == [stuck.address]
        assert net.market.balance_of(net.requester.address) - owed_before == BOND
        assert net.registry.reputation(stuck.address).slashed == slashed_before + 1

        for _ in range(3):  # a healthy node sees ReplicaReopened and takes the freed slot
            for node in net.nodes[1:]:
                node.tick()
        receipt = net.wait(handle, timeout=60)
        winner = next(r for r in receipt.replicas if r.reveal_tx)
        assert winner.address in {n.address for n in net.nodes[1:]}
        assert receipt.output == SCRIPTED_OUTPUT
        assert receipt.settlement.winners == 1
    finally:
        net.restart_node(0)  # a fresh node 0 with the shared store for the tests after this


def test_restart_between_commit_and_reveal_reveals(net: Devnet) -> None:
    handle = net.delegate("Commit, crash, reveal", replicas=3, quorum=2)
    # One round: every node claims and commits; the last one to commit also reveals.
    for node in net.nodes:
        node.tick()
    tid = "0x" + handle.task_id.hex()
    waiting = [i for i, n in enumerate(net.nodes) if n.task(tid).stage is TaskStage.COMMITTED]  # type: ignore[union-attr]
    assert waiting
    for i in waiting:
        net.restart_node(i)
    receipt = net.wait(handle, timeout=60)
    assert receipt.settlement.winners == 3
    assert all(r.reveal_tx for r in receipt.replicas)


# ---------------------------------------------------------------------------- the loop


def test_run_forever_returns_on_stop(net: Devnet) -> None:
    node = net.nodes[2]
    worker = threading.Thread(target=node.run_forever, kwargs={"poll_interval": 0.01})
    worker.start()
    node.stop()
    worker.join(timeout=30)
    assert not worker.is_alive()


def test_retry_policy_retries_only_unavailability() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ChainUnavailable("node at http://127.0.0.1:8545 refused the connection")
        return "ok"

    assert RetryPolicy(attempts=3, base_s=0).run("read", flaky) == "ok"
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(ChainUnavailable):
        RetryPolicy(attempts=2, base_s=0).run("read", flaky)
    assert len(calls) == 2

    def broken() -> None:
        calls.append(1)
        raise NodeError("not retried")

    calls.clear()
    with pytest.raises(NodeError):
        RetryPolicy(attempts=5, base_s=0).run("read", broken)
    assert len(calls) == 1


# ---------------------------------------------------------------------------- policy, state


def test_policy_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError, match="max_tokens"):
        NodePolicy(max_tokens=0)
    with pytest.raises(ConfigError, match="min_bounty_wei"):
        NodePolicy(min_bounty_wei=-1)


def test_policy_price_and_model_name(net: Devnet) -> None:
    policy = NodePolicy(price_per_1k_tokens_wei=10**18)
    params = net.market.new_task(b"\x01" * 32, bounty_per_replica=10**15, bond=1)
    bundle = _bundle(net)
    with pytest.raises(TaskRefused, match="price"):
        policy.check_bundle(bundle, params, model_sha256=net.model_sha256, model_name="x")
    named = _bundle(net, model=ModelRequirement(name="other-model"))
    with pytest.raises(TaskRefused, match="other-model"):
        NodePolicy().check_bundle(named, params, model_sha256=net.model_sha256, model_name="x")
    NodePolicy().check_bundle(
        _bundle(net, model=ModelRequirement(name="x")),
        params,
        model_sha256=net.model_sha256,
        model_name="x",
    )


def test_state_store_round_trip_and_corruption(tmp_path: Any) -> None:
    store = NodeStateStore(tmp_path / "state")
    params = TaskParams(Identity.generate().address, b"\x02" * 32, 3, 2, 5, 6, 7, 8, 20, 0, 9)
    record = TaskRecordState("0xab", params, "bafyx", TaskStage.CLAIMING, salt="0x" + "11" * 32)
    store.save(record.with_tx("claim", "0xdead", 21000))
    loaded = store.load("0xab")
    assert loaded is not None
    assert loaded.params == params and loaded.salt == record.salt
    assert loaded.txs == {"claim": "0xdead"} and loaded.gas == {"claim": 21000}
    assert [r.task_id for r in store.active()] == ["0xab"]
    store.save(loaded.advance(TaskStage.SETTLED))
    assert store.active() == []
    assert NodeStateStore(tmp_path / "state").active() == []  # finished work stays finished
    store.save(loaded)
    assert store.cursor is None
    store.cursor = 42
    assert NodeStateStore(tmp_path / "state").cursor == 42
    (tmp_path / "state" / "tasks" / "0xab.json").write_text("{not json")
    with pytest.raises(NodeError, match="unreadable"):
        store.load("0xab")


def test_requester_rejects_bad_terms(net: Devnet) -> None:
    with pytest.raises(MarketError, match="quorum 1 is invalid for 3"):
        net.requester.delegate("x", replicas=3, quorum=1, bounty_per_replica=1, bond=1, model="m")
    with pytest.raises(MarketError, match="replicas must be between"):
        net.requester.delegate("x", replicas=0, bounty_per_replica=1, bond=1, model="m")
    with pytest.raises(MarketError, match="needs a model"):
        net.requester.delegate("x", bounty_per_replica=1, bond=1)
    with pytest.raises(MarketError, match="positive"):
        net.requester.delegate("x", bounty_per_replica=0, bond=1, model="m")


def test_unclaimed_task_times_out_with_a_clear_error(net: Devnet) -> None:
    from chefsplan_agents.errors import DelegationTimeout

    bundle = _bundle(net, model=ModelRequirement(sha256="cd" * 32))  # nobody runs this model
    handle = net.requester.delegate(
        bundle, bounty_per_replica=BOUNTY, bond=BOND, timeouts=Timeouts(claim_window=60)
    )
    with pytest.raises(DelegationTimeout, match="0/1 claimed"):
        net.requester.wait_result(handle, timeout=0.0, step=net.step)


def test_node_constructor_adds_its_key_to_the_chain(net: Devnet, tmp_path: Any) -> None:
    identity = Identity.generate()
    node = ProviderNode(
        identity,
        net.chain,
        net.registry,
        net.market,
        net.store,
        net.nodes[0].llm,
        state_dir=str(tmp_path / "n"),
    )
    assert node.address == identity.address
    assert identity.address in net.chain.accounts


class _CountingMarket:
    """A market client that counts ``task_state`` reads; everything passes through."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.state_reads = 0

    def task_state(self, *args: Any, **kwargs: Any) -> Any:
        self.state_reads += 1
        return self._inner.task_state(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_full_tasks_are_passed_over_without_reading_each_one(net: Devnet) -> None:
    watcher, other = net.nodes[2], net.nodes[1]
    handles = [net.delegate(f"Taken already {i}", replicas=1) for i in range(4)]
    other.tick()  # another provider takes (and serves) every task before the watcher looks
    assert all(_claims(net, h.params) == 1 for h in handles)
    counting = _CountingMarket(watcher.market)
    watcher.market = counting  # type: ignore[assignment]
    try:
        watcher.tick()
    finally:
        watcher.market = counting._inner
    assert counting.state_reads == 0  # the claim events said it all
    for handle in handles:
        record = watcher.task("0x" + handle.task_id.hex())
        assert record is not None and record.stage is TaskStage.REFUSED
        assert record.reason == "all 1 replicas are already claimed"


class _SlowLostClaim:
    """A market client whose claim reaches the chain late, after a rival claimed the slot."""

    def __init__(self, inner: Any, rival: str) -> None:
        self._inner = inner
        self._rival = rival

    def claim(self, params: TaskParams, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.2)  # the model starts meanwhile (the node waits 50 ms at most)
        self._inner.claim(params, sender=self._rival)
        return self._inner.claim(params, *args, **kwargs)  # reverts: the task is full

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _WatchedModel:
    """Records how each generation ended; everything else passes through."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.endings: list[str] = []

    def complete(self, *args: Any, **kwargs: Any) -> Any:
        try:
            out = self._inner.complete(*args, **kwargs)
        except NodeError as err:
            self.endings.append(str(err))
            raise
        self.endings.append("finished")
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_claim_lost_mid_run_stops_the_model(tmp_path: Any) -> None:
    with Devnet.create(nodes=2, model="stub:1", workdir=tmp_path) as slow:
        node, rival = slow.nodes
        node.market = _SlowLostClaim(node.market, rival.address)  # type: ignore[assignment]
        watched = _WatchedModel(node.llm)
        node.llm = watched  # type: ignore[assignment]
        handle = slow.delegate("Too late", replicas=1)
        node.tick()
        record = node.task("0x" + handle.task_id.hex())
        assert record is not None and record.stage is TaskStage.LOST
        assert "TaskFull" in (record.reason or "")
        # The run started while the claim was in flight and stopped when it failed.
        assert watched.endings == ["generation stopped: the claim did not go through"]


def test_crash_during_inference_resumes_the_landed_claim(
    net: Devnet, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = net.nodes[0]

    def power_cut(*_args: Any, **_kwargs: Any) -> Any:
        raise SystemExit("power cut")

    monkeypatch.setattr(node, "run_bundle", power_cut)
    handle = net.delegate("Crash mid-generation", replicas=1)
    with pytest.raises(SystemExit):
        node.tick()  # the claim lands while the model "runs", then the process dies
    tid = "0x" + handle.task_id.hex()
    crashed = node.task(tid)
    assert crashed is not None and crashed.stage is TaskStage.CLAIMING
    assert net.market.replica(handle.task_id, node.address).state == 1  # CLAIMED on chain

    fresh = net.restart_node(0)
    receipt = net.wait(handle, timeout=60)
    [replica] = receipt.replicas
    assert replica.address == fresh.address
    assert receipt.output == SCRIPTED_OUTPUT
    done = fresh.task(tid)
    assert done is not None and done.stage is TaskStage.SETTLED


def test_node_serves_jobs_over_its_signed_http_api(net: Devnet, tmp_path: Any) -> None:
    from chefsplan_agents.errors import JobFailed
    from chefsplan_agents.node import NodeHttpClient

    node = ProviderNode(
        Identity.generate(),
        net.chain,
        net.registry,
        net.market,
        net.store,
        net.nodes[0].llm,
        state_dir=str(tmp_path / "http-node"),
        policy=NodePolicy(max_tokens=MAX_TOKENS),
    )
    with node:
        server = node.serve_http(allowed_requesters=[net.requester.identity.did])
        assert node.endpoint == server.url
        assert node.build_offer(node.measure(4)).endpoint == server.url
        client = NodeHttpClient(server.url, net.requester.identity, node.did)
        job = client.start_job(_bundle(net))
        done = client.wait(job.job_id, timeout=60)
        assert done.result is not None
        assert done.result.output == SCRIPTED_OUTPUT and done.result.node_did == node.did
        assert net.store.has(done.result_cid or "")
        too_long = client.start_job(
            _bundle(net, params=GenerationParams(max_tokens=MAX_TOKENS + 1))
        )
        with pytest.raises(JobFailed, match="over this node's limit"):
            client.wait(too_long.job_id, timeout=60)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--deploy", "--contracts", "{}", "--store-path", "s"], "either --deploy or --contracts"),
        (["--store-path", "s"], "say which contracts to use"),
        (["--deploy"], "exactly one content store"),
        (["--deploy", "--ipfs", "/ip4/127.0.0.1/tcp/5001", "--store-path", "s"], "exactly one"),
        (["--deploy", "--store-path", "s", "--tag", "Region=EU"], "tag key 'Region'"),
        (["--deploy", "--store-path", "s", "--tag", "jurisdiction"], "is not key=value"),
    ],
)
def test_cli_node_run_bad_flags_are_one_line_errors(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    from chefsplan_agents.cli import run

    assert run(["node", "run", "--keystore", str(tmp_path / "k.json"), *flags]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_cli_node_run_missing_keystore_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    from chefsplan_agents.cli import run

    args = ["node", "run", "--keystore", str(tmp_path / "none.json"), "--deploy"]
    assert run([*args, "--store-path", str(tmp_path / "s")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "no keystore" in lines[0]


def test_failed_claim_is_recorded_once_and_costs_nothing(net: Devnet, tmp_path: Any) -> None:
    stranger = ProviderNode(  # funded but never registered: the market refuses its claim
        Identity.generate(),
        net.chain,
        net.registry,
        net.market,
        net.store,
        net.nodes[0].llm,
        state_dir=str(tmp_path / "stranger"),
    )
    net.chain.transfer(stranger.address, 10**18)
    stranger.state.cursor = net.chain.block_number()
    handle = net.delegate("Who may claim?", replicas=1)
    assert stranger.tick() == 1
    record = stranger.task(handle.task_id)
    assert record is not None and record.stage is TaskStage.LOST
    assert "claim failed" in (record.reason or "") and "NotActiveProvider" in (record.reason or "")
    assert stranger.tick() == 0  # not retried
    receipt = net.wait(handle, timeout=60)
    assert stranger.address not in {r.address for r in receipt.replicas}


def test_refused_reveal_and_finalize_falls_back_to_reveal_then_finalize(
    net: Devnet, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chefsplan_agents.chain.errors import RevealDataMismatch

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise RevealDataMismatch("TaskMarket.revealAndFinalize reverted: RevealDataMismatch")

    monkeypatch.setattr(net.market, "reveal_and_finalize", refuse)  # the nodes share it
    receipt = net.run_task("Settle the long way", replicas=1)
    [replica] = receipt.replicas
    assert replica.reveal_tx and receipt.finalize_tx != replica.reveal_tx
    assert receipt.output == SCRIPTED_OUTPUT
