"""CIDs computed here against a real IPFS daemon's, for sizes the fixture vectors do not cover.

Needs ``CHEFSPLAN_TEST_IPFS_API`` (``make integration`` starts a daemon and sets it; the
``ipfs_api`` fixture in conftest.py reads it).
"""

from __future__ import annotations

import io
import random
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from chefsplan_agents.storage import CHUNK_SIZE, KuboStore, compute_cid, parse_cid

pytestmark = pytest.mark.integration

# 0..2 chunks around the edges, a few random sizes, and trees deeper than 174 links.
SIZES = [1, CHUNK_SIZE - 1, 2 * CHUNK_SIZE, 2 * CHUNK_SIZE + 1, 174 * CHUNK_SIZE]
SIZES += [random.Random(n).randrange(1, 12 * CHUNK_SIZE) for n in range(4)]
SIZES += [175 * CHUNK_SIZE + 3, 349 * CHUNK_SIZE + 11]


@pytest.fixture(scope="module")
def client(ipfs_api: str) -> Iterator[Any]:
    import ipfshttpclient

    with warnings.catch_warnings():
        # ipfshttpclient passes urllib3 2.x a deprecated argument.
        warnings.simplefilter("ignore", FutureWarning)
        with ipfshttpclient.Client(ipfs_api, timeout=120) as client:
            yield client


def _daemon_cid(client: Any, data: bytes, **options: Any) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        answer = client.add(io.BytesIO(data), only_hash=True, **options)
    return str(answer["Hash"])


@pytest.mark.parametrize("size", SIZES)
def test_cids_equal_the_daemons(client: Any, size: int) -> None:
    data = random.Random(size).randbytes(size)
    v1 = _daemon_cid(client, data, cid_version=1, raw_leaves=True)
    v0 = _daemon_cid(client, data)
    assert parse_cid(v1) == parse_cid(compute_cid(data))
    assert v0 == compute_cid(data, cid_version=0)


@pytest.mark.parametrize("options", [{"chunker": "size-1000"}, {"trickle": True}])
def test_get_reads_dags_the_daemon_built_its_own_way(
    ipfs_api: str, client: Any, options: dict[str, Any]
) -> None:
    data = random.Random(7).randbytes(3 * CHUNK_SIZE + 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        cid = str(client.add(io.BytesIO(data), cid_version=1, **options)["Hash"])
    assert parse_cid(cid) != parse_cid(compute_cid(data))
    with KuboStore(ipfs_api, timeout_s=10) as store:
        assert store.get(cid) == data
