"""The one place that picks a content store backend from settings."""

from __future__ import annotations

from pathlib import Path

from chefsplan_agents.config import StorageSettings
from chefsplan_agents.errors import ConfigError
from chefsplan_agents.storage._base import ContentStore
from chefsplan_agents.storage._kubo import KuboStore
from chefsplan_agents.storage._local import LocalCidStore
from chefsplan_agents.storage._memory import MemoryCidStore

__all__ = ["open_store"]


def open_store(settings: StorageSettings, blockstore_path: Path | None = None) -> ContentStore:
    """Open the content store that ``settings.backend`` names.

    Args:
        settings: The ``[storage]`` settings.
        blockstore_path: The folder for the ``local`` backend; defaults to ``settings.path``
            (pass ``Settings.blockstore_path`` to fall back on the data folder).

    Returns:
        An open store; close it (or use it as a context manager) when done.

    Raises:
        ConfigError: The local backend has no folder.
        StorageError: The store cannot be opened (``StoreUnavailable`` for a bad daemon address).
    """
    if settings.backend == "memory":
        return MemoryCidStore(cid_version=settings.cid_version)
    if settings.backend == "local":
        path = blockstore_path or settings.path
        if path is None:
            raise ConfigError(
                "storage.backend is 'local' but no blockstore folder is set; set storage.path"
            )
        return LocalCidStore(path, cid_version=settings.cid_version)
    if settings.backend == "kubo":
        return KuboStore(
            settings.ipfs_api, cid_version=settings.cid_version, timeout_s=settings.timeout_s
        )
    raise ConfigError(f"unknown storage.backend {settings.backend!r}; use memory, local or kubo")
