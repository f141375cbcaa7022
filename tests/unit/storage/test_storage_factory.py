from __future__ import annotations

from pathlib import Path

import pytest

from chefsplan_agents.config import StorageSettings, load_settings
from chefsplan_agents.errors import ConfigError
from chefsplan_agents.storage import KuboStore, LocalCidStore, MemoryCidStore, open_store


def test_memory() -> None:
    with open_store(StorageSettings(backend="memory", cid_version=0)) as store:
        assert isinstance(store, MemoryCidStore)
        assert store.put(b"").startswith("Qm")


def test_local_uses_the_given_folder(tmp_path: Path) -> None:
    with open_store(StorageSettings(backend="local"), tmp_path / "b") as store:
        assert isinstance(store, LocalCidStore)
        assert store.path == tmp_path / "b"
        assert store.get(store.put(b"abc")) == b"abc"


def test_local_falls_back_on_settings_path(tmp_path: Path) -> None:
    with open_store(StorageSettings(backend="local", path=tmp_path)) as store:
        assert isinstance(store, LocalCidStore)
        assert store.path == tmp_path


def test_local_default_from_full_settings(tmp_path: Path) -> None:
    settings = load_settings(env={}, data_dir=str(tmp_path))
    with open_store(settings.storage, settings.blockstore_path) as store:
        assert isinstance(store, LocalCidStore)
        assert store.path == tmp_path / "blocks"


def test_local_without_folder() -> None:
    with pytest.raises(ConfigError, match="storage.path"):
        open_store(StorageSettings(backend="local"))


def test_kubo_is_built_without_contacting_the_daemon() -> None:
    settings = StorageSettings(backend="kubo", ipfs_api="/ip4/127.0.0.1/tcp/5999/http", timeout_s=4)
    with open_store(settings) as store:
        assert isinstance(store, KuboStore)
        assert store.api == "/ip4/127.0.0.1/tcp/5999/http"
        assert store.cid_version == 1
