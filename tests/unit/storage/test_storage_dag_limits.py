"""Reading a hostile UnixFS DAG: repeated links, empty leaves and sizes that do not add up.

Each case counts the blocks the reader fetches: every fetch is an IPFS request, and before these
checks a 13 KB root of repeated links to an empty leaf made 90 000 of them, reading nothing.
"""

from __future__ import annotations

import pytest

from chefsplan_agents.errors import ContentTooLarge, StorageError
from chefsplan_agents.storage import CHUNK_SIZE, Cid, FileImporter
from chefsplan_agents.storage._base import read_content
from chefsplan_agents.storage._cid import CODEC_DAG_PB, CODEC_RAW
from chefsplan_agents.storage._unixfs import (
    MAX_LINKS,
    _dag_pb_node,
    _decode_dag_pb,
    _Link,
    _unixfs_file_data,
    block_budget,
    iter_blocks,
    iter_file,
    root_file_size,
)


class _Blocks(dict[Cid, bytes]):
    """A block source that counts fetches."""

    fetched = 0

    def fetch(self, cid: Cid) -> bytes:
        self.fetched += 1
        return self[cid]

    def raw(self, data: bytes) -> Cid:
        cid = Cid.for_block(data, version=1, codec=CODEC_RAW)
        self[cid] = data
        return cid

    def node(
        self,
        children: list[Cid],
        *,
        blocksizes: list[int] | None,
        filesize: int | None,
        data: bytes = b"",
        tsize: int = 1,
    ) -> Cid:
        unixfs = bytearray(b"\x08\x02")
        if data:
            unixfs += b"\x12" + bytes([len(data)]) + data
        if filesize is not None:
            unixfs += _unixfs_file_data(b"", filesize, [])[2:]
        for size in blocksizes or []:
            unixfs += _unixfs_file_data(b"", 0, [size])[4:]
        block = _dag_pb_node([_Link(c, tsize, 0) for c in children], bytes(unixfs))
        cid = Cid.for_block(block, version=1, codec=CODEC_DAG_PB)
        self[cid] = block
        return cid


def _read(blocks: _Blocks, root: Cid, max_bytes: int | None = 4 * 1024 * 1024) -> bytes:
    return read_content(blocks.fetch, root, max_bytes)


def test_the_node_builder_matches_the_importer() -> None:
    # The hand-built nodes below use the importer's own encoding.
    blocks = _Blocks()
    leaf = blocks.raw(b"abc")
    built = blocks.node([leaf, leaf], blocksizes=[3, 3], filesize=6)
    reference = _dag_pb_node([_Link(leaf, 1, 3)] * 2, _unixfs_file_data(b"", 6, [3, 3]))
    assert blocks[built] == reference
    assert _read(blocks, built) == b"abcabc"


def test_repeated_links_without_sizes_are_refused_at_the_root() -> None:
    # The reported attack: ~13 KB of links to one empty leaf, no block sizes.
    blocks = _Blocks()
    empty = blocks.raw(b"")
    root = blocks.node([empty] * 350, blocksizes=None, filesize=None)
    assert len(blocks[root]) > 12_000
    with pytest.raises(StorageError, match="350 links but 0 block sizes"):
        _read(blocks, root)
    assert blocks.fetched == 1
    with pytest.raises(StorageError, match="350 links but 0 block sizes"):
        list(iter_blocks(blocks.fetch, root))


def test_zero_size_links_are_refused() -> None:
    blocks = _Blocks()
    empty = blocks.raw(b"")
    root = blocks.node([empty] * 350, blocksizes=[0] * 350, filesize=0)
    with pytest.raises(StorageError, match="links a child of zero bytes"):
        _read(blocks, root)
    with pytest.raises(StorageError, match="links a child of zero bytes"):
        list(iter_file(blocks.fetch, root))  # no max_bytes either
    assert blocks.fetched == 2


@pytest.mark.parametrize("leaf_kind", ["raw", "dag-pb"])
def test_an_empty_leaf_inside_a_file_is_refused(leaf_kind: str) -> None:
    blocks = _Blocks()
    if leaf_kind == "raw":
        empty = blocks.raw(b"")
    else:
        empty = blocks.node([], blocksizes=None, filesize=0)
    root = blocks.node([empty] * 350, blocksizes=[1] * 350, filesize=350)
    with pytest.raises(StorageError, match="holds 0 bytes of the file where its parent declares 1"):
        _read(blocks, root)
    assert blocks.fetched == 3  # root (twice: size, then walk) and the first leaf


def test_declared_file_size_must_equal_the_children() -> None:
    blocks = _Blocks()
    leaf = blocks.raw(b"abcd")
    root = blocks.node([leaf, leaf], blocksizes=[4, 4], filesize=5)
    with pytest.raises(StorageError, match="declares 5 bytes but holds 8"):
        _read(blocks, root)
    # The root's own size can no longer hide a larger file from max_bytes.
    small_claim = blocks.node([leaf] * 3, blocksizes=[1, 1, 1], filesize=3)
    with pytest.raises(StorageError, match="holds 4 bytes of the file where its parent declares 1"):
        _read(blocks, small_claim, max_bytes=3)


def test_sizes_are_checked_at_every_level() -> None:
    blocks = _Blocks()
    leaf = blocks.raw(b"x" * 10)
    middle = blocks.node([leaf, leaf], blocksizes=[10, 10], filesize=20)
    lying = blocks.node([leaf, leaf], blocksizes=[10, 10], filesize=20, data=b"!")
    assert _read(blocks, blocks.node([middle, middle], blocksizes=[20, 20], filesize=40)) == (
        b"x" * 40
    )
    root = blocks.node([middle, lying], blocksizes=[20, 20], filesize=40)
    with pytest.raises(StorageError, match="declares 20 bytes but holds 21"):
        _read(blocks, root)


def _finely_cut(blocks: _Blocks, fanout: int) -> tuple[Cid, int]:
    """Two levels of ``fanout`` links to a 1-byte leaf: sizes all add up, content is tiny."""
    leaf = blocks.raw(b"x")
    middle = blocks.node([leaf] * fanout, blocksizes=[1] * fanout, filesize=fanout)
    size = fanout * fanout
    root = blocks.node([middle] * fanout, blocksizes=[fanout] * fanout, filesize=size)
    return root, size


@pytest.mark.parametrize("max_bytes", [None, 4 * 1024 * 1024])
def test_a_consistent_dag_cut_too_finely_stops_at_the_block_budget(max_bytes: int | None) -> None:
    # The reported worst case, scaled down: two levels of repeated links to a tiny leaf. With
    # 1 MiB blocks of links that is ~6e8 fetches; here 174 x 174 = 30 276 leaves of one byte.
    blocks = _Blocks()
    root, size = _finely_cut(blocks, MAX_LINKS)
    budget = block_budget(size)
    assert budget == 2 * (size // 1024 + 1) + 64 == 124
    with pytest.raises(StorageError, match="needs more than 124 blocks for its size"):
        b"".join(iter_file(blocks.fetch, root, max_bytes=max_bytes))
    assert blocks.fetched == budget


def test_the_budget_follows_max_bytes_when_it_is_smaller() -> None:
    blocks = _Blocks()
    root, size = _finely_cut(blocks, MAX_LINKS)
    with pytest.raises(ContentTooLarge):
        _read(blocks, root, max_bytes=size - 1)
    assert blocks.fetched == 1
    blocks.fetched = 0
    with pytest.raises(StorageError, match="needs more than 66 blocks"):
        list(iter_file(blocks.fetch, root, max_bytes=1000))
    assert blocks.fetched == 66


def test_a_chain_of_single_links_stops_at_the_budget() -> None:
    blocks = _Blocks()
    node = blocks.raw(b"y")
    for _ in range(500):
        node = blocks.node([node], blocksizes=[1], filesize=1)
    with pytest.raises(StorageError, match="needs more than 66 blocks"):
        _read(blocks, node)
    assert blocks.fetched == 1 + 66


def test_explicit_block_limit() -> None:
    blocks = _Blocks()
    leaf = blocks.raw(b"z" * 100)
    root = blocks.node([leaf] * 5, blocksizes=[100] * 5, filesize=500)
    assert b"".join(iter_file(blocks.fetch, root, max_blocks=6)) == b"z" * 500
    with pytest.raises(StorageError, match="more than 5 blocks"):
        list(iter_file(blocks.fetch, root, max_blocks=5))


def test_real_files_with_repeated_leaves_still_read() -> None:
    # A file of zeros repeats one leaf CID: repetition itself is legitimate.
    blocks = _Blocks()
    data = bytes(3 * CHUNK_SIZE + 17)
    importer = FileImporter(0, lambda cid, block: blocks.__setitem__(cid, block))
    importer.write(data)
    root = importer.finish()
    assert _read(blocks, root) == data
    assert root_file_size(blocks.fetch, root) == len(data)
    top = _decode_dag_pb(root, blocks[root])
    assert top.blocksizes == [CHUNK_SIZE] * 3 + [17]


def test_packed_block_sizes_are_read() -> None:
    blocks = _Blocks()
    leaf = blocks.raw(b"ab")
    packed = b"\x08\x02\x18\x04\x22\x02\x02\x02"  # Type File, filesize 4, blocksizes [2, 2] packed
    block = _dag_pb_node([_Link(leaf, 2, 2)] * 2, packed)
    root = Cid.for_block(block, version=1, codec=CODEC_DAG_PB)
    blocks[root] = block
    assert _read(blocks, root) == b"abab"
