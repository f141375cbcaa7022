"""The devnets and the verifier that the unit tests share.

Plain context managers, not fixtures: each package's conftest or test module wraps them in
fixtures of its own scope (imported as ``devnet_helpers``; ``tests/`` is on the path through
its conftest)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from chefsplan_agents.devnet import Devnet
from chefsplan_agents.llm import LlamaCppBackend, resolve_model

# Signed offer tags: node 0 states another jurisdiction than nodes 1 and 2.
NODE_TAGS = (
    {"jurisdiction": "US"},
    {"jurisdiction": "EU", "hardware": "cpu"},
    {"jurisdiction": "EU"},
)


def tiny_devnet(nodes: int, **options: Any) -> Devnet:
    """``nodes`` nodes on the scripted tiny model: one shared copy, one thread, a context of
    512; ``options`` go to ``Devnet.create`` (and override those)."""
    settings: dict[str, Any] = {"share_model": True, "n_threads": 1, "n_ctx": 512, **options}
    return Devnet.create(nodes=nodes, model="tiny", **settings)


@contextmanager
def tagged_devnet() -> Iterator[Devnet]:
    """Three nodes on the scripted tiny model (one shared copy), tagged with NODE_TAGS."""
    with tiny_devnet(3, node_tags=[dict(t) for t in NODE_TAGS]) as net:
        yield net


@contextmanager
def tiny_verifier() -> Iterator[LlamaCppBackend]:
    """The tiny model loaded locally, to re-score the devnet's results."""
    with LlamaCppBackend(resolve_model("tiny"), n_threads=1, n_ctx=512) as backend:
        yield backend
