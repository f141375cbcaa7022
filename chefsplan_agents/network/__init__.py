"""The app's handle on the network: what an agent app holds to use it as a requester.

:func:`connect` opens one — the embedded network in this process by default (an in-process EVM
with the contracts deployed, a content store and a funded requester identity; offline), or a
real chain and IPFS daemon from the settings. A devnet exposes the same handle as
``Devnet.network``. The tools (:mod:`chefsplan_agents.tools`) take a :class:`Network` first.
"""

from chefsplan_agents.network._network import (
    DEFAULT_BOND_WEI,
    EMBEDDED_REQUESTER_FUNDS_WEI,
    InProcessDriver,
    Network,
    ProgressListener,
    connect,
    progress_listener,
)

__all__ = [
    "DEFAULT_BOND_WEI",
    "EMBEDDED_REQUESTER_FUNDS_WEI",
    "InProcessDriver",
    "Network",
    "ProgressListener",
    "connect",
    "progress_listener",
]
