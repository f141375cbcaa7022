from __future__ import annotations

import base64
import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest

from chefsplan_agents.errors import StorageError
from chefsplan_agents.storage import CHUNK_SIZE, LocalCidStore, MemoryCidStore, parse_cid

FIFTY_MB = 50 * 1024 * 1024
PEAK_LIMIT = 16 * 1024 * 1024


def _write_big_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    block = os.urandom(1024 * 1024)
    with path.open("wb") as file:
        for i in range(size // len(block)):
            piece = bytes([i % 256]) + block[1:]  # distinct pieces, cheap to make
            file.write(piece)
            digest.update(piece)
    return digest.hexdigest()


def test_fifty_megabytes_stream_through_bounded_memory(tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    expected = _write_big_file(source, FIFTY_MB)
    store = LocalCidStore(tmp_path / "store")

    tracemalloc.start()
    try:
        cid = store.put_file(source)
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        digest = hashlib.sha256()
        size = 0
        with (tmp_path / "copy.bin").open("wb") as copy:
            for chunk in store.iter_chunks(cid):
                copy.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        _, get_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert size == FIFTY_MB
    assert digest.hexdigest() == expected
    assert put_peak < PEAK_LIMIT, f"put held {put_peak} bytes"
    assert get_peak < PEAK_LIMIT, f"iter_chunks held {get_peak} bytes"
    # 200 leaves under two interior levels: 174 + 26 leaves, then the root.
    assert parse_cid(cid).codec_name == "dag-pb"


def test_blocks_are_files_named_by_multihash(tmp_path: Path) -> None:
    store = LocalCidStore(tmp_path)
    data = os.urandom(CHUNK_SIZE + 1)
    cid = store.put(data)
    files = sorted(p for p in (tmp_path / "blocks").rglob("*") if p.is_file())
    assert len(files) == 3  # two leaves and the root
    for file in files:
        assert file.suffix == ".data"
        assert file.stem.startswith("CIQ")  # base32 of 0x12 0x20: a sha2-256 multihash
        assert file.parent.name == file.stem[-3:-1]
        multihash = base64.b32decode(file.stem + "=" * (-len(file.stem) % 8))
        assert hashlib.sha256(file.read_bytes()).digest() == multihash[2:]
    assert store.block_path(parse_cid(cid).multihash) in files
    assert not list(tmp_path.rglob(".tmp-*"))


def test_content_and_pins_survive_reopening(tmp_path: Path) -> None:
    with LocalCidStore(tmp_path) as store:
        kept = store.put(b"kept")
        loose = store.put(b"loose", pin=False)
    with LocalCidStore(tmp_path) as store:
        assert store.get(kept) == b"kept"
        assert store.is_pinned(kept)
        assert not store.is_pinned(loose)
        store.unpin(kept)
    with LocalCidStore(tmp_path) as store:
        assert not store.is_pinned(kept)


def test_v0_and_v1_share_blocks(tmp_path: Path) -> None:
    data = os.urandom(100)
    v1 = LocalCidStore(tmp_path, cid_version=1).put(data)
    store_v0 = LocalCidStore(tmp_path, cid_version=0)
    v0 = store_v0.put(data)
    assert v0.startswith("Qm") and v1.startswith("bafkrei")
    assert store_v0.get(v1) == store_v0.get(v0) == data


def test_missing_leaf_means_not_held(tmp_path: Path) -> None:
    store = LocalCidStore(tmp_path)
    data = os.urandom(2 * CHUNK_SIZE)
    cid = store.put(data)
    leaf = parse_cid(store.put(data[:CHUNK_SIZE]))
    store.block_path(leaf.multihash).unlink()
    assert not store.has(cid)
    assert not store.has(str(leaf))


def test_folder_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(StorageError, match="not a folder"):
        LocalCidStore(path)


def test_bad_cid_version() -> None:
    with pytest.raises(StorageError, match="cid_version must be 0 or 1"):
        MemoryCidStore(cid_version=2)


def test_file_opened_in_text_mode(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("hello")
    with path.open() as text, pytest.raises(TypeError, match="binary mode"):
        MemoryCidStore().put(text)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["memory", "local"])
@pytest.mark.parametrize("version", [0, 1])
def test_collect_garbage_keeps_pinned_dags(tmp_path: Path, kind: str, version: int) -> None:
    store: MemoryCidStore | LocalCidStore = (
        MemoryCidStore(cid_version=version)
        if kind == "memory"
        else LocalCidStore(tmp_path, cid_version=version)
    )
    shared = os.urandom(CHUNK_SIZE)
    kept_data = shared + os.urandom(CHUNK_SIZE + 1)
    dropped_data = shared + os.urandom(2 * CHUNK_SIZE)
    small = b"small and pinned"
    kept = store.put(kept_data)
    dropped = store.put(dropped_data, pin=False)
    pinned_leaf = store.put(small)
    # kept: root + 3 leaves; dropped: root + 2 own leaves (the shared leaf stays).
    assert store.collect_garbage() == 3
    assert store.get(kept) == kept_data
    assert store.get(pinned_leaf) == small
    assert not store.has(dropped)
    assert store.collect_garbage() == 0
    store.unpin(kept)
    store.unpin(pinned_leaf)
    assert store.collect_garbage() == 5  # kept's root and leaves, and the small leaf
    assert not store.has(kept)


def test_corrupt_pin_record_stops_collection(tmp_path: Path) -> None:
    store = LocalCidStore(tmp_path)
    store.put(b"x")
    next((tmp_path / "pins").iterdir()).write_text("garbage")
    with pytest.raises(StorageError, match="pin record .* is corrupt"):
        store.collect_garbage()
    assert store.get(store.put(b"x")) == b"x"
