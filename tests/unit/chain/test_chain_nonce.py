"""The nonce tracker on its own: consecutive, gap-free nonces under threads."""

from __future__ import annotations

import threading

from chefsplan_agents.chain._nonce import NonceTracker

A = "0x" + "aa" * 20
B = "0x" + "bb" * 20


def test_consecutive_nonces_from_one_fetch() -> None:
    fetches: list[str] = []

    def fetch(address: str) -> int:
        fetches.append(address)
        return 7

    tracker = NonceTracker(fetch)
    got = []
    for _ in range(3):
        with tracker.reserve(A) as slot:
            got.append(slot.nonce)
            slot.commit()
    assert got == [7, 8, 9]
    assert fetches == [A]


def test_uncommitted_reservation_leaves_no_gap() -> None:
    tracker = NonceTracker(lambda _a: 0)
    with tracker.reserve(A) as slot:
        assert slot.nonce == 0  # the send failed: no commit
    with tracker.reserve(A) as slot:
        assert slot.nonce == 0
        slot.commit()
    with tracker.reserve(A) as slot:
        assert slot.nonce == 1


def test_senders_are_independent() -> None:
    tracker = NonceTracker(lambda a: 100 if a == A else 5)
    with tracker.reserve(A) as a, tracker.reserve(B) as b:
        assert (a.nonce, b.nonce) == (100, 5)


def test_resync_and_reset_refetch() -> None:
    on_chain = {"n": 3}
    tracker = NonceTracker(lambda _a: on_chain["n"])
    with tracker.reserve(A) as slot:
        slot.commit()
    on_chain["n"] = 10  # another process sent from the same key
    with tracker.reserve(A) as slot:
        assert slot.nonce == 4
        assert slot.resync() == 10
        slot.commit()
    with tracker.reserve(A) as slot:
        assert slot.nonce == 11
    tracker.reset()
    on_chain["n"] = 20
    with tracker.reserve(A) as slot:
        assert slot.nonce == 20
    tracker.forget(A)
    on_chain["n"] = 30
    with tracker.reserve(A) as slot:
        assert slot.nonce == 30


def test_threads_get_distinct_consecutive_nonces() -> None:
    tracker = NonceTracker(lambda _a: 0)
    used: list[int] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(50):
            with tracker.reserve(A) as slot:
                used.append(slot.nonce)
                slot.commit()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(used) == list(range(400))
