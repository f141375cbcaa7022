"""The agents layer: model clients and the three conversational agents on autogen-agentchat.

- :class:`LocalModelClient`: an AutoGen ``ChatCompletionClient`` over a GGUF model running in
  this process (``LlamaCppBackend``), with tool calls and JSON output constrained by a grammar.
- :class:`NetworkModelClient` (AutoGen) and :class:`NetworkChatModel` (LangChain): every
  completion is a delegated, verified task on the network, with its receipt.
- :class:`CopilotAgent`, :class:`MatchingAgent`, :class:`ComplianceAgent`: AgentChat agents
  whose workflow is data (a :class:`Plan` of :class:`Step`\\ s), shown as tool-call events;
  :func:`team` wires them into one team (or, with a capable function-calling model, wires
  ``AssistantAgent``\\ s that drive the same tools). See docs/agents.md.
"""

from chefsplan_agents.agents._compliance import (
    ComplianceAgent,
    Released,
    Rulings,
    challenge_task,
)
from chefsplan_agents.agents._copilot import CopilotAgent
from chefsplan_agents.agents._langchain_model import NetworkChatModel
from chefsplan_agents.agents._local_client import DEFAULT_MAX_TOKENS, LocalModelClient
from chefsplan_agents.agents._matching import (
    DEFAULT_TASK_CAP_WEI,
    MatchingAgent,
    RankedProvider,
    RankedProviders,
    RankWeights,
    rank_providers,
    sensitive_refusal,
    task_cap_wei,
)
from chefsplan_agents.agents._network_client import (
    DEFAULT_NETWORK_MAX_TOKENS,
    NetworkCreateResult,
    NetworkModelClient,
)
from chefsplan_agents.agents._plan import (
    DEFAULT_MAX_CHUNK_CHARS,
    MAX_PARTS,
    MAX_REQUEST_CHARS,
    Part,
    Plan,
    PlanMessage,
    Step,
    TaskRequest,
    build_plan,
    parse_request,
)
from chefsplan_agents.agents._reports import (
    ChallengeInfo,
    ComplianceMessage,
    ComplianceReport,
    Delegation,
    DelegationMessage,
    DelegationReport,
    JudgeRuling,
    Verdict,
)
from chefsplan_agents.agents._team import (
    COMPLIANCE_TOOLS,
    MATCHING_TOOLS,
    load_policy,
    model_drives_tools,
    team,
)

__all__ = [
    "COMPLIANCE_TOOLS",
    "DEFAULT_MAX_CHUNK_CHARS",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_NETWORK_MAX_TOKENS",
    "DEFAULT_TASK_CAP_WEI",
    "MATCHING_TOOLS",
    "MAX_PARTS",
    "MAX_REQUEST_CHARS",
    "ChallengeInfo",
    "ComplianceAgent",
    "ComplianceMessage",
    "ComplianceReport",
    "CopilotAgent",
    "Delegation",
    "DelegationMessage",
    "DelegationReport",
    "JudgeRuling",
    "LocalModelClient",
    "MatchingAgent",
    "NetworkChatModel",
    "NetworkCreateResult",
    "NetworkModelClient",
    "Part",
    "Plan",
    "PlanMessage",
    "RankWeights",
    "RankedProvider",
    "RankedProviders",
    "Released",
    "Rulings",
    "Step",
    "TaskRequest",
    "Verdict",
    "build_plan",
    "challenge_task",
    "load_policy",
    "model_drives_tools",
    "parse_request",
    "rank_providers",
    "sensitive_refusal",
    "task_cap_wei",
    "team",
]
