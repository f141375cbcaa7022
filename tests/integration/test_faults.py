"""Faults injected into a running market: a node killed mid-task, the IPFS daemon restarted,
the chain node unreachable for a while.

Provider nodes are ``chefsplan node run`` OS processes on the stub model (it sleeps a few
seconds per task, which leaves room to strike mid-task); the requester runs in the test process.
Each case checks that nothing is lost: the task settles, the result is fetched by CID and
verified against the settled hash, and every wei the market holds is owed to someone.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from _fleet import ETHER, Fleet
from _proxy import CuttableProxy

from chefsplan_agents.chain import Chain, Deployment
from chefsplan_agents.identity import Identity
from chefsplan_agents.llm import STUB_MODEL_SHA256, ChatMessage, StubBackend
from chefsplan_agents.market import MarketClient, ReplicaState
from chefsplan_agents.market._requester import (
    DelegationReceipt,
    Requester,
    TaskHandle,
    Timeouts,
)
from chefsplan_agents.registry import RegistryClient
from chefsplan_agents.storage import KuboStore

pytestmark = pytest.mark.integration

SERVERS = Path(__file__).resolve().parents[2] / "tools" / "servers.py"
BOUNTY = 10**15
BOND = 2 * 10**15
PROMPT = "Serve the soup"


def _wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


@pytest.fixture()
def market(deployment: Deployment) -> MarketClient:
    return MarketClient(deployment.market, from_block=deployment.deployed_at)


@pytest.fixture()
def registry(deployment: Deployment) -> RegistryClient:
    return RegistryClient(deployment.registry)


@pytest.fixture()
def store(ipfs_api: str) -> Iterator[KuboStore]:
    with KuboStore(ipfs_api) as opened:
        yield opened


@pytest.fixture()
def requester(
    chain: Chain, market: MarketClient, registry: RegistryClient, store: KuboStore
) -> Requester:
    identity = Identity.generate()
    chain.transfer(identity.address, 10 * ETHER)
    return Requester(identity, chain, market, store, registry=registry)


def _expected_output() -> str:
    llm = StubBackend(0.0)
    return llm.chat([ChatMessage(role="user", content=PROMPT)]).text


def _post(requester: Requester, replicas: int, timeouts: Timeouts) -> TaskHandle:
    return requester.delegate(
        PROMPT,
        replicas=replicas,
        quorum=replicas,
        bounty_per_replica=BOUNTY,
        bond=BOND,
        model=STUB_MODEL_SHA256,
        timeouts=timeouts,
    )


def _claims(requester: Requester, handle: TaskHandle) -> list[str]:
    events = requester.market.contract.get_logs(
        "ReplicaClaimed", from_block=handle.posted_block, filters={"taskId": handle.task_id}
    )
    return [str(e.args["provider"]) for e in events]


def _assert_nothing_lost(
    chain: Chain,
    market: MarketClient,
    registry: RegistryClient,
    store: KuboStore,
    receipt: DelegationReceipt,
    accounts: list[str],
) -> None:
    """The task settled with the stub's answer, the result is on IPFS under the settled CID,
    winners were paid and every wei still in the market is owed to one of ``accounts``."""
    assert receipt.output == _expected_output()
    assert store.has(receipt.result_cid)
    assert not market.task_state(receipt.task_id).open
    winners = {r.address for r in receipt.replicas if r.output_hash == receipt.output_hash}
    assert len(winners) == receipt.settlement.winners >= 1
    for address in winners:
        record = registry.get_provider(address)
        assert record is not None and record.reputation.won == 1
    owed = sum(market.balance_of(a) for a in accounts)
    assert chain.balance(market.address) == owed


def test_a_killed_node_is_slashed_and_another_serves_the_task(
    chain: Chain,
    market: MarketClient,
    registry: RegistryClient,
    store: KuboStore,
    requester: Requester,
    fleet: Fleet,
    rpc_url: str,
) -> None:
    nodes = fleet.start(2, chain_url=rpc_url, model="stub:4")
    # The commit window must fit the node's policy (twice its estimated run of the stub's
    # speed, plus a 30 s chain margin: ~125 s), or the node would run the task before claiming.
    timeouts = Timeouts(claim_window=3600, commit_timeout=180, reveal_window=600)
    handle = _post(requester, 1, timeouts)

    claimer = _wait_for("the first claim", lambda: _claims(requester, handle), 60, 0.05)[0]
    victim = next(n for n in nodes if n.address == claimer)
    survivor = next(n for n in nodes if n.address != claimer)
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(timeout=10)
    # Killed while its model ran: the claim stands, uncommitted.
    assert market.replica(handle.task_id, victim.address).state is ReplicaState.CLAIMED
    assert requester.reopen_stale(handle) == []  # not stale yet

    chain.advance_time(timeouts.commit_timeout + 1)
    assert requester.reopen_stale(handle) == [victim.address]
    assert market.replica(handle.task_id, victim.address).state is ReplicaState.REOPENED
    assert market.balance_of(requester.address) == BOND  # the dead node's bond
    victim_record = registry.get_provider(victim.address)
    assert victim_record is not None and victim_record.reputation.slashed == 1

    # The surviving daemon notices the freed slot by itself, claims it and serves the task.
    receipt = requester.wait_result(handle, timeout=120)
    assert [r.address for r in receipt.replicas] == [victim.address, survivor.address]
    assert receipt.result.node_did == survivor.did
    assert "was reopened; looking again" in survivor.log()
    _assert_nothing_lost(
        chain,
        market,
        registry,
        store,
        receipt,
        [requester.address, victim.address, survivor.address],
    )
    # The requester paid one bounty and got the dead node's bond: it is owed exactly the bond.
    assert market.balance_of(requester.address) == BOND


def test_nodes_ride_out_an_ipfs_daemon_restart(
    chain: Chain,
    market: MarketClient,
    registry: RegistryClient,
    store: KuboStore,
    requester: Requester,
    fleet: Fleet,
    rpc_url: str,
    ipfs_api: str,
) -> None:
    managed = subprocess.run(
        [sys.executable, str(SERVERS), "env"], capture_output=True, text=True, check=False
    )
    if ipfs_api not in managed.stdout:
        pytest.skip(
            f"not applicable: the IPFS daemon at {ipfs_api} was not started by tools/servers.py "
            "(set CHEFSPLAN_SERVERS_DIR to its state folder), so it cannot be restarted"
        )
    nodes = fleet.start(2, chain_url=rpc_url, model="stub:3")
    handle = _post(requester, 2, Timeouts(claim_window=600, commit_timeout=300))
    _wait_for("both claims", lambda: len(_claims(requester, handle)) == 2, 60, 0.05)

    # While the models run: the daemon goes away for 3 s and comes back on the same repo.
    restarted = subprocess.run(
        [sys.executable, str(SERVERS), "restart-ipfs", "--pause", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert restarted.returncode == 0, restarted.stderr
    # The restarted daemon is the one the nodes use (same port), not some other one.
    assert store.has(handle.bundle_cid)

    receipt = requester.wait_result(handle, timeout=180)
    assert {r.address for r in receipt.replicas} == {n.address for n in nodes}
    assert receipt.settlement.winners == 2
    logs = "".join(n.log() for n in nodes)
    assert "store result failed" in logs or "backing off" in logs, "no node saw the outage"
    _assert_nothing_lost(
        chain, market, registry, store, receipt, [requester.address, *(n.address for n in nodes)]
    )


def test_nodes_ride_out_an_unreachable_chain_node(
    chain: Chain,
    market: MarketClient,
    registry: RegistryClient,
    store: KuboStore,
    requester: Requester,
    fleet: Fleet,
    rpc_url: str,
) -> None:
    anvil = urlparse(rpc_url)
    assert anvil.hostname is not None and anvil.port is not None
    with CuttableProxy(anvil.hostname, anvil.port) as proxy:
        nodes = fleet.start(2, chain_url=proxy.url, model="stub:3")
        handle = _post(requester, 2, Timeouts(claim_window=600, commit_timeout=300))
        _wait_for("both claims", lambda: len(_claims(requester, handle)) == 2, 60, 0.05)

        # The nodes' chain node vanishes while their models run, past the time they commit.
        proxy.cut()
        time.sleep(8)
        assert market.task_state(handle.task_id).committed == 0  # nobody got through
        proxy.restore()

        receipt = requester.wait_result(handle, timeout=180)
        assert {r.address for r in receipt.replicas} == {n.address for n in nodes}
        assert receipt.settlement.winners == 2
        for node in nodes:
            assert "backing off" in node.log() or "retry" in node.log(), node.log()[-2000:]
        _assert_nothing_lost(
            chain,
            market,
            registry,
            store,
            receipt,
            [requester.address, *(n.address for n in nodes)],
        )
