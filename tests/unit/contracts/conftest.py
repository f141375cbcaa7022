"""In-process EVM with the shipped contracts deployed once per test module."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from eth_abi import decode as abi_decode
from eth_tester.exceptions import TransactionFailed
from eth_utils import function_signature_to_4byte_selector
from web3 import EthereumTesterProvider, Web3
from web3.exceptions import ContractCustomError
from web3.logs import DISCARD

from chefsplan_agents.contracts import load_artifact

ETHER = 10**18
MIN_STAKE = ETHER // 10
COOLDOWN = 3600
CHALLENGE_BOND = ETHER // 50
BOUNTY = ETHER // 100
BOND = ETHER // 200


class Chain:
    """Accounts and deployed contracts on one in-process chain."""

    ETHER = ETHER
    MIN_STAKE = MIN_STAKE
    COOLDOWN = COOLDOWN
    CHALLENGE_BOND = CHALLENGE_BOND
    BOUNTY = BOUNTY
    BOND = BOND

    def __init__(self) -> None:
        self.w3 = Web3(EthereumTesterProvider())
        accounts = list(self.w3.eth.accounts)
        self.deployer, self.requester, self.resolver, self.bystander, self.outsider = accounts[:5]
        # Registered by ``enlist_panel`` only, so a challenge can draw a panel.
        self.spare = accounts[9]
        # Settlement lists replicas by ascending address; keep providers in that order.
        self.providers = sorted(accounts[5:9], key=lambda a: int(a, 16))
        self.registry = self.deploy("AgentRegistry", MIN_STAKE, COOLDOWN)
        self.market = self.deploy("TaskMarket", self.registry.address, CHALLENGE_BOND)
        self.log = self.deploy("OutputLog")
        self.send(self.registry.functions.setMarket(self.market.address), self.deployer)
        for i, provider in enumerate(self.providers[:3]):
            self.send(
                self.registry.functions.register(
                    f"did:key:z6MkProvider{i}", f"bafyoffer{i}", b"\x01" * 32
                ),
                provider,
                value=MIN_STAKE,
            )
        self.nonce = 0

    def enlist_panel(self) -> list[str]:
        """Register four more providers (none of them the requester or the outsider), so that
        a challenge of a task run by ``providers[:2]`` can draw a panel."""
        extra = [self.deployer, self.resolver, self.bystander, self.spare]
        for i, account in enumerate(extra):
            self.send(
                self.registry.functions.register(
                    f"did:key:z6MkPanel{i}", f"bafypanel{i}", b"\x02" * 32
                ),
                account,
                value=MIN_STAKE,
            )
        return extra

    def deploy(self, name: str, *args: Any) -> Any:
        art = load_artifact(name)
        factory = self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        receipt = self.w3.eth.wait_for_transaction_receipt(
            factory.constructor(*args).transact({"from": self.deployer})
        )
        return self.w3.eth.contract(address=receipt["contractAddress"], abi=art["abi"])

    def send(self, call: Any, sender: str, value: int = 0) -> Any:
        receipt = self.w3.eth.wait_for_transaction_receipt(
            call.transact({"from": sender, "value": value})
        )
        assert receipt["status"] == 1
        return receipt

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def travel(self, timestamp: int) -> None:
        self.w3.testing.timeTravel(timestamp)

    def params(
        self, replicas: int = 1, quorum: int = 1, window: int = 0, **over: Any
    ) -> tuple[Any, ...]:
        self.nonce += 1
        now = self.now()
        fields: dict[str, Any] = {
            "requester": self.requester,
            "assignee": "0x" + "00" * 20,
            "bundleHash": Web3.keccak(text=f"bundle {self.nonce}"),
            "replicas": replicas,
            "quorum": quorum,
            "bountyPerReplica": BOUNTY,
            "bond": BOND,
            "claimDeadline": now + 600,
            "commitTimeout": 300,
            "revealDeadline": now + 1800,
            "challengeWindow": window,
            "nonce": self.nonce,
        }
        fields.update(over)
        return tuple(fields.values())

    def post(self, p: tuple[Any, ...], cid: str = "bafybundle") -> bytes:
        receipt = self.send(
            self.market.functions.postTask(p, cid), self.requester, value=p[5] * p[3]
        )
        (event,) = self.market.events.TaskPosted().process_receipt(receipt, errors=DISCARD)
        return bytes(event["args"]["taskId"])


def _revert_data(exc: BaseException) -> bytes:
    """The raw revert data of a failed call or transaction, as web3 or eth-tester report it."""
    if isinstance(exc, ContractCustomError):
        data = exc.data if isinstance(exc.data, str) else exc.args[0]
        return bytes.fromhex(str(data).removeprefix("0x"))
    # eth-tester re-raises with a decoded message; the raw bytes sit earlier in the chain.
    seen: BaseException | None = exc
    while seen is not None:
        if seen.args and isinstance(seen.args[0], bytes):
            return seen.args[0]
        seen = seen.__context__
    message = str(exc.args[0]) if exc.args else ""
    raw = message.removeprefix("execution reverted: ")
    value = ast.literal_eval(raw) if raw.startswith(("b'", 'b"')) else b""
    return value if isinstance(value, bytes) else b""


@contextmanager
def _reverts(contract: Any, error: str, *args: Any) -> Iterator[None]:
    """Expect a revert with the custom error ``error`` declared in ``contract``'s ABI; with
    ``args``, exactly those arguments (addresses checksummed, ``bytes32`` as bytes)."""
    (entry,) = [e for e in contract.abi if e["type"] == "error" and e["name"] == error]
    types = [i["type"] for i in entry["inputs"]]
    selector = function_signature_to_4byte_selector(f"{error}({','.join(types)})")
    with pytest.raises((ContractCustomError, TransactionFailed)) as info:
        yield
    data = _revert_data(info.value)
    assert data[:4] == selector, f"expected {error}, got {data.hex() or info.value}"
    if args:
        decoded = tuple(
            Web3.to_checksum_address(v) if t == "address" else bytes(v) if t == "bytes32" else v
            for t, v in zip(types, abi_decode(types, data[4:]), strict=True)
        )
        assert decoded == args, f"{error}{decoded} != {error}{args}"


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    yield Chain()


@pytest.fixture()
def fresh(chain: Chain) -> Iterator[Chain]:
    """The module's chain, rolled back after the test."""
    snapshot = chain.w3.testing.snapshot()
    nonce = chain.nonce
    yield chain
    chain.w3.testing.revert(snapshot)
    chain.nonce = nonce + 100


@pytest.fixture(scope="session")
def reverts() -> Any:
    """``with reverts(contract, "ErrorName", *args): ...`` expects that custom error (and,
    when given, exactly those arguments)."""
    return _reverts
