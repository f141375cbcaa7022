"""The chain layer's seams: the factory, connection errors, keys, attaching, conversions.

Behaviour shared by every backend (transactions, reverts, nonces under threads, events) is in
``tests/conformance/test_chain.py``.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest
from eth_account import Account

from chefsplan_agents.chain import (
    Artifact,
    Chain,
    EmbeddedChain,
    JsonRpcChain,
    attach_contracts,
    deploy_contracts,
    load_artifact,
    open_chain,
    open_deployment,
    to_address,
    to_bytes32,
)
from chefsplan_agents.chain import errors as E
from chefsplan_agents.config import ChainSettings
from chefsplan_agents.errors import (
    ChainError,
    ChainUnavailable,
    ConfigError,
    ContractNotDeployed,
    TransactionFailed,
)

PROBE = Artifact.from_json(
    json.loads((Path(__file__).parent / "fixtures" / "Probe.json").read_text())
)
KEY = "0x" + "11" * 32


@pytest.fixture(scope="module")
def chain() -> Chain:
    with EmbeddedChain() as c:
        yield c  # type: ignore[misc]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_factory_defaults_to_embedded() -> None:
    with open_chain() as c:
        assert isinstance(c, EmbeddedChain)
        assert len(c.accounts) == 10
        assert c.endpoint == "the in-process EVM"
    with open_chain(ChainSettings(backend="embedded"), private_keys=[KEY]) as c:
        assert Account.from_key(KEY).address in c.accounts


def test_unreachable_rpc_is_a_one_line_chain_unavailable() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(ChainUnavailable) as info:
        open_chain(ChainSettings(backend="jsonrpc", rpc_url=url), private_keys=[KEY])
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        f"cannot reach the chain node at {url} (ConnectionError); start the node or fix "
        "chain.rpc_url"
    )
    assert isinstance(info.value, ConnectionError)


def test_rpc_url_must_be_http() -> None:
    with pytest.raises(ConfigError, match="not an http"):
        JsonRpcChain("127.0.0.1:8545")
    with pytest.raises(ConfigError, match="not an http"):
        JsonRpcChain("ws://127.0.0.1:8545")


def test_json_rpc_node_that_is_not_json_rpc() -> None:
    # A plain HTTP server that answers every request with a 404 page.
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class NotFound(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(404)
            self.end_headers()
            self.wfile.write(b"nope")

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(ChainError) as info:
            JsonRpcChain(url)
        assert url in str(info.value) and "\n" not in str(info.value)
    finally:
        server.shutdown()
        server.server_close()


def test_invalid_private_key_never_shows_the_key(chain: Chain) -> None:
    secret = "0x" + "zz" * 32
    with pytest.raises(ChainError) as info:
        chain.add_account(secret)
    assert "zz" not in str(info.value)
    assert "invalid private key" in str(info.value)


def test_account_repr_hides_keys(chain: Chain) -> None:
    address = chain.add_account(KEY)
    assert address == Account.from_key(KEY).address
    assert KEY[2:] not in repr(chain) and KEY[2:] not in repr(chain.accounts)


def test_attach_to_address_without_code(chain: Chain) -> None:
    empty = chain.accounts[3]
    addresses = {"AgentRegistry": empty, "TaskMarket": empty, "OutputLog": empty}
    with pytest.raises(ContractNotDeployed) as info:
        attach_contracts(chain, addresses)
    assert str(info.value) == (
        f"no AgentRegistry contract at {empty} on the in-process EVM; deploy it first or fix "
        "chain.contracts"
    )


def test_attach_needs_every_address(chain: Chain) -> None:
    with pytest.raises(ConfigError, match="lacks an address for TaskMarket, OutputLog"):
        attach_contracts(chain, {"AgentRegistry": chain.accounts[0]})


def test_attach_round_trip_and_open_deployment(chain: Chain) -> None:
    deployment = deploy_contracts(chain)
    again = open_deployment(chain, ChainSettings(contracts=deployment.addresses))
    assert again.addresses == deployment.addresses
    assert again.registry.call("market") == deployment.market.address
    fresh = open_deployment(chain, ChainSettings())
    assert fresh.addresses != deployment.addresses


def test_deploy_rejects_negative_parameters(chain: Chain) -> None:
    with pytest.raises(ChainError, match="min_stake must not be negative"):
        deploy_contracts(chain, min_stake=-1)


def test_constructor_revert_surfaces_named(chain: Chain) -> None:
    with pytest.raises(E.ZeroAmount):
        deploy_contracts(chain, challenge_bond=0)


def test_bad_arguments_are_a_chain_error(chain: Chain) -> None:
    probe = chain.contract(PROBE, chain.deploy(PROBE, 5))
    with pytest.raises(ChainError, match="bad arguments for Probe.set"):
        probe.transact("set", "ten", "x")
    with pytest.raises(ChainError, match="Probe has no function 'missing'"):
        probe.fn("missing")
    with pytest.raises(ChainError, match="bad constructor arguments for Probe"):
        chain.deploy(PROBE, "five")


def test_insufficient_funds(chain: Chain) -> None:
    poor = chain.new_account()
    with pytest.raises(TransactionFailed, match="insufficient funds"):
        chain.transfer(chain.accounts[0], 1, sender=poor)


def test_not_an_address(chain: Chain) -> None:
    with pytest.raises(ChainError, match="is not an EVM address"):
        chain.balance("0x1234")


def test_load_artifact() -> None:
    artifact = load_artifact("TaskMarket")
    assert artifact.name == "TaskMarket" and artifact.bytecode.startswith("0x")
    assert any(e["name"] == "postTask" for e in artifact.entries("function"))
    with pytest.raises(ChainError, match="no compiled artifact for contract 'Nope'"):
        load_artifact("Nope")
    with pytest.raises(ChainError, match="malformed"):
        Artifact.from_json({"abi": []})
    with pytest.raises(ChainError, match="has no bytecode"):
        EmbeddedChain(accounts=1).deploy(Artifact("Abi", ()))


def test_embedded_account_count() -> None:
    assert len(EmbeddedChain(accounts=2).accounts) == 2
    with pytest.raises(ChainError, match="1 to 10"):
        EmbeddedChain(accounts=11)


def test_time_only_moves_forward(chain: Chain) -> None:
    with pytest.raises(ChainError, match="backwards"):
        chain.advance_time(-1)
    with pytest.raises(ChainError, match="no snapshot"):
        chain.revert("999999")


@pytest.mark.parametrize("value", ["0x12", "zz" * 32, b"\x00" * 31, "0x" + "00" * 33, 5])
def test_to_bytes32_rejects(value: object) -> None:
    with pytest.raises(ChainError, match="must be 32 bytes"):
        to_bytes32(value)  # type: ignore[arg-type]


def test_to_bytes32_and_address() -> None:
    assert to_bytes32("0x" + "ab" * 32) == b"\xab" * 32 == to_bytes32("AB" * 32)
    assert to_address("0x7e5f4552091a69125d5dfcb7b8c2659029395bdf") == (
        "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
    )
    with pytest.raises(ChainError, match="must be an EVM address"):
        to_address("0x7e5f")
