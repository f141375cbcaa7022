"""Three provider nodes as separate OS processes, anvil and a real IPFS daemon.

The nodes are ``chefsplan node run`` processes; the requester runs in the test process. The
whole lifecycle goes through the real servers: offers and bundles on IPFS, registration, the
task, three claims, commits and reveals on anvil, settlement, the result fetched by CID; then
a task assigned to one of them, which it settles in one transaction.
"""

from __future__ import annotations

from typing import Any

import pytest
from _fleet import ETHER, Fleet

from chefsplan_agents.chain import Chain, Deployment
from chefsplan_agents.identity import Identity
from chefsplan_agents.llm import SCRIPTED_OUTPUT, resolve_model
from chefsplan_agents.market import MarketClient
from chefsplan_agents.market._requester import Requester, Timeouts
from chefsplan_agents.registry import RegistryClient
from chefsplan_agents.storage import KuboStore

pytestmark = pytest.mark.integration


@pytest.fixture()
def node_processes(fleet: Fleet, rpc_url: str) -> list[dict[str, Any]]:
    resolve_model("tiny")  # build the model once, before three processes want it
    nodes = fleet.start(
        3,
        chain_url=rpc_url,
        model="tiny",
        args=["--threads", "1", "--ctx", "512", "--http-port", "0"],
    )
    return [node.ready for node in nodes]


def test_three_node_processes_run_a_task_end_to_end(
    chain: Chain,
    deployment: Deployment,
    ipfs_api: str,
    node_processes: list[dict[str, Any]],
    fleet: Fleet,
) -> None:
    registry = RegistryClient(deployment.registry)
    market = MarketClient(deployment.market, from_block=deployment.deployed_at)
    for node in node_processes:
        record = registry.get_provider(node["address"])
        assert record is not None and record.active and record.did == node["did"]
        assert record.offer_cid == node["offer_cid"]
        assert node["endpoint"].startswith("http://127.0.0.1:")

    requester_id = Identity.generate()
    chain.transfer(requester_id.address, 10 * ETHER)
    with KuboStore(ipfs_api) as store:
        requester = Requester(requester_id, chain, market, store, registry=registry)
        stages: list[str] = []
        handle = requester.delegate(
            "Serve the soup",
            replicas=3,
            quorum=2,
            bounty_per_replica=10**15,
            bond=10**15,
            model=resolve_model("tiny").sha256,
            timeouts=Timeouts(claim_window=120, commit_timeout=120, reveal_window=300),
        )
        receipt = requester.wait_result(
            handle, timeout=180, on_progress=lambda p: stages.append(p.stage)
        )
        assert receipt.output == SCRIPTED_OUTPUT
        assert {r.did for r in receipt.replicas} == {n["did"] for n in node_processes}
        assert all(r.reveal_tx and r.output_hash == receipt.output_hash for r in receipt.replicas)
        assert receipt.settlement.winners == 3
        assert stages[-1] == "finalized"
        # The result is on the IPFS daemon, under the CID settled on chain.
        assert store.has(receipt.result_cid)

        # A task assigned to one of them: it runs first, then settles in one transaction.
        chosen = node_processes[1]
        handle = requester.delegate(
            "Serve the soup, you alone",
            bounty_per_replica=10**15,
            bond=10**15,
            model=resolve_model("tiny").sha256,
            timeouts=Timeouts(claim_window=120),
            assignee=chosen["address"],
        )
        receipt = requester.wait_result(handle, timeout=180)
        assert receipt.output == SCRIPTED_OUTPUT
        [replica] = receipt.replicas
        assert replica.did == chosen["did"]
        assert replica.claim_tx == replica.reveal_tx == receipt.finalize_tx
        assert store.has(receipt.result_cid)
    # A clean SIGTERM shutdown exits 0.
    assert fleet.stop() == [0, 0, 0]
