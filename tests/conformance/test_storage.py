"""The ContentStore conformance suite, run against every backend.

``ContentStoreConformance`` holds the tests; each backend subclasses it and says how to open a
store. Backends whose storage a test can corrupt subclass ``TamperConformance`` instead and say
how to flip a byte of a stored block. The Kubo subclass needs a real IPFS
daemon: ``make integration`` starts one and sets ``CHEFSPLAN_TEST_IPFS_API``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chefsplan_agents.errors import (
    CidMismatch,
    ContentNotFound,
    ContentTooLarge,
    InvalidCid,
    StorageError,
)
from chefsplan_agents.storage import (
    CHUNK_SIZE,
    ContentStore,
    KuboStore,
    LocalCidStore,
    MemoryCidStore,
    compute_cid,
    parse_cid,
)

# Never put into any store by these tests: sha256 of b"chefsplan: never stored".
ABSENT = compute_cid(b"chefsplan: never stored")

INVALID_CIDS = [
    "",
    "hello",
    "Qm" + "1" * 44,  # right shape, not a sha2-256 multihash
    "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQ",  # one character short
    "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk",  # truncated
    "bafyreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",  # dag-cbor codec
    "Bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",  # mixed-case base32
    " bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
    "bafkrei!!!",
]


class ContentStoreConformance:
    """Behaviour every ContentStore must have. Subclasses implement :meth:`open_store`."""

    def open_store(self, cid_version: int) -> ContentStore:
        raise NotImplementedError

    @pytest.fixture
    def store(self) -> Iterator[ContentStore]:
        with self.open_store(1) as store:
            yield store

    @pytest.fixture
    def store_v0(self) -> Iterator[ContentStore]:
        with self.open_store(0) as store:
            yield store

    # --- round trips ----------------------------------------------------------------------

    def test_is_a_content_store(self, store: ContentStore) -> None:
        assert isinstance(store, ContentStore)
        assert store.cid_version == 1

    @pytest.mark.parametrize("size", [0, 1, 1000, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 17])
    def test_round_trip(self, store: ContentStore, size: int) -> None:
        data = os.urandom(size)
        cid = store.put(data)
        assert cid == compute_cid(data)
        assert store.get(cid) == data
        assert b"".join(store.iter_chunks(cid)) == data

    def test_same_content_same_cid(self, store: ContentStore) -> None:
        data = os.urandom(5000)
        assert store.put(data) == store.put(bytearray(data)) == store.put(memoryview(data))

    def test_put_accepts_files_and_iterables(self, store: ContentStore) -> None:
        data = os.urandom(2 * CHUNK_SIZE + 99)
        expected = compute_cid(data)
        pieces = [data[i : i + 7777] for i in range(0, len(data), 7777)]
        assert store.put(io.BytesIO(data)) == expected
        assert store.put(iter(pieces)) == expected
        assert store.put(pieces) == expected

    def test_put_file(self, store: ContentStore, tmp_path: Path) -> None:
        data = os.urandom(CHUNK_SIZE + 5)
        file = tmp_path / "content.bin"
        file.write_bytes(data)
        cid = store.put_file(file)
        assert cid == compute_cid(data)
        assert store.get(cid) == data

    def test_put_file_missing_or_directory(self, store: ContentStore, tmp_path: Path) -> None:
        with pytest.raises(StorageError, match="does not exist"):
            store.put_file(tmp_path / "nope.bin")
        with pytest.raises(StorageError, match="is a directory"):
            store.put_file(tmp_path)

    def test_put_text_is_a_type_error(self, store: ContentStore) -> None:
        with pytest.raises(TypeError, match="not str"):
            store.put("text")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="pieces must be bytes"):
            store.put([b"ok", "text"])  # type: ignore[list-item]

    # --- vectors from a real IPFS daemon --------------------------------------------------

    def test_vectors_cidv1(
        self,
        store: ContentStore,
        cid_vectors: list[dict[str, Any]],
        vector_content: Callable[[int, int], bytes],
    ) -> None:
        for vector in cid_vectors:
            data = vector_content(vector["size"], vector["seed"])
            assert store.put(data) == vector["cidv1"], vector["size"]
            assert store.get(vector["cidv1"]) == data

    def test_vectors_cidv0(
        self,
        store_v0: ContentStore,
        cid_vectors: list[dict[str, Any]],
        vector_content: Callable[[int, int], bytes],
    ) -> None:
        assert store_v0.cid_version == 0
        for vector in cid_vectors:
            data = vector_content(vector["size"], vector["seed"])
            assert store_v0.put(data) == vector["cidv0"], vector["size"]
            assert store_v0.get(vector["cidv0"]) == data

    # --- streaming --------------------------------------------------------------------------

    def test_iter_chunks_yields_leaf_sized_pieces(self, store: ContentStore) -> None:
        data = os.urandom(4 * CHUNK_SIZE + 10)
        chunks = list(store.iter_chunks(store.put(data)))
        assert [len(c) for c in chunks] == [CHUNK_SIZE] * 4 + [10]
        assert b"".join(chunks) == data

    def test_iter_chunks_is_lazy(self, store: ContentStore) -> None:
        data = os.urandom(3 * CHUNK_SIZE)
        chunks = store.iter_chunks(store.put(data))
        assert next(chunks) == data[:CHUNK_SIZE]

    # --- presence and pins ------------------------------------------------------------------

    def test_has(self, store: ContentStore) -> None:
        cid = store.put(b"present")
        assert store.has(cid)
        assert not store.has(ABSENT)

    def test_put_pins_by_default(self, store: ContentStore) -> None:
        pinned = store.put(os.urandom(64))
        unpinned = store.put(os.urandom(64), pin=False)
        assert store.is_pinned(pinned)
        assert not store.is_pinned(unpinned)
        assert store.has(unpinned)

    def test_pin_unpin(self, store: ContentStore) -> None:
        cid = store.put(os.urandom(2 * CHUNK_SIZE), pin=False)
        store.pin(cid)
        assert store.is_pinned(cid)
        store.unpin(cid)
        assert not store.is_pinned(cid)
        store.unpin(cid)  # unpinning twice is a no-op
        assert not store.is_pinned(cid)
        assert store.get(cid)  # unpinned content is still readable until collected

    def test_pin_missing(self, store: ContentStore) -> None:
        with pytest.raises(ContentNotFound):
            store.pin(ABSENT)

    # --- errors ---------------------------------------------------------------------------

    def test_get_missing(self, store: ContentStore) -> None:
        with pytest.raises(ContentNotFound, match=ABSENT):
            store.get(ABSENT)
        with pytest.raises(ContentNotFound):
            list(store.iter_chunks(ABSENT))

    @pytest.mark.parametrize("bad", INVALID_CIDS)
    def test_invalid_cid(self, store: ContentStore, bad: str) -> None:
        for call in (store.get, store.has, store.pin, store.unpin, store.is_pinned):
            with pytest.raises(InvalidCid) as info:
                call(bad)
            assert "\n" not in str(info.value)
        with pytest.raises(InvalidCid):
            store.iter_chunks(bad)

    def test_max_bytes(self, store: ContentStore) -> None:
        data = os.urandom(CHUNK_SIZE + 1)
        cid = store.put(data)
        assert store.get(cid, max_bytes=len(data)) == data
        with pytest.raises(ContentTooLarge, match=str(len(data))):
            store.get(cid, max_bytes=len(data) - 1)

    def test_closed_store_refuses_work(self) -> None:
        store = self.open_store(1)
        cid = store.put(b"x")
        with store:
            pass
        with pytest.raises(StorageError, match="closed"):
            store.get(cid)


class TamperConformance(ContentStoreConformance):
    """For backends whose storage a test can corrupt: every flipped byte is caught."""

    def tamper(self, store: ContentStore, cid: str) -> None:
        """Flip one byte of the stored block ``cid`` names."""
        raise NotImplementedError

    @pytest.mark.parametrize("size", [100, 3 * CHUNK_SIZE])
    def test_tampered_root_is_caught(self, size: int) -> None:
        with self.open_store(1) as store:
            cid = store.put(os.urandom(size))
            self.tamper(store, cid)
            with pytest.raises(CidMismatch) as info:
                store.get(cid)
            assert info.value.expected == cid
            with pytest.raises(CidMismatch):
                b"".join(store.iter_chunks(cid))

    def test_tampered_leaf_is_caught(self) -> None:
        with self.open_store(1) as store:
            data = os.urandom(3 * CHUNK_SIZE)
            cid = store.put(data)
            leaf = compute_cid(data[CHUNK_SIZE : 2 * CHUNK_SIZE])
            self.tamper(store, leaf)
            with pytest.raises(CidMismatch) as info:
                store.get(cid)
            assert info.value.expected == leaf
            chunks = store.iter_chunks(cid)
            assert next(chunks) == data[:CHUNK_SIZE]  # good blocks before the bad one
            with pytest.raises(CidMismatch):
                next(chunks)


class TestMemoryCidStore(TamperConformance):
    def open_store(self, cid_version: int) -> ContentStore:
        return MemoryCidStore(cid_version=cid_version)

    def tamper(self, store: ContentStore, cid: str) -> None:
        assert isinstance(store, MemoryCidStore)
        key = parse_cid(cid).multihash
        block = bytearray(store._blocks[key])
        block[len(block) // 2] ^= 0x01
        store._blocks[key] = bytes(block)


class TestLocalCidStore(TamperConformance):
    @pytest.fixture(autouse=True)
    def _folder(self, tmp_path: Path) -> None:
        self.folder = tmp_path / "blocks"

    def open_store(self, cid_version: int) -> ContentStore:
        return LocalCidStore(self.folder / f"v{cid_version}", cid_version=cid_version)

    def tamper(self, store: ContentStore, cid: str) -> None:
        assert isinstance(store, LocalCidStore)
        path = store.block_path(parse_cid(cid).multihash)
        block = bytearray(path.read_bytes())
        block[len(block) // 2] ^= 0x01
        path.write_bytes(bytes(block))


@pytest.mark.integration
class TestKuboStore(ContentStoreConformance):
    """Against a real IPFS daemon. Its storage is not ours to corrupt, so the tamper tests are
    left out; the unit tests put a lying daemon in front of the client instead."""

    @pytest.fixture(autouse=True)
    def _daemon(self) -> None:
        api = os.environ.get("CHEFSPLAN_TEST_IPFS_API", "").strip()
        if not api:
            reason = "CHEFSPLAN_TEST_IPFS_API is not set: run `make integration` to start a daemon"
            if os.environ.get("CHEFSPLAN_REQUIRE_INTEGRATION", "").strip() == "1":
                pytest.fail(reason, pytrace=False)
            pytest.skip(reason)
        self.api = api

    def open_store(self, cid_version: int) -> ContentStore:
        # A short timeout: a block the daemon lacks counts as missing after this long.
        return KuboStore(self.api, cid_version=cid_version, timeout_s=3.0)
