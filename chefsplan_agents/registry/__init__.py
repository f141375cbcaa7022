"""The service registry: provider nodes with a DID, a signed offer and a stake, on chain.

:class:`RegistryClient` wraps the ``AgentRegistry`` contract with typed records
(:class:`ProviderRecord`, :class:`Reputation`); values are in wei.
"""

from chefsplan_agents.registry._client import (
    OUTCOME_LOST,
    OUTCOME_NONE,
    OUTCOME_SLASHED,
    OUTCOME_WON,
    ProviderRecord,
    RegistryClient,
    Reputation,
)

__all__ = [
    "OUTCOME_LOST",
    "OUTCOME_NONE",
    "OUTCOME_SLASHED",
    "OUTCOME_WON",
    "ProviderRecord",
    "RegistryClient",
    "Reputation",
]
