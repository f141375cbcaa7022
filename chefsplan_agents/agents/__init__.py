"""The agents layer: model clients and agents on autogen-agentchat (see docs/architecture.md).

``LocalModelClient`` is an AutoGen ``ChatCompletionClient`` over a GGUF model running in this
process (``LlamaCppBackend``), with tool calls and JSON output constrained by a grammar.
``NetworkModelClient`` (AutoGen) and ``NetworkChatModel`` (LangChain) run every completion as a
delegated, verified task on the network and hand back its receipt.
"""

from chefsplan_agents.agents._langchain_model import NetworkChatModel
from chefsplan_agents.agents._local_client import DEFAULT_MAX_TOKENS, LocalModelClient
from chefsplan_agents.agents._network_client import (
    DEFAULT_NETWORK_MAX_TOKENS,
    NetworkCreateResult,
    NetworkModelClient,
)

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_NETWORK_MAX_TOKENS",
    "LocalModelClient",
    "NetworkChatModel",
    "NetworkCreateResult",
    "NetworkModelClient",
]
