"""The embedded chain: py-evm in this process through web3's ``EthereumTesterProvider``.

No server, no network: the default after ``pip install``. Ten accounts are pre-funded with a
million ether each. Blocks are mined on every transaction; snapshots and time travel are free.
"""

from __future__ import annotations

import threading
from typing import Any

from eth_tester import EthereumTester, PyEVMBackend
from web3 import Web3
from web3.providers.eth_tester import EthereumTesterProvider
from web3.types import RPCEndpoint, RPCResponse

from chefsplan_agents.chain._base import Chain, Receipt
from chefsplan_agents.chain._revert import parse_revert_text
from chefsplan_agents.errors import ChainError, ChefsplanError

__all__ = ["EmbeddedChain"]

# Generous for any one call of this package's contracts, far below the block gas limit.
EMBEDDED_GAS_LIMIT = 10_000_000


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

    def _revert_data(self, err: BaseException) -> bytes | None:
        data = super()._revert_data(err)
        if data is not None:
            return data
        # eth-tester renders revert data into the exception text (``execution reverted: b'…'``).
        from eth_tester.exceptions import TransactionFailed as TesterTransactionFailed

        if isinstance(err, TesterTransactionFailed):
            return parse_revert_text(str(err.args[0]) if err.args else "")
        return None
