"""A three-node devnet with the scripted tiny model, and a verifier running the same model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from devnet_helpers import tagged_devnet, tiny_verifier

from chefsplan_agents.devnet import Devnet
from chefsplan_agents.llm import LlamaCppBackend
from chefsplan_agents.network import Network
from chefsplan_agents.verify import VerificationPolicy

ALWAYS_CHECK = VerificationPolicy(established_wins=10**9)


@pytest.fixture(scope="package")
def devnet() -> Iterator[Devnet]:
    with tagged_devnet() as net:
        yield net


@pytest.fixture(scope="package")
def verifier() -> Iterator[LlamaCppBackend]:
    with tiny_verifier() as backend:
        yield backend


@pytest.fixture
def network(devnet: Devnet) -> Iterator[Network]:
    """The devnet's handle, without a verifier unless a test sets one."""
    net = devnet.network
    net.verifier = None
    # Every provider re-scored at trust normal: a sampled check would make these tests depend
    # on a secret random draw once the shared devnet's nodes are established.
    net.verification = ALWAYS_CHECK
    yield net
    net.verifier = None


@pytest.fixture
def sibling(devnet: Devnet) -> Iterator[object]:
    """Build more handles on the devnet: another requester, policy or store (closed after)."""
    from chefsplan_agents.identity import Identity
    from chefsplan_agents.market import Requester
    from chefsplan_agents.network import InProcessDriver

    made: list[Network] = []

    def build(*, funds: int = 10**18, store: object = None, **kwargs: object) -> Network:
        identity = Identity.generate()
        if funds:
            devnet.chain.transfer(identity.address, funds)
        content = store or devnet.store
        requester = Requester(
            identity, devnet.chain, devnet.market, content, registry=devnet.registry
        )
        net = Network(
            chain=devnet.chain,
            deployment=devnet.deployment,
            store=content,
            requester=requester,
            driver=InProcessDriver(step=devnet.step, settled=lambda _h: devnet.drain()),
            **kwargs,
        )
        made.append(net)
        return net

    yield build
    for net in made:
        net.close()
