"""Fixtures shared by every test layer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def cid_vectors() -> list[dict[str, Any]]:
    """CIDs a real IPFS daemon gave for known content (see tests/fixtures/cid-vectors.json)."""
    data = json.loads((FIXTURES / "cid-vectors.json").read_text())
    return list(data["vectors"])


def _vector_content(size: int, seed: int) -> bytes:
    return bytes((i * 31 + seed * 7 + (i >> 8)) % 256 for i in range(size))


@pytest.fixture(scope="session")
def vector_content() -> Callable[[int, int], bytes]:
    """The content recipe of cid-vectors.json: byte i is (i*31 + seed*7 + (i >> 8)) % 256."""
    return _vector_content
