"""chefsplan-agents: agent tools for a decentralized network of local LLM nodes.

Layers (imports point down only): ``errors``/``config`` → ``identity`` → ``bundles`` →
``storage`` → ``chain`` → ``registry``/``market`` → ``llm`` → ``node`` → ``verify`` →
``tools`` → ``agents`` → ``devnet`` → ``cli``.
"""

from chefsplan_agents.config import Settings, load_settings
from chefsplan_agents.errors import ChefsplanError

__all__ = ["ChefsplanError", "Settings", "__version__", "load_settings"]

__version__ = "0.1.0"
