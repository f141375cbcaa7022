"""chefsplan-agents: agent tools for a decentralized network of local LLM nodes.

Layers (imports point down only): ``errors``/``config`` → ``identity`` → ``bundles`` →
``storage`` → ``chain`` → ``registry``/``market`` → ``llm`` → ``node`` → ``verify`` →
``network`` → ``tools`` → ``agents`` → ``devnet`` → ``devnet_suite`` → ``cli``.

``connect()`` opens the app's handle on the network (:class:`~chefsplan_agents.network.Network`);
the tools in :mod:`chefsplan_agents.tools` take it first.
"""

from typing import TYPE_CHECKING

from chefsplan_agents.config import Settings, load_settings
from chefsplan_agents.errors import ChefsplanError

if TYPE_CHECKING:
    from chefsplan_agents.network import Network, connect

__all__ = ["ChefsplanError", "Network", "Settings", "__version__", "connect", "load_settings"]


def __getattr__(name: str) -> object:
    # ``connect`` and ``Network`` pull in the chain, market and registry layers: imported on
    # first use so that ``import chefsplan_agents`` (and the CLI's start) stays light.
    if name in ("Network", "connect"):
        from chefsplan_agents import network

        return getattr(network, name)
    raise AttributeError(f"module 'chefsplan_agents' has no attribute {name!r}")


__version__ = "0.1.0"
