"""``MemoryCidStore``: blocks in a dict, for tests and throwaway networks."""

from __future__ import annotations

from chefsplan_agents.storage._base import BlockContentStore
from chefsplan_agents.storage._cid import Cid

__all__ = ["MemoryCidStore"]


class MemoryCidStore(BlockContentStore):
    """A content store that keeps every block in memory; nothing survives the process.

    CIDs are the ones an IPFS daemon gives (see :class:`ContentStore`).

    Args:
        cid_version: 1 (default; ``--cid-version=1 --raw-leaves``) or 0 (plain ``ipfs add``).
    """

    def __init__(self, *, cid_version: int = 1) -> None:
        super().__init__(cid_version=cid_version)
        self._blocks: dict[bytes, bytes] = {}
        self._pins: dict[bytes, Cid] = {}

    def __repr__(self) -> str:
        return f"MemoryCidStore(cid_version={self.cid_version}, blocks={len(self._blocks)})"

    def _read_block(self, multihash: bytes) -> bytes | None:
        return self._blocks.get(multihash)

    def _write_block(self, multihash: bytes, block: bytes) -> None:
        self._blocks[multihash] = block

    def _has_block(self, multihash: bytes) -> bool:
        return multihash in self._blocks

    def _delete_block(self, multihash: bytes) -> None:
        self._blocks.pop(multihash, None)

    def _block_keys(self) -> list[bytes]:
        return list(self._blocks)

    def _set_pin(self, root: Cid, pinned: bool) -> None:
        if pinned:
            self._pins[root.multihash] = root
        else:
            self._pins.pop(root.multihash, None)

    def _get_pin(self, multihash: bytes) -> bool:
        return multihash in self._pins

    def _pinned(self) -> list[Cid]:
        return list(self._pins.values())
