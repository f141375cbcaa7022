"""Calls are encoded from each function's selector and argument types, byte for byte as web3's
ABI encoder does, and spellings only web3 normalises still work."""

from __future__ import annotations

from typing import Any

import pytest
from eth_utils.crypto import keccak

from chefsplan_agents.chain import EmbeddedChain
from chefsplan_agents.errors import ChainError

REQUESTER = "0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF"
PROVIDER = "0x6813Eb9362372EEF6200f3b1dbC3f819671cBA69"
PARAMS = (
    REQUESTER,
    PROVIDER,
    b"\x11" * 32,
    1,
    1,
    10**16,
    5 * 10**15,
    1_800_000_000,
    300,
    1_800_000_900,
    0,
    7,
)


@pytest.fixture(scope="module")
def market() -> Any:
    with EmbeddedChain() as chain:
        address = chain.deploy("TaskMarket", "0x" + "42" * 20, 10**15)
        yield chain.contract("TaskMarket", address)


@pytest.mark.parametrize(
    ("fn", "args"),
    [
        ("postTask", (PARAMS, "bafybundle")),
        ("claimAndFinalize", (PARAMS, b"\x22" * 32, "bafyresult")),
        ("finalize", (PARAMS, [(PROVIDER, b"\x01" * 32, b"\x02" * 32)] * 2, "bafy")),
        ("withdraw", ()),
    ],
)
def test_encoding_is_web3s(market: Any, fn: str, args: tuple[Any, ...]) -> None:
    ours = market.chain._encode(market.fn(fn, *args))
    assert ours == market._contract.encode_abi(fn, args=list(args))


def test_selector_is_the_keccak_of_the_signature(market: Any) -> None:
    data = market.chain._encode(market.fn("withdraw"))
    assert data == "0x" + keccak(text="withdraw()")[:4].hex()


def test_hex_string_for_bytes32_still_encodes(market: Any) -> None:
    as_bytes = market.chain._encode(market.fn("taskState", b"\xab" * 32))
    as_text = market.chain._encode(market.fn("taskState", "0x" + "ab" * 32))
    assert as_text == as_bytes


def test_bad_arguments_are_one_chain_error(market: Any) -> None:
    with pytest.raises(ChainError, match=r"bad arguments for TaskMarket\.taskState") as info:
        market.chain._encode(market.fn("taskState", "not bytes"))
    assert "\n" not in str(info.value)
