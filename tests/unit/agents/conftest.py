"""A three-node devnet with the scripted tiny model, a verifier running the same model, and
helpers to run the agents' team and read what it did."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from devnet_helpers import tagged_devnet, tiny_verifier

from chefsplan_agents.config import PolicySettings
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
    """The devnet's handle: no verifier and no policy unless a test sets them."""
    net = devnet.network
    net.verifier = None
    net.policy = PolicySettings()
    # Every provider re-scored at trust normal: a sampled check would make these tests depend
    # on a secret random draw once the shared devnet's nodes are established.
    net.verification = ALWAYS_CHECK
    yield net
    net.verifier = None
    net.policy = PolicySettings()
