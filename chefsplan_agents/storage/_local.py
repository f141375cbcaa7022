"""``LocalCidStore``: an on-disk block store, the embedded default."""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path

from chefsplan_agents.errors import InvalidCid, StorageError
from chefsplan_agents.storage._base import BlockContentStore
from chefsplan_agents.storage._cid import Cid, parse_cid

__all__ = ["LocalCidStore"]


def _key(multihash: bytes) -> str:
    # The same key an IPFS flatfs datastore uses: the multihash in upper-case base32.
    return base64.b32encode(multihash).decode("ascii").rstrip("=")


class LocalCidStore(BlockContentStore):
    """A content store in a folder: one file per block, pins recorded as files.

    Layout: ``blocks/XY/<KEY>.data`` where ``KEY`` is the block's multihash in base32 and
    ``XY`` its next-to-last two characters (as IPFS's flatfs shards), and ``pins/<KEY>`` holding
    the CID of each pinned root. Blocks are written to a temporary file and renamed into place, so a
    crash never leaves a partial block under a valid name; anything that is corrupted later
    fails its hash check on read.

    Args:
        path: The folder (created if missing).
        cid_version: 1 (default; ``--cid-version=1 --raw-leaves``) or 0 (plain ``ipfs add``).

    Raises:
        StorageError: The folder cannot be created or is not a folder.
    """

    def __init__(self, path: str | Path, *, cid_version: int = 1) -> None:
        super().__init__(cid_version=cid_version)
        self._root = Path(path).expanduser()
        self._blocks = self._root / "blocks"
        self._pins = self._root / "pins"
        self._shards: set[Path] = set()  # shard folders known to exist
        try:
            self._blocks.mkdir(parents=True, exist_ok=True)
            self._pins.mkdir(exist_ok=True)
        except (FileExistsError, NotADirectoryError) as err:
            raise StorageError(
                f"blockstore path {self._root} is not a folder; pick another"
            ) from err
        except OSError as err:
            raise StorageError(
                f"cannot create blockstore folder {self._root}: {err.strerror or err}"
            ) from err

    @property
    def path(self) -> Path:
        """The store's folder."""
        return self._root

    def __repr__(self) -> str:
        return f"LocalCidStore({str(self._root)!r}, cid_version={self.cid_version})"

    def block_path(self, multihash: bytes) -> Path:
        """Where the block with this multihash lives (whether or not it exists)."""
        key = _key(multihash)
        return self._blocks / key[-3:-1] / f"{key}.data"

    def _read_block(self, multihash: bytes) -> bytes | None:
        try:
            return self.block_path(multihash).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StorageError(f"cannot read block file: {err.strerror or err}") from err

    def _write_block(self, multihash: bytes, block: bytes) -> None:
        final = self.block_path(multihash)
        try:
            if final.parent not in self._shards:
                final.parent.mkdir(exist_ok=True)
                self._shards.add(final.parent)
            _write_atomically(final, block)
        except OSError as err:
            raise StorageError(
                f"cannot write block to {self._root}: {err.strerror or err}; "
                "check free space and permissions"
            ) from err

    def _has_block(self, multihash: bytes) -> bool:
        return self.block_path(multihash).is_file()

    def _delete_block(self, multihash: bytes) -> None:
        try:
            self.block_path(multihash).unlink(missing_ok=True)
        except OSError as err:
            raise StorageError(
                f"cannot delete block in {self._root}: {err.strerror or err}"
            ) from err

    def _block_keys(self) -> list[bytes]:
        keys = []
        for path in self._blocks.glob("*/*.data"):
            try:
                keys.append(base64.b32decode(path.stem + "=" * (-len(path.stem) % 8)))
            except ValueError:
                continue  # not a block file: leave it alone
        return keys

    def _set_pin(self, root: Cid, pinned: bool) -> None:
        marker = self._pins / _key(root.multihash)
        try:
            if pinned:
                _write_atomically(marker, str(root).encode("ascii"))
            else:
                marker.unlink(missing_ok=True)
        except OSError as err:
            raise StorageError(f"cannot record pin in {self._pins}: {err.strerror or err}") from err

    def _get_pin(self, multihash: bytes) -> bool:
        return (self._pins / _key(multihash)).is_file()

    def _pinned(self) -> list[Cid]:
        roots = []
        for marker in self._pins.iterdir():
            if marker.name.startswith(".tmp-"):
                continue
            try:
                roots.append(parse_cid(marker.read_text(encoding="ascii").strip()))
            except (InvalidCid, UnicodeDecodeError) as err:
                raise StorageError(
                    f"pin record {marker} is corrupt; delete it or pin its content again"
                ) from err
        return roots


def _write_atomically(final: Path, data: bytes) -> None:
    # A temporary file in the same folder, renamed into place: readers never see a torn file.
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
