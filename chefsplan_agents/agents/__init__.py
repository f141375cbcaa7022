"""The agents layer: model clients and agents on autogen-agentchat (see docs/architecture.md).

``LocalModelClient`` is an AutoGen ``ChatCompletionClient`` over a GGUF model running in this
process (``LlamaCppBackend``), with tool calls and JSON output constrained by a grammar.
"""

from chefsplan_agents.agents._local_client import DEFAULT_MAX_TOKENS, LocalModelClient

__all__ = ["DEFAULT_MAX_TOKENS", "LocalModelClient"]
