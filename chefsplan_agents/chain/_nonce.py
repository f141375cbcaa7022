"""Local nonce tracking per sender, safe under threads.

Asking the node for ``eth_getTransactionCount(addr, "pending")`` before every send races when
several threads send from one account: two of them read the same count and one transaction is
rejected. The tracker hands out nonces under a per-sender lock held from signing to broadcast,
and only advances after the node accepted the transaction. When the node says the nonce is too
low (another process sent from the same key) the caller resyncs and retries.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["NonceSlot", "NonceTracker"]


class NonceSlot:
    """The nonce reserved for one send; ``commit`` after the node accepted the transaction."""

    def __init__(self, tracker: NonceTracker, address: str, nonce: int) -> None:
        self._tracker = tracker
        self.address = address
        self.nonce = nonce
        self.committed = False

    def commit(self) -> None:
        """Mark the nonce used; the next reservation for this sender gets ``nonce + 1``."""
        self._tracker._next[self.address] = self.nonce + 1
        self.committed = True

    def resync(self) -> int:
        """Re-read the sender's count from the node (after "nonce too low"); returns it."""
        self.nonce = self._tracker._fetch(self.address)
        self._tracker._next[self.address] = self.nonce
        return self.nonce


class NonceTracker:
    """Hands out consecutive nonces per sender address.

    Args:
        fetch: Reads the sender's pending transaction count from the node.
    """

    def __init__(self, fetch: Callable[[str], int]) -> None:
        self._fetch = fetch
        self._next: dict[str, int] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock_for(self, address: str) -> threading.Lock:
        with self._guard:
            lock = self._locks.get(address)
            if lock is None:
                lock = self._locks[address] = threading.Lock()
            return lock

    @contextmanager
    def reserve(self, address: str) -> Iterator[NonceSlot]:
        """Hold the sender's lock and yield its next nonce.

        The nonce only advances if the body calls :meth:`NonceSlot.commit`, so a send that
        failed before reaching the node does not leave a gap.
        """
        with self._lock_for(address):
            nonce = self._next.get(address)
            if nonce is None:
                nonce = self._fetch(address)
                self._next[address] = nonce
            yield NonceSlot(self, address, nonce)

    def reset(self) -> None:
        """Forget every cached nonce (after a snapshot revert or an uncertain send)."""
        with self._guard:
            self._next.clear()

    def forget(self, address: str) -> None:
        """Forget one sender's cached nonce."""
        with self._guard:
            self._next.pop(address, None)
