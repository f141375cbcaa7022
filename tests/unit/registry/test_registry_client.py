"""Registry records: reputation arithmetic and client construction."""

from __future__ import annotations

import pytest

from chefsplan_agents.chain import EmbeddedChain, deploy_contracts
from chefsplan_agents.errors import ChainError, RegistryError
from chefsplan_agents.registry import RegistryClient, Reputation


def test_reputation_score() -> None:
    assert Reputation().success_rate == 0.5 and Reputation().tasks == 0
    good = Reputation(won=8, audits_passed=2)
    bad = Reputation(won=1, lost=3, slashed=4, audits_failed=1)
    assert good.success_rate == pytest.approx(11 / 12)
    assert bad.success_rate == pytest.approx(2 / 8)  # a loss is also counted as a slash
    assert bad.tasks == 4
    assert good.success_rate > Reputation().success_rate > bad.success_rate


def test_client_binds_only_a_registry() -> None:
    with EmbeddedChain(accounts=2) as chain:
        deployment = deploy_contracts(chain)
        client = RegistryClient.at(chain, deployment.registry.address)
        assert client.address == deployment.registry.address and client.chain is chain
        assert client.get_provider(chain.accounts[1]) is None
        assert client.reputation(chain.accounts[1]) == Reputation()
        with pytest.raises(RegistryError, match="needs an AgentRegistry"):
            RegistryClient(deployment.market)
        with pytest.raises(ChainError, match="offer_hash must be 32 bytes"):
            client.register("did:key:z", "bafy", b"short", stake=10**16)
        with pytest.raises(ChainError, match="provider must be an EVM address"):
            client.get_provider("nobody")
