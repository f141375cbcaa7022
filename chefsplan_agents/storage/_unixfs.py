"""A streaming UnixFS file importer and DAG reader whose CIDs equal an IPFS daemon's.

The importer reproduces ``ipfs add`` with its defaults: fixed 256 KiB chunks and the balanced
layout with at most 174 links per node. With CIDv1 (``--cid-version=1 --raw-leaves``) leaves
are raw blocks; with CIDv0 (plain ``add``) leaves are dag-pb nodes holding a UnixFS ``File``
with the chunk as data. A file of one chunk is that leaf alone. Interior nodes are dag-pb
UnixFS ``File`` nodes listing each child's file size in ``blocksizes``; links carry an empty
name and the child's cumulative size (``Tsize``).

The balanced layout groups the leaves 174 at a time into parents, then the parents 174 at a
time, until one node remains. :class:`FileImporter` builds that tree as data arrives and keeps
only the pending links of each level, so memory stays bounded whatever the file size.

The protobuf of dag-pb and UnixFS is small enough to write by hand. dag-pb's canonical form
puts ``Links`` (field 2) before ``Data`` (field 1) on the wire.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from chefsplan_agents.errors import CidMismatch, ContentNotFound, StorageError
from chefsplan_agents.storage._cid import CODEC_DAG_PB, CODEC_RAW, Cid

__all__ = [
    "CHUNK_SIZE",
    "MAX_DAG_BLOCKS",
    "MAX_LINKS",
    "MIN_USEFUL_BLOCK_BYTES",
    "BlockSink",
    "FileImporter",
    "block_budget",
    "iter_file",
    "root_file_size",
]

CHUNK_SIZE = 262144
MAX_LINKS = 174

MIN_USEFUL_BLOCK_BYTES = 1024
"""The smallest leaf a reader budgets for. ``ipfs add`` cuts 256 KiB (``size-N`` chunkers any N,
rabin and buzhash far more than this); a file cut finer is refused once its blocks outnumber
what :func:`block_budget` allows for its size."""

MAX_DAG_BLOCKS = 1 << 22
"""The most blocks one read visits, whatever the file's size: 1 TiB in 256 KiB leaves."""

_UNIXFS_RAW = 0
_UNIXFS_FILE = 2
_UNIXFS_TYPE_NAMES = {1: "directory", 3: "metadata", 4: "symlink", 5: "HAMT shard"}

BlockSink = Callable[[Cid, bytes], None]
"""Receives every block the importer creates, leaves first, the root last."""


# --- protobuf, by hand ---------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _iter_fields(data: bytes | memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield ``(field number, wire type, value)``; length-delimited values as memoryviews."""
    view = memoryview(data)
    pos = 0
    while pos < len(view):
        key, pos = _read_varint(view, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(view, pos)
            yield field, wire, value
        elif wire == 2:
            length, pos = _read_varint(view, pos)
            if pos + length > len(view):
                raise ValueError("truncated length-delimited field")
            yield field, wire, view[pos : pos + length]
            pos += length
        elif wire == 1:
            pos += 8
            yield field, wire, 0
        elif wire == 5:
            pos += 4
            yield field, wire, 0
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(view):
            raise ValueError("truncated fixed-size field")


def _unixfs_file_data(data: bytes, filesize: int, blocksizes: list[int]) -> bytes:
    # Field order as the reference encoders write it: Type, Data, filesize, blocksizes
    # (proto2 repeated, so unpacked: one key per entry).
    out = bytearray(b"\x08\x02")
    if data:
        out += b"\x12" + _varint(len(data)) + data
    out += b"\x18" + _varint(filesize)
    for size in blocksizes:
        out += b"\x20" + _varint(size)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class _Link:
    cid: Cid
    tsize: int  # cumulative size of the block and everything below it
    filesize: int  # bytes of file content below it


def _dag_pb_node(links: list[_Link], data: bytes) -> bytes:
    out = bytearray()
    for link in links:
        hash_ = link.cid.to_bytes()
        body = b"\x0a" + _varint(len(hash_)) + hash_ + b"\x12\x00" + b"\x18" + _varint(link.tsize)
        out += b"\x12" + _varint(len(body)) + body
    out += b"\x0a" + _varint(len(data)) + data
    return bytes(out)


@dataclass(frozen=True, slots=True)
class _DagNode:
    links: list[Cid]
    data: bytes | None  # the UnixFS file data this node holds itself
    filesize: int | None
    blocksizes: list[int]  # the file bytes under each link, in link order

    @property
    def content_size(self) -> int:
        """The file bytes this node and its children hold, by their declared sizes."""
        return len(self.data or b"") + sum(self.blocksizes)


def _decode_dag_pb(cid: Cid, block: bytes) -> _DagNode:
    """Decode a dag-pb UnixFS file node; anything else is a one-line StorageError."""
    links: list[Cid] = []
    unixfs: memoryview | None = None
    try:
        for field, wire, value in _iter_fields(block):
            if field == 2 and isinstance(value, memoryview):
                for lfield, _lwire, lvalue in _iter_fields(value):
                    if lfield == 1 and isinstance(lvalue, memoryview):
                        links.append(Cid.from_bytes(bytes(lvalue)))
            elif field == 1 and wire == 2 and isinstance(value, memoryview):
                unixfs = value
        kind, data, filesize = _UNIXFS_FILE, None, None
        blocksizes: list[int] = []
        if unixfs is not None:
            for field, _wire, value in _iter_fields(unixfs):
                if field == 1 and isinstance(value, int):
                    kind = value
                elif field == 2 and isinstance(value, memoryview):
                    data = bytes(value)
                elif field == 3 and isinstance(value, int):
                    filesize = value
                elif field == 4 and isinstance(value, int):
                    blocksizes.append(value)
                elif field == 4 and isinstance(value, memoryview):  # packed encoding
                    pos = 0
                    while pos < len(value):
                        size, pos = _read_varint(value, pos)
                        blocksizes.append(size)
    except ValueError as err:
        raise StorageError(f"block {cid} is not valid dag-pb ({err}); it cannot be read") from err
    if unixfs is None:
        raise StorageError(f"block {cid} is dag-pb without UnixFS data; it is not a file")
    if kind not in (_UNIXFS_FILE, _UNIXFS_RAW):
        name = _UNIXFS_TYPE_NAMES.get(kind, f"type {kind}")
        raise StorageError(f"{cid} is a UnixFS {name}, not a file; pass the CID of a file")
    node = _DagNode(links, data, filesize, blocksizes)
    # The sizes a node declares must add up, so that a reader can check every child against
    # them: no link without its size, no child of zero bytes, and filesize = data + children.
    if len(blocksizes) != len(links):
        raise StorageError(
            f"UnixFS node {cid} has {len(links)} links but {len(blocksizes)} block sizes; "
            "it is malformed"
        )
    if 0 in blocksizes:
        raise StorageError(f"UnixFS node {cid} links a child of zero bytes; it is malformed")
    if filesize is not None and filesize != node.content_size:
        raise StorageError(
            f"UnixFS node {cid} declares {filesize} bytes but holds {node.content_size}; "
            "it is malformed"
        )
    return node


# --- importer ------------------------------------------------------------------------------


class FileImporter:
    """Chunk a byte stream into a UnixFS file DAG, block by block.

    Feed bytes with :meth:`write` (any sizes), then call :meth:`finish` once for the root CID.
    Every block is handed to ``sink`` as soon as it exists; without a sink the importer only
    hashes (like ``ipfs add --only-hash``).

    Args:
        cid_version: 1 for ``--cid-version=1 --raw-leaves`` (raw leaves, base32 CIDs); 0 for
            plain ``ipfs add`` (dag-pb leaves, ``Qm…`` CIDs).
        sink: Receives ``(cid, block)`` for every block created.
    """

    def __init__(self, cid_version: int = 1, sink: BlockSink | None = None) -> None:
        if cid_version not in (0, 1):
            raise ValueError(f"cid_version must be 0 or 1, not {cid_version!r}")
        self._version = cid_version
        self._sink = sink
        self._buffer = bytearray()
        # _levels[0] holds leaves not yet grouped; _levels[i] nodes of height i.
        self._levels: list[list[_Link]] = [[]]
        self._counts: list[int] = [0]
        self._size = 0
        self._root: Cid | None = None

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Add the next bytes of the file."""
        if self._root is not None:
            raise RuntimeError("importer already finished")
        view = memoryview(data).cast("B")
        self._size += len(view)
        if self._buffer:
            take = min(len(view), CHUNK_SIZE - len(self._buffer))
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) < CHUNK_SIZE:
                return
            self._leaf(bytes(self._buffer))
            self._buffer.clear()
        # Whole chunks straight from the caller's buffer, without copying into ours.
        while len(view) >= CHUNK_SIZE:
            self._leaf(bytes(view[:CHUNK_SIZE]))
            view = view[CHUNK_SIZE:]
        if view:
            self._buffer += view

    def finish(self) -> Cid:
        """Flush the last chunk and the pending levels; return the root CID."""
        if self._root is not None:
            return self._root
        # The chunker emits a final partial chunk, or one empty chunk for an empty file.
        if self._buffer or self._counts[0] == 0:
            self._leaf(bytes(self._buffer))
            self._buffer.clear()
        height = 0
        while True:
            if self._counts[height] == 1 and height == len(self._levels) - 1:
                self._root = self._levels[height][0].cid
                return self._root
            if self._levels[height]:
                self._reduce(height)
            height += 1

    def _emit(self, cid: Cid, block: bytes) -> None:
        if self._sink is not None:
            self._sink(cid, block)

    def _leaf(self, chunk: bytes) -> None:
        if self._version == 1:
            cid = Cid.for_block(chunk, version=1, codec=CODEC_RAW)
            self._emit(cid, chunk)
            self._push(0, _Link(cid, len(chunk), len(chunk)))
        else:
            block = _dag_pb_node([], _unixfs_file_data(chunk, len(chunk), []))
            cid = Cid.for_block(block, version=0, codec=CODEC_DAG_PB)
            self._emit(cid, block)
            self._push(0, _Link(cid, len(block), len(chunk)))

    def _push(self, height: int, link: _Link) -> None:
        self._levels[height].append(link)
        self._counts[height] += 1
        if len(self._levels[height]) == MAX_LINKS:
            self._reduce(height)

    def _reduce(self, height: int) -> None:
        children = self._levels[height]
        self._levels[height] = []
        if height + 1 == len(self._levels):
            self._levels.append([])
            self._counts.append(0)
        filesize = sum(link.filesize for link in children)
        data = _unixfs_file_data(b"", filesize, [link.filesize for link in children])
        block = _dag_pb_node(children, data)
        cid = Cid.for_block(block, version=self._version, codec=CODEC_DAG_PB)
        self._emit(cid, block)
        tsize = len(block) + sum(link.tsize for link in children)
        self._push(height + 1, _Link(cid, tsize, filesize))


# --- reader --------------------------------------------------------------------------------

BlockSource = Callable[[Cid], bytes]
"""Returns the bytes of a block; raises ContentNotFound when it is missing."""


def _verified(source: BlockSource, cid: Cid) -> bytes:
    block = source(cid)
    if not cid.matches(block):
        actual = Cid.for_block(block, version=cid.version, codec=cid.codec)
        raise CidMismatch(str(cid), str(actual), f"block of {len(block)} bytes")
    return block


def root_file_size(source: BlockSource, root: Cid) -> int:
    """The file size a root block announces (its length for a raw block); hash-checked.

    Raises:
        StorageError: The root is not a UnixFS file, or its sizes do not add up.
    """
    block = _verified(source, root)
    if root.codec == CODEC_RAW:
        return len(block)
    return _decode_dag_pb(root, block).content_size


def block_budget(size: int) -> int:
    """How many blocks a reader visits at most for a file of ``size`` bytes.

    Every leaf inside a file holds at least one byte and the sizes are checked at every level,
    so a DAG cannot grow its block count without growing its size, except by cutting its
    content finer. This allows twice the blocks of a file cut in :data:`MIN_USEFUL_BLOCK_BYTES`
    leaves (the interior nodes of a tree with two or more links per node are fewer than its
    leaves), plus a little for tiny files, never more than :data:`MAX_DAG_BLOCKS`.
    """
    return min(MAX_DAG_BLOCKS, 2 * (max(size, 0) // MIN_USEFUL_BLOCK_BYTES + 1) + 64)


def iter_file(
    source: BlockSource,
    root: Cid,
    *,
    max_bytes: int | None = None,
    max_blocks: int | None = None,
) -> Iterator[bytes]:
    """Yield a UnixFS file's content in order, walking its DAG depth first.

    Every block is re-hashed against the CID it was fetched under before anything in it is
    used, so a store or daemon that returns other bytes is caught at that block. Only the
    path from the root to the current leaf is held in memory.

    A DAG is data from a stranger: links may repeat and a leaf may be empty, so the bytes read
    alone do not bound the work. Every child must hold exactly the bytes its parent declares
    for it (and at least one), and the walk visits at most ``max_blocks`` blocks.

    Args:
        source: Fetches a block by CID.
        root: The file's root CID (a raw block or a dag-pb UnixFS file node).
        max_bytes: The most bytes the caller will read; with the root's declared size it sets
            the default block budget. It does not stop the walk (the caller counts bytes).
        max_blocks: The most blocks to visit (default :func:`block_budget` of the smaller of
            the root's declared size and ``max_bytes``).

    Yields:
        The file's content, one chunk (leaf or inline data) at a time; no empty chunks.

    Raises:
        CidMismatch: A block does not hash to its CID.
        ContentNotFound: A block is missing (raised by ``source``).
        StorageError: The DAG is not a UnixFS file, its sizes do not add up, a leaf inside it
            is empty, or it needs more blocks than the budget.
    """
    budget = max_blocks
    visited = 0
    stack: list[Iterator[tuple[Cid, int | None]]] = [iter(((root, None),))]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        cid, expected = item
        visited += 1
        if budget is not None and visited > budget:
            raise StorageError(
                f"{root} needs more than {budget} blocks for its size; its DAG repeats or "
                "splits its content too finely to read"
            )
        block = _verified(source, cid)
        data: bytes | None
        links: list[Cid]
        sizes: list[int]
        if cid.codec == CODEC_RAW:
            size, data, links, sizes = len(block), block, [], []
        else:
            node = _decode_dag_pb(cid, block)
            size, data, links, sizes = node.content_size, node.data, node.links, node.blocksizes
        if expected is not None and size != expected:
            raise StorageError(
                f"block {cid} of {root} holds {size} bytes of the file where its parent "
                f"declares {expected}; the DAG is malformed"
            )
        if budget is None:  # the root: its declared size sets the budget
            limit = size if max_bytes is None else min(size, max_bytes)
            budget = block_budget(limit)
        if data:
            yield data
        if links:
            stack.append(iter(zip(links, sizes, strict=True)))


def iter_blocks(source: BlockSource, root: Cid, *, missing_ok: bool = False) -> Iterator[Cid]:
    """Yield the CID of every block of a file's DAG, checking interior nodes as it goes.

    Raw leaves are named, not fetched: callers use this to check presence cheaply. With
    ``missing_ok`` a dag-pb node that is missing is still named, and its unknown children
    are skipped instead of raising ``ContentNotFound``.

    Raises:
        StorageError: The DAG names more than :data:`MAX_DAG_BLOCKS` blocks (links repeat), or
            a node is not a well-formed UnixFS file node.
    """
    stack: list[Iterator[Cid]] = [iter((root,))]
    named = 0
    while stack:
        cid = next(stack[-1], None)
        if cid is None:
            stack.pop()
            continue
        named += 1
        if named > MAX_DAG_BLOCKS:
            raise StorageError(f"{root} names more than {MAX_DAG_BLOCKS} blocks; it is malformed")
        yield cid
        if cid.codec == CODEC_DAG_PB:
            try:
                block = _verified(source, cid)
            except ContentNotFound:
                if missing_ok:
                    continue
                raise
            node = _decode_dag_pb(cid, block)
            if node.links:
                stack.append(iter(node.links))
