"""A three-node devnet with the scripted tiny model, a verifier running the same model, and
helpers to run the agents' team and read what it did."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chefsplan_agents.config import PolicySettings
from chefsplan_agents.devnet import Devnet
from chefsplan_agents.llm import LlamaCppBackend, resolve_model
from chefsplan_agents.network import Network


@pytest.fixture(scope="package")
def devnet() -> Iterator[Devnet]:
    # Signed offer tags: node 0 states another jurisdiction than nodes 1 and 2.
    tags = [
        {"jurisdiction": "US"},
        {"jurisdiction": "EU", "hardware": "cpu"},
        {"jurisdiction": "EU"},
    ]
    with Devnet.create(
        nodes=3, model="tiny", share_model=True, n_threads=1, n_ctx=512, node_tags=tags
    ) as net:
        yield net


@pytest.fixture(scope="package")
def verifier() -> Iterator[LlamaCppBackend]:
    with LlamaCppBackend(resolve_model("tiny"), n_threads=1, n_ctx=512) as backend:
        yield backend


@pytest.fixture
def network(devnet: Devnet) -> Iterator[Network]:
    """The devnet's handle: no verifier and no policy unless a test sets them."""
    net = devnet.network
    net.verifier = None
    net.policy = PolicySettings()
    yield net
    net.verifier = None
    net.policy = PolicySettings()
