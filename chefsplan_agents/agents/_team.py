"""``team(network)``: Copilot, Matching and Compliance wired into one AgentChat team.

The speaking order is fixed (a selector function, not a model): the user's task goes to the
Copilot, its plan to Matching, Matching's delegations to Compliance, Compliance's verdicts
back to the Copilot, which answers or — for rejected parts, at most ``max_attempts`` times in
all — plans again. The run ends on the Copilot's answer (a ``TextMessage``), and in any case
after a bounded number of messages.

Who drives the tools depends on the model client:

- none, or a model that cannot pick tools reliably (``LocalModelClient``, or any client whose
  ``model_info["function_calling"]`` is false): the workflow is data (a :class:`Plan`), the
  agents follow it, and the model only words the answer's summary and judges fuzzy rules.
- a capable model (``function_calling`` true, not a ``LocalModelClient``): each agent is an
  ``AssistantAgent`` that calls its tools itself, with a bounded ``max_tool_iterations``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import ChatAgent, Team, TerminationCondition
from autogen_agentchat.conditions import MaxMessageTermination, TextMessageTermination
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage
from autogen_agentchat.teams import SelectorGroupChat
from autogen_core import CancellationToken
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelCapabilities,
    ModelFamily,
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import ValidationError

from chefsplan_agents.agents._compliance import ComplianceAgent
from chefsplan_agents.agents._copilot import CopilotAgent
from chefsplan_agents.agents._local_client import LocalModelClient
from chefsplan_agents.agents._matching import MatchingAgent, RankWeights
from chefsplan_agents.config import PolicySettings
from chefsplan_agents.errors import ConfigError, ToolError
from chefsplan_agents.network import Network
from chefsplan_agents.tools import Trust, autogen_tools

__all__ = ["COMPLIANCE_TOOLS", "MATCHING_TOOLS", "load_policy", "model_drives_tools", "team"]

MATCHING_TOOLS = ("find_providers", "delegate_task", "split_and_delegate", "get_result")
COMPLIANCE_TOOLS = ("check_policy", "second_opinion", "verify_output", "log_output")

_COPILOT_PROMPT = (
    "You are the Copilot of a decentralised network of LLM nodes. Restate the user's request "
    "as subtasks for the Matching agent. When the Compliance agent has reported, answer the "
    "user: use only results Compliance accepted and say where each came from (node DID, how "
    "many agreed, result CID, verdict)."
)
_MATCHING_PROMPT = (
    "You are the Matching agent. Find providers (find_providers), then delegate each subtask "
    "(delegate_task; split_and_delegate for a long document) at the trust level it needs. "
    "Report each receipt's task id, result CID and who answered."
)
_COMPLIANCE_PROMPT = (
    "You are the Compliance agent. For each result: check_policy on its output, "
    "second_opinion on its result CID, then log_output with your verdict. Say which results "
    "are accepted and which rejected, and why."
)


def load_policy(policy: PolicySettings | Mapping[str, Any] | None) -> PolicySettings | None:
    """A policy from its settings or a mapping (the ``[policy]`` table), checked.

    Raises:
        ConfigError: A rule that cannot be parsed; the message names it and says what to fix.
    """
    if policy is None or isinstance(policy, PolicySettings):
        return policy
    try:
        return PolicySettings.model_validate(dict(policy))
    except ValidationError as err:
        problem = err.errors()[0]
        where = ".".join(str(p) for p in problem["loc"]) or "policy"
        message = str(problem["msg"]).removeprefix("Value error, ")
        raise ConfigError(
            f"policy.{where}: {message}; fix that rule in the [policy] settings"
        ) from err


def model_drives_tools(model_client: ChatCompletionClient | None) -> bool:
    """Whether ``model_client`` is trusted to choose tools itself (see the module docs)."""
    if model_client is None or isinstance(model_client, LocalModelClient):
        return False
    return bool(model_client.model_info.get("function_calling", False))


def _order(copilot: str, matching: str, compliance: str) -> Any:
    def select(messages: Sequence[BaseAgentEvent | BaseChatMessage]) -> str | None:
        chat = [m for m in messages if isinstance(m, BaseChatMessage)]
        if not chat:
            return copilot
        last = chat[-1]
        if last.source == copilot:
            return matching
        if last.source == matching:
            return compliance
        return copilot

    return select


class _NoSelectionModel(ChatCompletionClient):
    """What the team's selector holds when no model is given: the order is a function, so
    this is never asked; if it were, it names the Copilot."""

    _info: ModelInfo = {
        "vision": False,
        "function_calling": False,
        "json_output": False,
        "family": ModelFamily.UNKNOWN,
        "structured_output": False,
    }

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = (),
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[Any] | None = None,
        extra_create_args: Mapping[str, Any] = {},  # noqa: B006 - the interface's default
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        return CreateResult(
            finish_reason="stop",
            content="copilot",
            usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
            cached=False,
        )

    def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = (),
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[Any] | None = None,
        extra_create_args: Mapping[str, Any] = {},  # noqa: B006 - the interface's default
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        async def one() -> AsyncGenerator[str | CreateResult, None]:
            yield await self.create(messages)

        return one()

    async def close(self) -> None:
        return None

    def actual_usage(self) -> RequestUsage:
        return RequestUsage(prompt_tokens=0, completion_tokens=0)

    def total_usage(self) -> RequestUsage:
        return RequestUsage(prompt_tokens=0, completion_tokens=0)

    def count_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = ()
    ) -> int:
        return 0

    def remaining_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = ()
    ) -> int:
        return 0

    @property
    def capabilities(self) -> ModelCapabilities:
        return {"vision": False, "function_calling": False, "json_output": False}

    @property
    def model_info(self) -> ModelInfo:
        return self._info


def team(
    network: Network,
    model_client: ChatCompletionClient | None = None,
    *,
    policy: PolicySettings | Mapping[str, Any] | None = None,
    judge: ChatCompletionClient | None = None,
    trust: Trust = "normal",
    max_tokens: int = 128,
    max_attempts: int = 2,
    weights: RankWeights | None = None,
    max_tool_iterations: int = 4,
) -> SelectorGroupChat:
    """The three agents in one team: ``await team(net).run(task="...")``.

    Args:
        network: The network the agents act on (``connect()`` or ``Devnet.network``).
        model_client: The agents' model (see the module docs): ``None`` runs the workflow
            with no model at all; a ``LocalModelClient`` words summaries and judges fuzzy
            rules; a capable function-calling model drives the tools itself.
        policy: The app's rules; replaces ``network.policy`` (default: keep it).
        judge: The model for the fuzzy rules (default: ``model_client`` when it is not
            driving the tools).
        trust: Trust level for requests that state none.
        max_tokens: New tokens per delegated part when the request states none.
        max_attempts: Plans per request (2: rejected parts are delegated once more to other
            providers).
        weights: The Matching agent's ranking weights.
        max_tool_iterations: Most tool-call rounds per turn of a model-driven agent.

    Returns:
        A ``SelectorGroupChat``; ``run(task=...)`` and ``run_stream(task=...)`` work.

    Raises:
        ConfigError: The policy cannot be parsed.
        ToolError: An argument is out of range.
    """
    parsed = load_policy(policy)
    if parsed is not None:
        network.policy = parsed
    if trust not in ("low", "normal", "high"):
        raise ToolError(f"trust must be low, normal or high (got {trust!r})")
    if not 1 <= max_tool_iterations <= 16:
        raise ToolError(f"max_tool_iterations must be 1 to 16 (got {max_tool_iterations})")
    participants: list[ChatAgent | Team]
    termination: TerminationCondition
    if model_drives_tools(model_client):
        assert model_client is not None
        participants = [
            AssistantAgent(
                "copilot",
                model_client=model_client,
                system_message=_COPILOT_PROMPT,
                description="The user's assistant: plans and answers with receipts.",
            ),
            AssistantAgent(
                "matching",
                model_client=model_client,
                tools=list[Any](autogen_tools(network, MATCHING_TOOLS)),
                system_message=_MATCHING_PROMPT,
                description="Finds providers and delegates subtasks to them.",
                max_tool_iterations=max_tool_iterations,
                reflect_on_tool_use=False,
            ),
            AssistantAgent(
                "compliance",
                model_client=model_client,
                tools=list[Any](autogen_tools(network, COMPLIANCE_TOOLS)),
                system_message=_COMPLIANCE_PROMPT,
                description="Checks results, gets second opinions, logs verdicts.",
                max_tool_iterations=max_tool_iterations,
                reflect_on_tool_use=False,
            ),
        ]
        # The user's task, then copilot, matching, compliance and the copilot's answer.
        termination = MaxMessageTermination(5)
        selector_model: ChatCompletionClient = model_client
    else:
        participants = [
            CopilotAgent(
                network,
                model_client=model_client,
                trust=trust,
                max_tokens=max_tokens,
                max_attempts=max_attempts,
            ),
            MatchingAgent(network, weights=weights),
            ComplianceAgent(network, judge=judge or model_client),
        ]
        termination = TextMessageTermination("copilot") | MaxMessageTermination(
            2 + 3 * max_attempts
        )
        selector_model = _NoSelectionModel()
    return SelectorGroupChat(
        participants,
        model_client=selector_model,
        termination_condition=termination,
        selector_func=_order("copilot", "matching", "compliance"),
        max_turns=1 + 3 * max_attempts,
    )
