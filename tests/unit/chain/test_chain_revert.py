"""Revert data → named Python errors, from hand-written ABI encodings."""

from __future__ import annotations

import pickle

import pytest

from chefsplan_agents.chain import RevertDecoder, revert_error_class
from chefsplan_agents.chain import errors as chain_errors
from chefsplan_agents.chain._revert import parse_revert_text
from chefsplan_agents.errors import ChainError, ChefsplanError, TxReverted

ABI = [
    {
        "type": "error",
        "name": "StakeTooLow",
        "inputs": [
            {"name": "stake", "type": "uint256"},
            {"name": "minStake", "type": "uint256"},
        ],
    },
    {"type": "error", "name": "NotOwner", "inputs": [{"name": "caller", "type": "address"}]},
    {
        "type": "error",
        "name": "DidTaken",
        "inputs": [{"name": "did", "type": "string"}, {"name": "owner", "type": "address"}],
    },
    {"type": "error", "name": "ZeroAmount", "inputs": []},
    {"type": "function", "name": "ignored", "inputs": [], "outputs": []},
]


def word(n: int) -> str:
    return f"{n:064x}"


# Error("not ok"): selector, offset 0x20, length 6, the bytes right-padded.
ERROR_NOT_OK = bytes.fromhex("08c379a0" + word(0x20) + word(6) + "6e6f74206f6b".ljust(64, "0"))
# keccak("StakeTooLow(uint256,uint256)")[:4] == 0x829f1163
STAKE_TOO_LOW = bytes.fromhex("829f1163" + word(5) + word(10**16))
OWNER = "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"


@pytest.fixture
def decoder() -> RevertDecoder:
    d = RevertDecoder()
    d.register_abi(ABI)
    return d


def test_custom_error_decodes_to_named_subclass(decoder: RevertDecoder) -> None:
    exc = decoder.decode(STAKE_TOO_LOW, context="AgentRegistry.register")
    assert type(exc).__name__ == "StakeTooLow"
    assert isinstance(exc, TxReverted) and isinstance(exc, ChainError)
    assert isinstance(exc, ChefsplanError)
    assert exc.args_ == {"stake": 5, "minStake": 10**16}
    assert exc.error_name == "StakeTooLow"
    assert str(exc) == (
        "AgentRegistry.register reverted with StakeTooLow(stake=5, minStake=10000000000000000)"
    )


def test_address_arguments_are_checksummed(decoder: RevertDecoder) -> None:
    data = bytes.fromhex("245aecd3" + OWNER[2:].lower().rjust(64, "0"))
    from eth_utils.crypto import keccak

    assert keccak(text="NotOwner(address)")[:4] == data[:4]
    exc = decoder.decode(data, context="X.f")
    assert exc.args_ == {"caller": OWNER}


def test_dynamic_arguments(decoder: RevertDecoder) -> None:
    from eth_abi.abi import encode
    from eth_utils.crypto import keccak

    data = keccak(text="DidTaken(string,address)")[:4] + encode(
        ["string", "address"], ["did:key:z6Mk", OWNER]
    )
    exc = decoder.decode(data, context="X.f")
    assert isinstance(exc, chain_errors.DidTaken)
    assert exc.args_ == {"did": "did:key:z6Mk", "owner": OWNER}
    assert "DidTaken(did='did:key:z6Mk', owner=0x7E5F" in str(exc)


def test_error_string(decoder: RevertDecoder) -> None:
    exc = decoder.decode(ERROR_NOT_OK, context="Probe.requireOk")
    assert type(exc) is revert_error_class("Error")
    assert exc.args_ == {"message": "not ok"}
    assert str(exc) == "Probe.requireOk reverted: not ok"


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (0x01, "assertion failed"),
        (0x11, "overflow"),
        (0x12, "division"),
        (0x32, "out of bounds"),
        (0x99, "unknown panic code"),
    ],
)
def test_panic(decoder: RevertDecoder, code: int, reason: str) -> None:
    exc = decoder.decode(bytes.fromhex("4e487b71" + word(code)), context="X.f")
    assert isinstance(exc, chain_errors.Panic)
    assert exc.args_ == {"code": code}
    assert reason in str(exc) and f"0x{code:02x}" in str(exc)


def test_empty_revert_is_plain_txreverted(decoder: RevertDecoder) -> None:
    for data in (b"", None):
        exc = decoder.decode(data, context="X.f")
        assert type(exc) is TxReverted
        assert str(exc) == "X.f reverted without a reason"


def test_unknown_selector_keeps_the_data(decoder: RevertDecoder) -> None:
    exc = decoder.decode(bytes.fromhex("deadbeef01"), context="X.f")
    assert type(exc) is TxReverted
    assert "unknown error 0xdeadbeef" in str(exc) and "ABI was not loaded" in str(exc)
    assert exc.args_ == {"data": "0xdeadbeef01"}


def test_truncated_arguments_do_not_crash(decoder: RevertDecoder) -> None:
    exc = decoder.decode(STAKE_TOO_LOW[:20], context="X.f")
    assert isinstance(exc, chain_errors.StakeTooLow)
    assert "undecodable arguments" in str(exc)


def test_classes_are_cached_and_importable() -> None:
    from chefsplan_agents.chain.errors import StakeTooLow

    assert StakeTooLow is revert_error_class("StakeTooLow") is chain_errors.StakeTooLow
    assert StakeTooLow.__module__ == "chefsplan_agents.chain.errors"
    assert issubclass(StakeTooLow, TxReverted)
    assert revert_error_class("Other") is not StakeTooLow
    with pytest.raises(ValueError, match="not a Solidity error name"):
        revert_error_class("not-a-name")
    with pytest.raises(AttributeError):
        chain_errors.lowercase  # noqa: B018


def test_decoded_errors_pickle(decoder: RevertDecoder) -> None:
    exc = decoder.decode(STAKE_TOO_LOW, context="X.f")
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is type(exc) and str(again) == str(exc)


def test_parse_revert_text_from_py_evm() -> None:
    raw = repr(STAKE_TOO_LOW)
    assert parse_revert_text(f"execution reverted: {raw}") == STAKE_TOO_LOW
    assert parse_revert_text("execution reverted: not ok") == ERROR_NOT_OK
    assert parse_revert_text("execution reverted: b''") == b""
    assert parse_revert_text("execution reverted") == b""
    assert parse_revert_text("Invalid transaction nonce: Expected 3, but got 0") is None


def test_same_signature_decodes_with_the_calling_contracts_names() -> None:
    d = RevertDecoder()
    d.register_abi(
        [{"type": "error", "name": "Gone", "inputs": [{"name": "provider", "type": "address"}]}],
        contract="Registry",
    )
    d.register_abi(
        [{"type": "error", "name": "Gone", "inputs": [{"name": "account", "type": "address"}]}],
        contract="Market",
    )
    from eth_utils.crypto import keccak

    data = keccak(text="Gone(address)")[:4] + bytes.fromhex(OWNER[2:].rjust(64, "0"))
    assert d.decode(data, context="Registry.withdraw").args_ == {"provider": OWNER}
    assert d.decode(data, context="Market.withdraw").args_ == {"account": OWNER}
    # A revert bubbling up from another contract still decodes with the last ABI learned.
    assert d.decode(data, context="Other.f").args_ == {"account": OWNER}
