"""The embedded chain: py-evm in this process through web3's ``EthereumTesterProvider``.

No server, no network: the default after ``pip install``. Ten accounts are pre-funded with a
million ether each. Blocks are mined on every transaction; snapshots and time travel are free.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth.exceptions import TransactionNotFound as EVMTransactionNotFound
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.backends.pyevm.serializers import serialize_transaction_receipt
from eth_tester.exceptions import BlockNotFound
from web3 import Web3
from web3.providers.eth_tester import EthereumTesterProvider
from web3.types import RPCEndpoint, RPCResponse

from chefsplan_agents.chain._base import Chain, Receipt, _not_mined
from chefsplan_agents.chain._revert import parse_revert_text
from chefsplan_agents.errors import ChainError, ChefsplanError, TransactionFailed

__all__ = ["EmbeddedChain"]

# Generous for any one call of this package's contracts, far below the block gas limit.
EMBEDDED_GAS_LIMIT = 10_000_000
# Mined blocks whose shaped receipts and logs are kept (a few KB each).
_MINED_CACHE = 4096


@dataclass(frozen=True)
class _MinedBlock:
    receipts: dict[bytes, dict[str, Any]]  # by transaction hash, in Chain._raw_receipt's shape
    logs: list[dict[str, Any]]  # in block order, in Chain._raw_logs's shape


class _LockedTesterProvider(EthereumTesterProvider):
    """py-evm is not thread-safe: one request at a time, whichever thread sends it."""

    def __init__(self, tester: EthereumTester, lock: threading.RLock) -> None:
        super().__init__(tester)
        self._lock = lock

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        with self._lock:
            return super().make_request(method, params)


class EmbeddedChain(Chain):
    """An in-process EVM (py-evm) with pre-funded accounts.

    Args:
        accounts: How many of the pre-funded accounts to use (at most 10).
        timeout_s: How long to wait for a receipt (mining is synchronous here).
    """

    def __init__(self, *, accounts: int = 10, timeout_s: float = 30.0) -> None:
        if not 1 <= accounts <= 10:
            raise ChainError(f"the embedded chain has 1 to 10 funded accounts, not {accounts}")
        self._lock = threading.RLock()
        self._backend = PyEVMBackend()
        self._tester = EthereumTester(self._backend)
        self._mined: OrderedDict[bytes, _MinedBlock] = OrderedDict()
        w3 = Web3(_LockedTesterProvider(self._tester, self._lock))
        keys = [key.to_bytes() for key in self._backend.account_keys[:accounts]]
        super().__init__(w3, keys, timeout_s=timeout_s)

    @property
    def endpoint(self) -> str:
        return "the in-process EVM"

    def snapshot(self) -> str:
        with self._lock:
            return str(self._tester.take_snapshot())

    def revert(self, snapshot_id: str) -> None:
        with self._lock:
            try:
                self._tester.revert_to_snapshot(int(snapshot_id))
            except Exception as err:
                raise ChainError(f"no snapshot {snapshot_id!r} on {self.endpoint}") from err
            self._nonces.reset()

    def advance_time(self, seconds: int) -> None:
        if seconds < 0:
            raise ChainError(f"cannot move the chain clock backwards ({seconds} s)")
        with self._lock:
            pending = int(self._tester.get_block_by_number("pending")["timestamp"])
            self._tester.time_travel(pending + max(int(seconds), 1))

    def mine(self, blocks: int = 1) -> None:
        with self._lock:
            self._tester.mine_blocks(blocks)

    def _send(
        self,
        tx: dict[str, Any],
        *,
        sender: str | None,
        label: str,
        gas: int | None = None,
    ) -> Receipt:
        if gas is not None:  # an explicit limit: sent as given, a failure is mined (as on a node)
            return super()._send(tx, sender=sender, label=label, gas=gas)
        # Instead of estimating (one more execution), each transaction runs once with a
        # generous limit: gas is free here, and receipts report the exact gas used. py-evm
        # mines a reverting transaction like any other, so a failed one is rolled back to the
        # block before it: the revert changes nothing, not even the sender's nonce or balance,
        # just as a node refuses it at estimation. The failure is explained first, by
        # replaying the call in the block it was mined in.
        with self._lock:
            before = self._tester.take_snapshot()
            try:
                return super()._send(tx, sender=sender, label=label, gas=EMBEDDED_GAS_LIMIT)
            except ChefsplanError:
                self._tester.revert_to_snapshot(before)
                self._nonces.reset()
                raise

    # Chain facts, receipts and logs straight from py-evm: every transaction is mined as it is
    # sent, so there is nothing to wait for, and web3's and eth-tester's formatting layers
    # (about a millisecond per receipt, more per log query) only reshape what is read here.

    def block_number(self) -> int:
        with self._lock:
            return self._head()

    def _head(self) -> int:
        # py-evm's current block is the pending one; the latest mined is the one before it.
        return max(int(self._backend.chain.get_block().number) - 1, 0)

    def block_timestamp(self, block: int | str = "latest") -> int:
        with self._lock:
            try:
                return int(self._backend.get_block_by_number(block)["timestamp"])
            except BlockNotFound as err:
                raise ChainError(f"no block {block!r} on {self.endpoint}") from err

    def pending_timestamp(self) -> int:
        with self._lock:
            return int(self._backend.get_block_by_number("pending")["timestamp"])

    def _raw_receipt(self, tx_hash: str) -> Mapping[str, Any]:
        try:
            raw = bytes.fromhex(tx_hash.removeprefix("0x"))
        except ValueError as err:
            raise TransactionFailed(_not_mined(tx_hash)) from err
        with self._lock:
            try:
                number, _ = self._backend.chain.chaindb.get_transaction_index(raw)
            except (EVMTransactionNotFound, ValueError) as err:
                raise TransactionFailed(_not_mined(tx_hash)) from err
            mined = self._mined_block(number)
        # The index may name a block a snapshot revert has since replaced.
        receipt = None if mined is None else mined.receipts.get(raw)
        if receipt is None:
            raise TransactionFailed(_not_mined(tx_hash))
        return receipt

    def _mined_receipt(self, tx_hash: str, label: str) -> Mapping[str, Any]:
        return self._raw_receipt(tx_hash)

    def _raw_logs(self, params: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        address = "0x" + str(params["address"])[2:].lower()
        wanted = [_topic_set(t) for t in params.get("topics", [])]
        out: list[Mapping[str, Any]] = []
        with self._lock:
            head = self._head()
            low = _block_number(params["fromBlock"], head)
            high = min(_block_number(params["toBlock"], head), head)
            for number in range(low, high + 1):
                mined = self._mined_block(number)
                if mined is None:
                    break
                out.extend(
                    entry
                    for entry in mined.logs
                    if entry["address"] == address and _topics_match(entry["topics"], wanted)
                )
        return out

    def _mined_block(self, number: int) -> _MinedBlock | None:
        """A mined block's receipts and logs, shaped once and kept by block hash.

        A block's hash fixes its content, so an entry stays right across snapshot reverts: a
        replaced block has another hash. Called with the lock held.
        """
        if not 0 <= number <= self._head():
            return None
        chain = self._backend.chain
        header = chain.get_canonical_block_header_by_number(number)
        mined = self._mined.get(header.hash)
        if mined is not None:
            self._mined.move_to_end(header.hash)
            return mined
        block = chain.get_canonical_block_by_number(number)
        receipts = block.get_receipts(chain.chaindb)
        vm = chain.get_vm()
        shaped = {
            bytes(tx.hash): _shape_receipt(
                serialize_transaction_receipt(block, receipts, tx, i, False, vm)
            )
            for i, tx in enumerate(block.transactions)
        }
        mined = _MinedBlock(shaped, [log for r in shaped.values() for log in r["logs"]])
        self._mined[header.hash] = mined
        if len(self._mined) > _MINED_CACHE:
            self._mined.popitem(last=False)
        return mined

    def _revert_data(self, err: BaseException) -> bytes | None:
        data = super()._revert_data(err)
        if data is not None:
            return data
        # eth-tester renders revert data into the exception text (``execution reverted: b'…'``).
        from eth_tester.exceptions import TransactionFailed as TesterTransactionFailed

        if isinstance(err, TesterTransactionFailed):
            return parse_revert_text(str(err.args[0]) if err.args else "")
        return None


def _shape_log(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "address": "0x" + bytes(entry["address"]).hex(),
        "topics": [bytes(t) for t in entry["topics"]],
        "data": bytes(entry["data"]),
        "blockNumber": int(entry["block_number"]),
        "transactionHash": bytes(entry["transaction_hash"]),
        "logIndex": int(entry["log_index"]),
    }


def _shape_receipt(raw: Mapping[str, Any]) -> dict[str, Any]:
    created = raw.get("contract_address")
    return {
        "transactionHash": bytes(raw["transaction_hash"]),
        "blockNumber": int(raw["block_number"]),
        "gasUsed": int(raw["gas_used"]),
        "effectiveGasPrice": int(raw.get("effective_gas_price") or 0),
        "status": int(raw["status"]),
        "contractAddress": "0x" + bytes(created).hex() if created else None,
        "logs": [_shape_log(entry) for entry in raw["logs"]],
    }


def _block_number(value: Any, head: int) -> int:
    if isinstance(value, int):
        return value
    if value in ("latest", "pending", "safe", "finalized"):
        return head
    if value == "earliest":
        return 0
    return int(str(value), 0)


def _topic_set(topic: Any) -> frozenset[bytes] | None:
    """One position of an ``eth_getLogs`` topic filter: ``None`` matches anything."""
    if topic is None:
        return None
    values = [topic] if isinstance(topic, str | bytes) else list(topic)
    return frozenset(
        bytes.fromhex(v.removeprefix("0x")) if isinstance(v, str) else bytes(v) for v in values
    )


def _topics_match(topics: list[bytes], wanted: list[frozenset[bytes] | None]) -> bool:
    for i, allowed in enumerate(wanted):
        if allowed is None:
            continue
        if i >= len(topics) or bytes(topics[i]) not in allowed:
            return False
    return True
