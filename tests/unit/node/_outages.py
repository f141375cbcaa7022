"""Stand-ins for a content store that goes away mid-task, shared by the node tests."""

from __future__ import annotations

from typing import Any

from chefsplan_agents.errors import StoreUnavailable
from chefsplan_agents.storage import ContentStore


class FailingPuts:
    """A store whose puts fail as if the IPFS daemon were down; reads pass through."""

    def __init__(self, inner: ContentStore) -> None:
        self._inner = inner

    def put(self, data: bytes, *, pin: bool = True) -> str:
        raise StoreUnavailable("IPFS daemon at /ip4/127.0.0.1/tcp/5001 is not answering")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
