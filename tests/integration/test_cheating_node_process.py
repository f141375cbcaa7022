"""A ``chefsplan node run --testing-cheat`` process among honest ones, on anvil and IPFS.

The cheater registers and offers the pinned model like the others, then forges its result
(honest tokens, other text). In a three-replica task the two honest processes agree, the
cheater is outvoted, and its bond goes to the requester; its record on chain shows the loss.
"""

from __future__ import annotations

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

COMMON = ["--threads", "1", "--ctx", "512"]


def test_a_cheating_node_process_is_outvoted_and_slashed(
    chain: Chain, deployment: Deployment, ipfs_api: str, fleet: Fleet, rpc_url: str
) -> None:
    resolve_model("tiny")
    honest = fleet.start(2, chain_url=rpc_url, model="tiny", args=COMMON)
    [cheater] = fleet.start(
        1, chain_url=rpc_url, model="tiny", args=[*COMMON, "--testing-cheat", "text-swap"]
    )
    assert "TESTING MODE" in cheater.log()
    registry = RegistryClient(deployment.registry)
    market = MarketClient(deployment.market, from_block=deployment.deployed_at)
    requester_id = Identity.generate()
    chain.transfer(requester_id.address, 10 * ETHER)
    bond = 10**15
    with KuboStore(ipfs_api) as store:
        requester = Requester(requester_id, chain, market, store, registry=registry)
        handle = requester.delegate(
            "Serve the soup",
            replicas=3,
            quorum=2,
            bounty_per_replica=10**15,
            bond=bond,
            model=resolve_model("tiny").sha256,
            timeouts=Timeouts(claim_window=120, commit_timeout=120, reveal_window=300),
        )
        receipt = requester.wait_result(handle, timeout=180)
    assert receipt.output == SCRIPTED_OUTPUT
    assert receipt.settlement.winners == 2
    winners = {r.did for r in receipt.replicas if r.output_hash == receipt.output_hash}
    assert winners == {n.ready["did"] for n in honest}
    address = cheater.ready["address"]
    rep = registry.reputation(address)
    assert (rep.won, rep.lost, rep.slashed) == (0, 1, 1)
    # The honest processes are paid bounty + bond; the cheater's bond went to the requester.
    assert market.balance_of(address) == 0
    for node in honest:
        assert registry.reputation(node.ready["address"]).won == 1
    assert fleet.stop() == [0, 0, 0]
