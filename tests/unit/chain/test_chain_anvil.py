"""JSON-RPC behaviour that needs a node configured a special way: anvil without automine."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account

from chefsplan_agents.chain import JsonRpcChain
from chefsplan_agents.errors import ChainError, TransactionFailed

pytestmark = pytest.mark.integration

ANVIL = Path(__file__).resolve().parents[3] / "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
MNEMONIC = "test test test test test test test test test test test junk"


def _key() -> bytes:
    Account.enable_unaudited_hdwallet_features()
    return bytes(Account.from_mnemonic(MNEMONIC, account_path="m/44'/60'/0'/0/0").key)


def _anvil(*extra: str) -> Iterator[str]:
    if not ANVIL.exists():
        pytest.skip(f"anvil is not installed at {ANVIL}: run `npm install` in the repo root")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--silent", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                JsonRpcChain(url).close()
                break
            except ChainError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def unmined() -> Iterator[str]:
    yield from _anvil("--no-mining")


@pytest.fixture
def interval() -> Iterator[str]:
    yield from _anvil("--block-time", "1")


def test_receipt_timeout_is_transaction_failed(unmined: str) -> None:
    with JsonRpcChain(unmined, [_key()], timeout_s=0.5) as chain:
        to = chain.new_account()
        with pytest.raises(TransactionFailed, match=r"was not mined within 0.5 s") as info:
            chain.transfer(to, 1)
        assert "\n" not in str(info.value)


def test_confirmations_wait_for_later_blocks(interval: str) -> None:
    with JsonRpcChain(interval, [_key()], confirmations=1, timeout_s=20) as chain:
        receipt = chain.transfer(chain.new_account(), 1)
        assert chain.block_number() >= receipt.block_number + 1


def test_wrong_chain_id_is_refused(interval: str) -> None:
    with pytest.raises(ChainError, match="is on chain 31337, not the configured 1"):
        JsonRpcChain(interval, chain_id=1)
