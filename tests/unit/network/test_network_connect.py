"""``connect()`` and ``Devnet.network``: the app's handle on the network."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest

import chefsplan_agents
from chefsplan_agents.config import Settings, load_settings
from chefsplan_agents.devnet import Devnet
from chefsplan_agents.errors import ChainUnavailable, ConfigError, KeystoreError
from chefsplan_agents.identity import Identity
from chefsplan_agents.llm import SCRIPTED_OUTPUT
from chefsplan_agents.network import EMBEDDED_REQUESTER_FUNDS_WEI, Network, connect
from chefsplan_agents.tools import ToolFailure, delegate_task, tool_specs

ZERO_ADDRESSES = {
    "AgentRegistry": "0x" + "11" * 20,
    "TaskMarket": "0x" + "22" * 20,
    "OutputLog": "0x" + "33" * 20,
}


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    return load_settings(tmp_path / "none.toml", env={}, data_dir=str(tmp_path), **overrides)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connect_opens_the_embedded_network_offline(tmp_path: Path) -> None:
    (tmp_path / "none.toml").write_text("")
    with connect(_settings(tmp_path)) as net:
        assert isinstance(net, Network)
        assert net.balance_wei() == EMBEDDED_REQUESTER_FUNDS_WEI
        assert net.identity.did.startswith("did:key:z6Mk")
        assert net.chain.code_at(net.deployment.market.address)
        cid = net.store.put(b"hello")
        assert (tmp_path / "blocks").is_dir() and net.store.get(cid) == b"hello"
        assert net.providers() == []  # no provider nodes until some register
        [spec] = tool_specs(["find_providers"])
        failure = spec.call(net, {})
        assert isinstance(failure, ToolFailure) and failure.error == "NoProviderFound"
    net.close()  # idempotent
    assert chefsplan_agents.connect is connect and chefsplan_agents.Network is Network


def test_connect_with_an_identity_and_a_memory_store(tmp_path: Path) -> None:
    (tmp_path / "none.toml").write_text("")
    me = Identity.generate()
    with connect(_settings(tmp_path, storage={"backend": "memory"}), identity=me) as net:
        assert net.identity is me and net.address == me.address
        assert not (tmp_path / "blocks").exists()


def test_connect_to_a_real_chain_needs_contracts(tmp_path: Path) -> None:
    (tmp_path / "none.toml").write_text("")
    settings = _settings(tmp_path, chain={"backend": "jsonrpc"})
    with pytest.raises(ConfigError, match="chain.contracts is empty"):
        connect(settings)


def test_connect_to_an_unreachable_chain(tmp_path: Path) -> None:
    (tmp_path / "none.toml").write_text("")
    url = f"http://127.0.0.1:{_closed_port()}"
    settings = _settings(
        tmp_path, chain={"backend": "jsonrpc", "rpc_url": url, "contracts": ZERO_ADDRESSES}
    )
    with pytest.raises(ChainUnavailable) as caught:
        connect(settings, identity=Identity.generate())
    assert "\n" not in str(caught.value)


def test_connect_to_a_real_chain_without_a_keystore(tmp_path: Path) -> None:
    (tmp_path / "none.toml").write_text("")
    settings = _settings(tmp_path, chain={"backend": "jsonrpc", "contracts": ZERO_ADDRESSES})
    with pytest.raises(KeystoreError):
        connect(settings)


def test_devnet_network_is_one_handle_over_the_devnet() -> None:
    with Devnet.create(nodes=1, model="tiny", n_threads=1, n_ctx=512) as devnet:
        net = devnet.network
        assert net is devnet.network
        assert net.requester is devnet.requester and net.store is devnet.store
        receipt = delegate_task(net, "Hi", max_tokens=16, trust="low")
        assert receipt.output == SCRIPTED_OUTPUT
        assert not devnet._open  # the devnet forgot the task once it settled
        assert devnet.market.balance_of(devnet.nodes[0].address) == 0  # node withdrew: drained
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        net.index.query()
