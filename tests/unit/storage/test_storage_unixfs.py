from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chefsplan_agents.errors import CidMismatch, ContentNotFound, StorageError
from chefsplan_agents.storage import CHUNK_SIZE, MAX_LINKS, Cid, FileImporter, compute_cid
from chefsplan_agents.storage._cid import CODEC_DAG_PB, CODEC_RAW
from chefsplan_agents.storage._unixfs import (
    _dag_pb_node,
    _decode_dag_pb,
    _Link,
    _unixfs_file_data,
    iter_file,
)

# Taken from the JavaScript IPFS daemon (ipfs 0.66.1, `add --only-hash`, 256 KiB chunks) for
# random.Random(174).randbytes(N): trees deeper than one level of 174 links.
MULTI_LEVEL = [
    (
        175 * CHUNK_SIZE + 5,
        "bafybeied4z4jviktguf2cgeysryuqvag4j2dqgvcf57cxfcxdohnullps4",
        "QmboiujaLcumDXgeieHBqrMZayFkAoH7hWL3mkQh6HYXN5",
    ),
    (
        349 * CHUNK_SIZE + 7,
        "bafybeigpgvqm2wogkndb2zhrvjbh2fmjjdfk7ady33cw6eqwixfra3cnuy",
        "QmZj9Ha4b4iH3uRVH4ewLHaiFUuVgeRXL3WbxKXWRgELB7",
    ),
]


def _build(data: bytes, version: int = 1) -> tuple[Cid, dict[Cid, bytes]]:
    blocks: dict[Cid, bytes] = {}
    importer = FileImporter(version, lambda cid, block: blocks.__setitem__(cid, block))
    importer.write(data)
    return importer.finish(), blocks


def test_multi_level_trees_match_the_daemon() -> None:
    base = random.Random(174).randbytes(MULTI_LEVEL[-1][0])
    view = memoryview(base)
    for size, v1, v0 in MULTI_LEVEL:
        assert compute_cid(view[:size]) == v1
        assert compute_cid(view[:size], cid_version=0) == v0


def test_balanced_layout_shape() -> None:
    # 175 leaves: a full node of 174 leaves and a node of one leaf under a new root.
    data = bytes(175 * CHUNK_SIZE)  # identical leaves: the tree, not the content, is tested
    root, blocks = _build(data)
    top = _decode_dag_pb(root, blocks[root])
    assert len(top.links) == 2
    assert top.filesize == len(data)
    first, second = (_decode_dag_pb(c, blocks[c]) for c in top.links)
    assert len(first.links) == MAX_LINKS
    assert len(second.links) == 1
    assert {c.codec for c in first.links} == {CODEC_RAW}
    assert b"".join(iter_file(blocks.__getitem__, root)) == data


def test_single_chunk_is_its_own_root() -> None:
    root, blocks = _build(b"abc")
    assert root.codec == CODEC_RAW
    assert blocks == {root: b"abc"}
    root0, blocks0 = _build(b"abc", version=0)
    assert root0.version == 0
    assert len(blocks0) == 1


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(0, 3 * CHUNK_SIZE + 3),
    cuts=st.lists(st.integers(0, 3 * CHUNK_SIZE + 3), max_size=6),
    version=st.sampled_from([0, 1]),
)
def test_cid_does_not_depend_on_write_sizes(size: int, cuts: list[int], version: int) -> None:
    data = random.Random(size).randbytes(size)
    whole = compute_cid(data, cid_version=version)
    importer = FileImporter(version)
    edges = sorted({0, size, *(c for c in cuts if c <= size)})
    for start, end in zip(edges, edges[1:], strict=False):
        importer.write(data[start:end])
    assert str(importer.finish()) == whole
    assert importer.size == size


def test_reader_accepts_dags_from_other_chunkers() -> None:
    # A DAG an importer with 3-byte chunks and data in the root would build: leaves of type
    # File and Raw (UnixFS 0), CIDv0 and CIDv1 links mixed. Only hashes and order matter.
    blocks: dict[Cid, bytes] = {}
    leaf_raw = Cid.for_block(b"def", version=1, codec=CODEC_RAW)
    blocks[leaf_raw] = b"def"
    leaf_pb = _dag_pb_node([], b"\x08\x00\x12\x03ghi\x18\x03")  # UnixFS type Raw
    leaf_pb_cid = Cid.for_block(leaf_pb, version=0, codec=CODEC_DAG_PB)
    blocks[leaf_pb_cid] = leaf_pb
    links = [_Link(leaf_raw, 3, 3), _Link(leaf_pb_cid, len(leaf_pb), 3)]
    root_block = _dag_pb_node(links, _unixfs_file_data(b"abc", 9, [3, 3]))
    root = Cid.for_block(root_block, version=1, codec=CODEC_DAG_PB)
    blocks[root] = root_block
    assert b"".join(iter_file(blocks.__getitem__, root)) == b"abcdefghi"


def test_reader_catches_a_substituted_block() -> None:
    data = random.Random(1).randbytes(2 * CHUNK_SIZE)
    root, blocks = _build(data)
    leaves = [c for c in blocks if c.codec == CODEC_RAW]
    blocks[leaves[0]] = blocks[leaves[1]]  # a valid block, under the wrong CID
    with pytest.raises(CidMismatch) as info:
        b"".join(iter_file(blocks.__getitem__, root))
    assert info.value.expected == str(leaves[0])
    assert info.value.actual == str(leaves[1])


def test_reader_reports_missing_blocks() -> None:
    root, blocks = _build(bytes(2 * CHUNK_SIZE + 1))

    def source(cid: Cid) -> bytes:
        if cid not in blocks or cid.codec == CODEC_RAW:
            raise ContentNotFound(f"{cid} missing")
        return blocks[cid]

    with pytest.raises(ContentNotFound):
        list(iter_file(source, root))


def test_reader_refuses_directories_and_garbage() -> None:
    directory = _dag_pb_node([], b"\x08\x01")
    cid = Cid.for_block(directory, version=0, codec=CODEC_DAG_PB)
    with pytest.raises(StorageError, match="UnixFS directory, not a file"):
        list(iter_file({cid: directory}.__getitem__, cid))
    garbage = b"\x0a\xff"
    cid = Cid.for_block(garbage, version=1, codec=CODEC_DAG_PB)
    with pytest.raises(StorageError, match="not valid dag-pb"):
        list(iter_file({cid: garbage}.__getitem__, cid))
    bare = _dag_pb_node([], b"")[:0]
    cid = Cid.for_block(bare, version=1, codec=CODEC_DAG_PB)
    with pytest.raises(StorageError, match="without UnixFS data"):
        list(iter_file({cid: bare}.__getitem__, cid))


def test_importer_cannot_be_reused() -> None:
    importer = FileImporter(1)
    importer.write(b"x")
    root = importer.finish()
    assert importer.finish() == root
    with pytest.raises(RuntimeError, match="finished"):
        importer.write(b"y")
