"""A challenge decided by ``chefsplan node run`` processes on their own, on anvil and IPFS.

Four node processes register; one forges its results (``--testing-cheat text-swap``). A task
with a challenge window is assigned to the cheater; a watcher in this process re-scores the
revealed result, publishes evidence and challenges. The three honest processes are the only
providers outside the task, so the panel is exactly them: each re-scores with its own model,
commits, reveals, and the challenge is resolved and the task settled with nobody driving them.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from _fleet import ETHER, Fleet

from chefsplan_agents.chain import Chain, Deployment
from chefsplan_agents.identity import Identity
from chefsplan_agents.llm import LlamaCppBackend, resolve_model
from chefsplan_agents.market import MarketClient, TaskResult
from chefsplan_agents.market._requester import Requester, Timeouts
from chefsplan_agents.registry import RegistryClient
from chefsplan_agents.storage import KuboStore
from chefsplan_agents.verify import Watcher, WatchStage

pytestmark = pytest.mark.integration

COMMON = ["--threads", "1", "--ctx", "512"]
WAIT_S = 300


def test_node_processes_decide_a_challenge_on_their_own(
    chain: Chain, deployment: Deployment, ipfs_api: str, fleet: Fleet, rpc_url: str, tmp_path: Path
) -> None:
    model = resolve_model("tiny")
    honest = fleet.start(3, chain_url=rpc_url, model="tiny", args=COMMON)
    [cheater] = fleet.start(
        1, chain_url=rpc_url, model="tiny", args=[*COMMON, "--testing-cheat", "text-swap"]
    )
    registry = RegistryClient(deployment.registry)
    market = MarketClient(deployment.market, from_block=deployment.deployed_at)
    requester_id, watcher_id = Identity.generate(), Identity.generate()
    chain.transfer(requester_id.address, 10 * ETHER)
    watcher_address = chain.add_account(watcher_id.export_secrets()[1])
    chain.transfer(watcher_address, ETHER)
    stake_before = registry.get_provider(cheater.address).stake  # type: ignore[union-attr]
    with KuboStore(ipfs_api) as store, LlamaCppBackend(model, n_threads=1, n_ctx=512) as llm:
        requester = Requester(requester_id, chain, market, store, registry=registry)
        handle = requester.delegate(
            "Serve the soup",
            replicas=1,
            bounty_per_replica=10**15,
            bond=10**15,
            model=model.sha256,
            timeouts=Timeouts(
                claim_window=120, commit_timeout=120, reveal_window=300, challenge_window=60
            ),
            assignee=cheater.address,
        )
        watcher = Watcher(watcher_address, chain, market, store, llm, state_dir=tmp_path / "w")
        deadline = time.monotonic() + WAIT_S
        while not market.events("TaskFinalized", task_id=handle.task_id):
            assert time.monotonic() < deadline, "the challenged task did not settle"
            watcher.tick()
            # A live chain mines a block every few seconds; anvil mines on demand, and time
            # only moves on chain (for the settlement time) when a block is mined.
            chain.mine()
            time.sleep(1.0)
        while watcher.busy and time.monotonic() < deadline:
            watcher.tick()
            time.sleep(0.5)

    challenged = market.events("TaskChallenged", task_id=handle.task_id)
    assert [str(e.args["challenger"]) for e in challenged] == [watcher_address]
    drawn = market.events("PanelDrawn", task_id=handle.task_id)[0]
    assert {str(a) for a in drawn.args["panel"]} == {n.address for n in honest}
    resolved = market.events("ChallengeResolved", task_id=handle.task_id)[0]
    assert resolved.args["upheld"] is True and int(resolved.args["upholdVotes"]) == 3
    finalized = market.events("TaskFinalized", task_id=handle.task_id)[0]
    assert TaskResult(int(finalized.args["result"])) is TaskResult.OVERTURNED
    cheater_record = registry.get_provider(cheater.address)
    assert cheater_record is not None
    assert cheater_record.stake == stake_before - 10**15
    assert cheater_record.reputation.audits_failed == 1
    record = watcher.record(handle.task_id)
    assert record is not None and record.stage is WatchStage.DONE and record.upheld
    assert fleet.stop() == [0, 0, 0, 0]
