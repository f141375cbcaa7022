"""Fixtures for verifier tests: the tiny models, a requester and signed tasks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chefsplan_agents.bundles import (
    GenerationParams,
    ModelRequirement,
    TaskBundle,
    encode_bundle,
    sign_bundle,
)
from chefsplan_agents.identity import Identity
from chefsplan_agents.llm import LlamaCppBackend, resolve_model
from chefsplan_agents.storage import compute_cid

MakeTask = Callable[..., tuple[TaskBundle, str]]


@pytest.fixture(scope="session")
def scripted() -> Iterator[LlamaCppBackend]:
    with LlamaCppBackend(resolve_model("tiny"), n_threads=1) as backend:
        yield backend


@pytest.fixture(scope="session")
def random_llm() -> Iterator[LlamaCppBackend]:
    with LlamaCppBackend(resolve_model("tiny-random"), n_threads=1) as backend:
        yield backend


@pytest.fixture(scope="session")
def requester() -> Identity:
    return Identity.generate()


@pytest.fixture(scope="session")
def cheater() -> Identity:
    return Identity.generate()


@pytest.fixture(scope="session")
def make_task(requester: Identity) -> MakeTask:
    """A signed completion task pinned to ``llm``'s model, and its CID."""

    def make(llm: LlamaCppBackend, prompt: str = "Say hi", **params: Any) -> tuple[TaskBundle, str]:
        task = TaskBundle(
            kind="completion",
            prompt=prompt,
            params=GenerationParams(**{"max_tokens": 32, **params}),
            model=ModelRequirement(sha256=llm.info.sha256),
            requester_did=requester.did,
        )
        task = sign_bundle(task, requester)
        return task, compute_cid(encode_bundle(task))

    return make
