"""The service registry: provider nodes with a DID, a signed offer and a stake, on chain.

:class:`RegistryClient` wraps the ``AgentRegistry`` contract with typed records
(:class:`ProviderRecord`, :class:`Reputation`); values are in wei. :class:`RegistryIndex` keeps
a local SQLite cache built from the contract's events, with every offer fetched by CID and
verified, so "providers of model X, ≥ N tok/s, price ≤ P, ranked by reputation" answers in
milliseconds without scanning the chain.
"""

from chefsplan_agents.registry._client import (
    OUTCOME_AUDIT_FAILED,
    OUTCOME_AUDIT_PASSED,
    OUTCOME_LOST,
    OUTCOME_NONE,
    OUTCOME_SLASHED,
    OUTCOME_WON,
    ProviderRecord,
    RegistryClient,
    Reputation,
)
from chefsplan_agents.registry._index import (
    REGISTRY_EVENTS,
    ChainLogSource,
    IndexedProvider,
    LogSource,
    RegistryIndex,
    RegistryLog,
    ResolveResult,
    SyncResult,
    Web3LogSource,
    reputation_score,
)
from chefsplan_agents.registry._offers import MAX_OFFER_BYTES, OfferStatus, OfferTerms, offer_hash

__all__ = [
    "MAX_OFFER_BYTES",
    "OUTCOME_AUDIT_FAILED",
    "OUTCOME_AUDIT_PASSED",
    "OUTCOME_LOST",
    "OUTCOME_NONE",
    "OUTCOME_SLASHED",
    "OUTCOME_WON",
    "REGISTRY_EVENTS",
    "ChainLogSource",
    "IndexedProvider",
    "LogSource",
    "OfferStatus",
    "OfferTerms",
    "ProviderRecord",
    "RegistryClient",
    "RegistryIndex",
    "RegistryLog",
    "Reputation",
    "ResolveResult",
    "SyncResult",
    "Web3LogSource",
    "offer_hash",
    "reputation_score",
]
