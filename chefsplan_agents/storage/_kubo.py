"""``KuboStore``: the content store protocol over an IPFS daemon's HTTP RPC API.

The daemon is never trusted. :meth:`KuboStore.put` computes the CID locally from the same
bytes it streams to ``/api/v0/add`` and refuses an answer that differs; :meth:`KuboStore.get`
fetches the DAG block by block (``/api/v0/block/get``) and re-hashes every block with the
reader the local stores use, so a lying daemon is caught whatever chunker built the DAG.
Works with Kubo (go-ipfs) and the JavaScript daemon, which speak the same RPC API.
"""

from __future__ import annotations

import io
import json
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import ipfshttpclient
import ipfshttpclient.encoding as ipfs_encoding
import ipfshttpclient.exceptions as ipfs_errors

from chefsplan_agents._json import DEFAULT_MAX_JSON_DEPTH, JsonTooDeep, nesting_depth
from chefsplan_agents.errors import (
    CidMismatch,
    ContentNotFound,
    InvalidCid,
    StorageError,
    StoreUnavailable,
)
from chefsplan_agents.storage._base import (
    Content,
    _check_version,
    _open_source,
    iter_source,
    read_content,
)
from chefsplan_agents.storage._cid import Cid, parse_cid
from chefsplan_agents.storage._unixfs import CHUNK_SIZE, FileImporter, iter_file

__all__ = ["KuboStore"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
# How long has() waits for a block the daemon may have to look for on the network.
_PROBE_TIMEOUT_S = 2.0
# The daemons refuse blocks over 2 MiB (bitswap's limit); twice that is the most block/get may
# answer before the answer is refused unread.
MAX_BLOCK_BYTES = 4 * 1024 * 1024


# A JSON answer (add, block/stat, pin/*) or error body is a few hundred bytes per object.
MAX_JSON_ANSWER_BYTES = 4 * 1024 * 1024
_SPACE = re.compile(r"[ \t\n\r]*")


class _BoundedJson(ipfs_encoding.Json):  # type: ignore[misc]
    """ipfshttpclient's JSON parser, bounded in size, nesting and time.

    The client decodes every JSON answer, and every error body, with this class. Its own parser
    runs the C scanner, which recurses once per nesting level (a daemon answering ~100 kB of
    ``[`` overflowed the C stack, see :mod:`chefsplan_agents._json`), holds answers of any size,
    and re-parses its growing buffer once per line (quadratic in the number of lines). This one
    collects at most :data:`MAX_JSON_ANSWER_BYTES`, checks the nesting of the whole answer once,
    and then reads its concatenated documents in one pass. Every refusal is the client's
    ``DecodingError``: an answer's reaches :meth:`KuboStore._call`, an error body's becomes a
    bare status error; both end as a ``StorageError``.

    Documents come out when the answer ends rather than as they arrive, which is how
    ``KuboStore`` reads every JSON answer anyway.
    """

    def __init__(self) -> None:
        super().__init__()
        self._raw = bytearray()

    def parse_partial(self, data: bytes) -> Iterator[Any]:
        self._raw += data
        if len(self._raw) > MAX_JSON_ANSWER_BYTES:
            self._raw.clear()
            refusal = ValueError(f"answer is over {MAX_JSON_ANSWER_BYTES} bytes of JSON")
            raise ipfs_errors.DecodingError("json", refusal)
        return iter(())

    def parse_finalize(self) -> Iterator[Any]:
        raw, self._raw = bytes(self._raw), bytearray()
        try:
            return iter(_json_documents(raw.decode("utf-8")))
        except ValueError as err:  # not UTF-8, not JSON, or nested too deep
            raise ipfs_errors.DecodingError("json", err) from err


def _json_documents(text: str) -> list[Any]:
    """The JSON documents of ``text``, one after another (newline-separated or not)."""
    depth = nesting_depth(text)  # documents side by side: the deepest of them
    if depth > DEFAULT_MAX_JSON_DEPTH:
        raise JsonTooDeep(
            f"JSON nests {depth} levels deep, over the limit of {DEFAULT_MAX_JSON_DEPTH}"
        )
    decoder = json.JSONDecoder()
    documents: list[Any] = []
    at = _skip_space(text, 0)
    while at < len(text):
        document, at = decoder.raw_decode(text, at)
        documents.append(document)
        at = _skip_space(text, at)
    return documents


def _skip_space(text: str, at: int) -> int:
    space = _SPACE.match(text, at)
    return at if space is None else space.end()


def _bound_client_json() -> None:
    """Make the client build :class:`_BoundedJson` wherever it asks for its JSON parser.

    The client looks its parsers up by name in a module-level table, for answers and for error
    bodies alike; replacing the entry is the one place that covers both.
    """
    table = vars(ipfs_encoding).get("__encodings")
    if not isinstance(table, dict) or table.get("json") not in (ipfs_encoding.Json, _BoundedJson):
        raise ImportError(
            "this ipfshttpclient version keeps its JSON parser elsewhere; KuboStore cannot "
            "bound the nesting of daemon answers (install ipfshttpclient 0.7 or 0.8)"
        )
    table["json"] = _BoundedJson


_bound_client_json()


class _TeeReader(io.RawIOBase):
    """A binary file over content pieces that feeds every byte read to an importer.

    The daemon and the local importer see exactly the same bytes, read once.
    """

    def __init__(self, pieces: Iterator[bytes | bytearray | memoryview], importer: FileImporter):
        super().__init__()
        self._pieces = pieces
        self._importer = importer
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        while not self._pending:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._pending = memoryview(piece).cast("B")
        count = min(len(target), len(self._pending))
        target[:count] = self._pending[:count]
        self._importer.write(self._pending[:count])
        self._pending = self._pending[count:]
        return count

    def read(self, size: int = -1) -> bytes:
        size = CHUNK_SIZE if size is None or size < 0 else size
        buffer = bytearray(size)
        count = self.readinto(buffer)
        return bytes(buffer[:count])


class KuboStore:
    """A content store backed by an IPFS daemon (Kubo or the JavaScript daemon).

    Args:
        api: The daemon's RPC API as a multiaddr, e.g. ``/ip4/127.0.0.1/tcp/5001/http``.
        cid_version: 1 (default; ``add --cid-version=1 --raw-leaves``) or 0 (plain ``add``).
        timeout_s: Seconds to wait for any one request; a block that does not arrive in time
            counts as not found.
        offline: Ask the daemon not to look for missing blocks on the network (Kubo honours it).

    Raises:
        StoreUnavailable: ``api`` is not a valid daemon address.
    """

    def __init__(
        self,
        api: str = "/ip4/127.0.0.1/tcp/5001/http",
        *,
        cid_version: int = 1,
        timeout_s: float = 30.0,
        offline: bool = False,
    ) -> None:
        self._api = api
        self._cid_version = _check_version(cid_version)
        self._timeout_s = timeout_s
        self._offline = offline
        try:
            with _quiet_transport():
                self._client = ipfshttpclient.Client(api, timeout=timeout_s, session=True)
        except ipfs_errors.Error as err:
            raise StoreUnavailable(
                f"IPFS API address {api!r} is not valid: {err}; use a multiaddr like "
                "/ip4/127.0.0.1/tcp/5001/http"
            ) from err
        self._closed = False

    def __repr__(self) -> str:
        return f"KuboStore({self._api!r}, cid_version={self._cid_version})"

    @property
    def api(self) -> str:
        """The daemon's RPC API multiaddr."""
        return self._api

    @property
    def cid_version(self) -> int:
        return self._cid_version

    # --- ContentStore ---------------------------------------------------------------------

    def put(self, data: Content, *, pin: bool = True) -> str:
        importer = FileImporter(self._cid_version)
        reader = _TeeReader(iter_source(data), importer)
        options: dict[str, Any] = {"pin": pin, "chunker": f"size-{CHUNK_SIZE}"}
        if self._cid_version == 1:
            options.update(cid_version=1, raw_leaves=True, opts={"cid-base": "base32"})
        answer = self._call("add", lambda: self._client.add(reader, **options))
        expected = importer.finish()
        announced = _answer_field(answer, "Hash", "add")
        try:
            got = parse_cid(announced)
        except InvalidCid as err:
            raise CidMismatch(str(expected), announced, "the daemon's add answer") from err
        if got != expected:
            raise CidMismatch(str(expected), str(got), f"IPFS daemon at {self._api} on add")
        return str(expected)

    def put_file(self, path: str | Path, *, pin: bool = True) -> str:
        with _open_source(path) as file:
            try:
                return self.put(file, pin=pin)
            except OSError as err:
                raise StorageError(f"cannot read {path}: {err.strerror or err}") from err

    def get(self, cid: str, *, max_bytes: int | None = None) -> bytes:
        return read_content(self._fetch_block, parse_cid(cid), max_bytes)

    def iter_chunks(self, cid: str) -> Iterator[bytes]:
        root = parse_cid(cid)
        self._check_open()
        return iter_file(self._fetch_block, root)

    def has(self, cid: str) -> bool:
        """Whether the daemon holds the root block of ``cid`` (asked with a short timeout).

        Unlike the local stores, the rest of the DAG is not checked: a daemon fetches missing
        blocks from its peers when the content is read.
        """
        root = parse_cid(cid)
        try:
            self._call(
                "block/stat",
                lambda: self._client.block.stat(
                    str(root),
                    offline=self._offline,
                    timeout=min(_PROBE_TIMEOUT_S, self._timeout_s),
                    opts={"timeout": f"{min(_PROBE_TIMEOUT_S, self._timeout_s)}s"},
                ),
                missing=root,
            )
        except ContentNotFound:
            return False
        return True

    def pin(self, cid: str) -> None:
        root = parse_cid(cid)
        self._call(
            "pin/add",
            lambda: self._client.pin.add(
                str(root), offline=self._offline, opts={"timeout": f"{self._timeout_s}s"}
            ),
            missing=root,
        )

    def unpin(self, cid: str) -> None:
        root = parse_cid(cid)
        try:
            self._call("pin/rm", lambda: self._client.pin.rm(str(root)))
        except StorageError as err:
            if "not pinned" in str(err).lower():
                return
            raise

    def is_pinned(self, cid: str) -> bool:
        root = parse_cid(cid)
        try:
            answer = self._call("pin/ls", lambda: self._client.pin.ls(str(root), type="recursive"))
        except StorageError as err:
            if "not pinned" in str(err).lower():
                return False
            raise
        keys = answer.get("Keys", {}) if hasattr(answer, "get") else {}
        for key in keys:
            try:
                if parse_cid(str(key)).digest == root.digest:
                    return True
            except InvalidCid:
                continue
        return False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with _quiet_transport():
                self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- the seam -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"KuboStore for {self._api} is closed; open a new store")

    def _fetch_block(self, cid: Cid) -> bytes:
        def read() -> bytes:
            answer = self._client.block.get(
                str(cid),
                offline=self._offline,
                opts={"timeout": f"{self._timeout_s}s"},
                stream=True,
            )
            block = bytearray()
            with answer:
                for piece in answer:
                    if not isinstance(piece, bytes | bytearray):
                        raise StorageError(
                            f"IPFS daemon at {self._api} answered block/get with no bytes"
                        )
                    block += piece
                    if len(block) > MAX_BLOCK_BYTES:
                        raise StorageError(
                            f"IPFS daemon at {self._api} answered block/get for {cid} with over "
                            f"{MAX_BLOCK_BYTES} bytes; no IPFS block is that large"
                        )
            return bytes(block)

        return self._call("block/get", read, missing=cid)

    def _call(self, what: str, request: Callable[[], _T], *, missing: Cid | None = None) -> _T:
        """Run one daemon request, translating the client's errors into the storage tree."""
        self._check_open()
        try:
            with _quiet_transport():
                return request()
        except ipfs_errors.ConnectionError as err:
            raise StoreUnavailable(
                f"cannot reach the IPFS daemon at {self._api}; start it or fix storage.ipfs_api"
            ) from err
        except ipfs_errors.TimeoutError as err:
            if missing is not None:
                raise ContentNotFound(
                    f"{missing} was not found by the IPFS daemon at {self._api} within "
                    f"{self._timeout_s:g}s; check the CID or that a peer provides it"
                ) from err
            raise StoreUnavailable(
                f"the IPFS daemon at {self._api} did not answer {what} within {self._timeout_s:g}s"
            ) from err
        except ipfs_errors.ErrorResponse as err:
            message = " ".join(str(err).split())
            lowered = message.lower()
            if missing is not None and (
                "not found" in lowered
                or "timed out" in lowered
                or "timeout" in lowered
                or "aborted" in lowered
            ):
                raise ContentNotFound(
                    f"{missing} is not held by the IPFS daemon at {self._api} ({message})"
                ) from err
            raise StorageError(f"IPFS daemon at {self._api} refused {what}: {message}") from err
        except ipfs_errors.Error as err:
            message = " ".join(str(err).split())
            raise StorageError(f"IPFS daemon at {self._api} failed {what}: {message}") from err


def _answer_field(answer: Any, field: str, what: str) -> str:
    # add answers one item per file (a list when the client splits the stream).
    items = answer if isinstance(answer, list) else [answer]
    for item in reversed(items):
        value = item.get(field) if hasattr(item, "get") else None
        if isinstance(value, str):
            return value
    raise StorageError(f"the IPFS daemon's {what} answer has no {field!r}: {answer!r}")


@contextmanager
def _quiet_transport() -> Iterator[None]:
    # ipfshttpclient passes urllib3 a parameter that urllib3 2.x deprecates; the warning is
    # about the client library, not about anything a caller can change.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*'strict' parameter", category=FutureWarning)
        yield
