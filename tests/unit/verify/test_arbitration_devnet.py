"""trust="high" on a devnet: replicas that disagree are arbitrated by re-score, not failed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chefsplan_agents.bundles import ResultBundle, TaskBundle
from chefsplan_agents.devnet import Devnet
from chefsplan_agents.llm import LlamaCppBackend
from chefsplan_agents.node import ProviderNode
from chefsplan_agents.testing import Cheat, Lazy, TextSwap
from chefsplan_agents.tools import delegate_task


def _cheating(node: ProviderNode, cheat: Cheat) -> None:
    """Make ``node`` answer with ``cheat``'s forgeries (its chain and storage code unchanged)."""

    def run(bundle: TaskBundle, bundle_cid: str, **_: object) -> ResultBundle:
        return cheat.forge(bundle, bundle_cid, node.llm, node.identity)

    node.run_bundle = run  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def devnet() -> Iterator[Devnet]:
    with Devnet.create(nodes=3, model="tiny", share_model=True, n_threads=1, n_ctx=512) as net:
        yield net


def test_no_hash_quorum_is_settled_by_the_one_result_that_passes(
    devnet: Devnet, scripted: LlamaCppBackend
) -> None:
    honest, lazy, swap = devnet.nodes
    _cheating(lazy, Lazy())
    _cheating(swap, TextSwap())
    network = devnet.network
    network.verifier = scripted
    try:
        receipt = delegate_task(network, "Say hi", max_tokens=16, trust="high")
    finally:
        network.verifier = None
    assert receipt.replicas == 3 and receipt.agreed == 1  # three different output hashes
    assert receipt.verification is not None and receipt.verification.passed
    winner = next(c for c in receipt.committers if c.agreed)
    assert winner.address.lower() == honest.address.lower()
    reason = receipt.verification.reason.lower()
    assert lazy.address.lower() in reason and swap.address.lower() in reason
