"""Content-addressed storage with CIDs identical to an IPFS daemon's.

:class:`ContentStore` is the protocol; :class:`MemoryCidStore` and :class:`LocalCidStore` are
the embedded backends (no server), :class:`KuboStore` talks to an IPFS daemon. Pick one from
settings with :func:`open_store`. Every backend re-hashes every block it returns.
"""

from chefsplan_agents.storage._base import (
    BlockContentStore,
    Content,
    ContentStore,
    compute_cid,
    compute_file_cid,
)
from chefsplan_agents.storage._cid import Cid, parse_cid
from chefsplan_agents.storage._factory import open_store
from chefsplan_agents.storage._kubo import KuboStore
from chefsplan_agents.storage._local import LocalCidStore
from chefsplan_agents.storage._memory import MemoryCidStore
from chefsplan_agents.storage._unixfs import (
    CHUNK_SIZE,
    MAX_DAG_BLOCKS,
    MAX_LINKS,
    MIN_USEFUL_BLOCK_BYTES,
    FileImporter,
    block_budget,
)

__all__ = [
    "CHUNK_SIZE",
    "MAX_DAG_BLOCKS",
    "MAX_LINKS",
    "MIN_USEFUL_BLOCK_BYTES",
    "BlockContentStore",
    "Cid",
    "Content",
    "ContentStore",
    "FileImporter",
    "KuboStore",
    "LocalCidStore",
    "MemoryCidStore",
    "compute_cid",
    "compute_file_cid",
    "block_budget",
    "open_store",
    "parse_cid",
]
