"""The ``ContentStore`` protocol and the block-store base the embedded stores share."""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol, Self, runtime_checkable

from chefsplan_agents.errors import ContentNotFound, ContentTooLarge, StorageError
from chefsplan_agents.storage._cid import Cid, parse_cid
from chefsplan_agents.storage._unixfs import (
    CHUNK_SIZE,
    BlockSource,
    FileImporter,
    iter_blocks,
    iter_file,
    root_file_size,
)

__all__ = [
    "BlockContentStore",
    "Content",
    "ContentStore",
    "compute_cid",
    "compute_file_cid",
    "iter_source",
]

Content = bytes | bytearray | memoryview | BinaryIO | Iterable[bytes]
"""What :meth:`ContentStore.put` accepts: bytes, a binary file object, or an iterable of bytes."""

_READ_SIZE = 4 * CHUNK_SIZE


@runtime_checkable
class ContentStore(Protocol):
    """Content-addressed storage whose CIDs equal an IPFS daemon's ``ipfs add``.

    With CIDv1 (the default) a CID is what ``ipfs add --cid-version=1 --raw-leaves`` prints;
    with CIDv0 what plain ``ipfs add`` prints. Content read back is always re-hashed against
    its CID, block by block; a store never returns bytes that do not match.
    Stores are context managers; :meth:`close` releases connections and files.
    """

    @property
    def cid_version(self) -> int:
        """The CID version :meth:`put` produces (0 or 1)."""
        ...

    def put(self, data: Content, *, pin: bool = True) -> str:
        """Store content and return its CID.

        Args:
            data: Bytes, a binary file object (read to its end) or an iterable of bytes;
                streamed, never held whole in memory unless given as bytes.
            pin: Keep the content when the store collects garbage (``ipfs add`` pins too).

        Returns:
            The CID string.

        Raises:
            StorageError: The content could not be stored (``StoreUnavailable`` for a daemon
                that cannot be reached, ``CidMismatch`` for one that disagrees on the CID).
        """
        ...

    def put_file(self, path: str | Path, *, pin: bool = True) -> str:
        """Store a file's content (streamed) and return its CID.

        Raises:
            StorageError: The file does not exist, is a directory or cannot be read.
        """
        ...

    def get(self, cid: str, *, max_bytes: int | None = None) -> bytes:
        """Return the content of ``cid``, every block re-hashed.

        Args:
            cid: A CID string (``Qm…`` or ``b…``).
            max_bytes: Refuse content larger than this before reading it.

        Raises:
            InvalidCid: ``cid`` is not a supported CID.
            ContentNotFound: The store does not hold the content.
            CidMismatch: A block does not hash to its CID.
            ContentTooLarge: The content is larger than ``max_bytes``.
        """
        ...

    def iter_chunks(self, cid: str) -> Iterator[bytes]:
        """Yield the content of ``cid`` chunk by chunk, each block re-hashed as it is read.

        Raises:
            InvalidCid: ``cid`` is not a supported CID.
            ContentNotFound: A block is missing (possibly after some chunks were yielded).
            CidMismatch: A block does not hash to its CID.
        """
        ...

    def has(self, cid: str) -> bool:
        """Whether the store holds the content of ``cid``.

        Raises:
            InvalidCid: ``cid`` is not a supported CID.
        """
        ...

    def pin(self, cid: str) -> None:
        """Keep the content of ``cid`` when the store collects garbage.

        Raises:
            InvalidCid: ``cid`` is not a supported CID.
            ContentNotFound: The store does not hold the content.
        """
        ...

    def unpin(self, cid: str) -> None:
        """Undo :meth:`pin`; unpinning content that is not pinned does nothing.

        Raises:
            InvalidCid: ``cid`` is not a supported CID.
        """
        ...

    def is_pinned(self, cid: str) -> bool:
        """Whether ``cid`` is pinned (directly, as :meth:`pin` does).

        Raises:
            InvalidCid: ``cid`` is not a supported CID.
        """
        ...

    def close(self) -> None:
        """Release connections and files; the store cannot be used afterwards."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def _check_version(cid_version: int) -> int:
    if cid_version not in (0, 1):
        raise StorageError(f"cid_version must be 0 or 1, not {cid_version!r}")
    return cid_version


def iter_source(data: Content) -> Iterator[bytes | bytearray | memoryview]:
    """Read ``data`` (bytes, a binary file object, or an iterable of bytes) piece by piece.

    Raises:
        TypeError: ``data`` is text or another type that is not bytes.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        yield data
        return
    if isinstance(data, str):
        raise TypeError("content must be bytes, not str; encode text first (e.g. .encode())")
    read = getattr(data, "read", None)
    if callable(read):
        while True:
            piece = read(_READ_SIZE)
            if not piece:
                return
            if not isinstance(piece, bytes | bytearray | memoryview):
                raise TypeError("content file must be opened in binary mode ('rb')")
            yield piece
    if not isinstance(data, Iterable):
        raise TypeError(
            f"content must be bytes, a binary file or bytes pieces, not {type(data).__name__}"
        )
    for piece in data:
        if not isinstance(piece, bytes | bytearray | memoryview):
            raise TypeError(f"content pieces must be bytes, not {type(piece).__name__}")
        yield piece


def _open_source(path: str | Path) -> BinaryIO:
    file = Path(path).expanduser()
    if file.is_dir():
        raise StorageError(f"{file} is a directory; pass a file")
    try:
        return open(file, "rb")  # the caller closes it
    except FileNotFoundError as err:
        raise StorageError(f"{file} does not exist; pass the path of a file") from err
    except OSError as err:
        raise StorageError(f"cannot read {file}: {err.strerror or err}") from err


def read_content(source: BlockSource, root: Cid, max_bytes: int | None) -> bytes:
    """The whole content under ``root``, every block verified, refused early past ``max_bytes``.

    Shared by every store: they differ only in where blocks come from (``source``).
    """
    if max_bytes is not None:
        size = root_file_size(source, root)
        if size > max_bytes:
            raise ContentTooLarge(
                f"content {root} has {size} bytes, more than the limit of {max_bytes}"
            )
    buffer = io.BytesIO()
    for chunk in iter_file(source, root, max_bytes=max_bytes):
        buffer.write(chunk)
        if max_bytes is not None and buffer.tell() > max_bytes:
            raise ContentTooLarge(f"content {root} is larger than the limit of {max_bytes}")
    return buffer.getvalue()


def compute_cid(data: Content, *, cid_version: int = 1) -> str:
    """The CID an IPFS daemon would give ``data``, computed locally without storing it.

    Args:
        data: Bytes, a binary file object or an iterable of bytes (streamed).
        cid_version: 1 for ``ipfs add --cid-version=1`` (raw leaves), 0 for plain ``ipfs add``.

    Returns:
        The CID string.
    """
    importer = FileImporter(_check_version(cid_version))
    for piece in iter_source(data):
        importer.write(piece)
    return str(importer.finish())


def compute_file_cid(path: str | Path, *, cid_version: int = 1) -> str:
    """:func:`compute_cid` of a file's content, streamed.

    Raises:
        StorageError: The file does not exist, is a directory or cannot be read.
    """
    with _open_source(path) as file:
        try:
            return compute_cid(file, cid_version=cid_version)
        except OSError as err:
            raise StorageError(f"cannot read {path}: {err.strerror or err}") from err


class BlockContentStore(ABC):
    """A :class:`ContentStore` over a local block store: subclasses keep blocks and pins.

    Blocks are keyed by multihash, so a block is stored once whatever CID names it.

    Args:
        cid_version: 1 (default; ``--cid-version=1 --raw-leaves``) or 0 (plain ``ipfs add``).
    """

    def __init__(self, *, cid_version: int = 1) -> None:
        self._cid_version = _check_version(cid_version)
        self._closed = False

    # --- what a subclass provides -------------------------------------------------------

    @abstractmethod
    def _read_block(self, multihash: bytes) -> bytes | None:
        """The block's bytes as stored (not checked), or ``None`` when absent."""

    @abstractmethod
    def _write_block(self, multihash: bytes, block: bytes) -> None:
        """Store a block (already hashed by the caller)."""

    @abstractmethod
    def _has_block(self, multihash: bytes) -> bool: ...

    @abstractmethod
    def _set_pin(self, root: Cid, pinned: bool) -> None:
        """Record or drop a pin on ``root`` (keyed by multihash; the codec is kept)."""

    @abstractmethod
    def _get_pin(self, multihash: bytes) -> bool: ...

    @abstractmethod
    def _pinned(self) -> list[Cid]:
        """Every pinned root."""

    @abstractmethod
    def _block_keys(self) -> list[bytes]:
        """The multihashes of every stored block."""

    @abstractmethod
    def _delete_block(self, multihash: bytes) -> None: ...

    # --- ContentStore ---------------------------------------------------------------------

    @property
    def cid_version(self) -> int:
        return self._cid_version

    def put(self, data: Content, *, pin: bool = True) -> str:
        self._check_open()
        importer = FileImporter(self._cid_version, self._store_block)
        for piece in iter_source(data):
            importer.write(piece)
        root = importer.finish()
        if pin:
            self._set_pin(root, True)
        return str(root)

    def put_file(self, path: str | Path, *, pin: bool = True) -> str:
        with _open_source(path) as file:
            try:
                return self.put(file, pin=pin)
            except OSError as err:
                raise StorageError(f"cannot read {path}: {err.strerror or err}") from err

    def get(self, cid: str, *, max_bytes: int | None = None) -> bytes:
        root = parse_cid(cid)
        self._check_open()
        return read_content(self._source, root, max_bytes)

    def iter_chunks(self, cid: str) -> Iterator[bytes]:
        root = parse_cid(cid)
        self._check_open()
        return iter_file(self._source, root)

    def has(self, cid: str) -> bool:
        root = parse_cid(cid)
        self._check_open()
        try:
            return all(
                self._has_block(block.multihash) for block in iter_blocks(self._source, root)
            )
        except ContentNotFound:
            return False

    def pin(self, cid: str) -> None:
        root = parse_cid(cid)
        self._check_open()
        if not self.has(cid):
            raise ContentNotFound(f"cannot pin {root}: this store does not hold it; put it first")
        self._set_pin(root, True)

    def unpin(self, cid: str) -> None:
        root = parse_cid(cid)
        self._check_open()
        self._set_pin(root, False)

    def is_pinned(self, cid: str) -> bool:
        root = parse_cid(cid)
        self._check_open()
        return self._get_pin(root.multihash)

    def collect_garbage(self) -> int:
        """Delete every block that no pinned content needs.

        Returns:
            The number of blocks deleted.

        Raises:
            CidMismatch: A pinned DAG's interior block is corrupt (nothing is deleted then).
        """
        self._check_open()
        keep: set[bytes] = set()
        for root in self._pinned():
            # A pinned DAG may be incomplete: keep every block of it that is here.
            blocks = iter_blocks(self._source, root, missing_ok=True)
            keep.update(cid.multihash for cid in blocks)
        deleted = 0
        for multihash in self._block_keys():
            if multihash not in keep:
                self._delete_block(multihash)
                deleted += 1
        return deleted

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- internals ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{type(self).__name__} is closed; open a new store")

    def _store_block(self, cid: Cid, block: bytes) -> None:
        if not self._has_block(cid.multihash):
            self._write_block(cid.multihash, block)

    def _source(self, cid: Cid) -> bytes:
        block = self._read_block(cid.multihash)
        if block is None:
            raise ContentNotFound(f"{cid} is not in this store; put it or fetch it first")
        return block
