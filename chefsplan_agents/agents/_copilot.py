"""The Copilot agent: the user's assistant. It plans, hands the plan to Matching, reads
Compliance's verdicts, retries rejected parts with other providers (bounded), and writes the
answer with where each part came from.

Its first reply to a request is a ``StructuredMessage[Plan]``; its last is a ``TextMessage``
— the answer — which ends a team's run. A model client, when given, only words a one-line
summary above the answer; the parts' texts and their provenance are never the model's.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence

from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseChatMessage, StructuredMessage, TextMessage
from autogen_core import CancellationToken
from autogen_core.models import ChatCompletionClient, SystemMessage, UserMessage

from chefsplan_agents.agents._plan import (
    DEFAULT_MAX_CHUNK_CHARS,
    Plan,
    PlanMessage,
    TaskRequest,
    build_plan,
    parse_request,
)
from chefsplan_agents.agents._reports import ComplianceReport, Verdict
from chefsplan_agents.agents._workflow import StreamItem, WorkflowAgent, one_line
from chefsplan_agents.errors import ToolError
from chefsplan_agents.network import Network
from chefsplan_agents.tools import Trust

__all__ = ["CopilotAgent"]

log = logging.getLogger(__name__)

_SUMMARY_TOKENS = 96
_SUMMARY_INPUT_CHARS = 3000


class CopilotAgent(WorkflowAgent):
    """Plans a request, has it delegated and checked, and answers with the receipts.

    Args:
        network: The network (its policy shapes the plan).
        model_client: Words a one-line summary of the answer (optional; a small local model
            is enough). The plan never depends on it.
        trust: Trust level for requests that state none.
        max_tokens: New tokens per delegated part when the request states none.
        max_attempts: Plans per request: 2 lets rejected parts be delegated once more, to
            other providers.
        max_chunk_chars: A document longer than this is split into chunks.
        peers: Names of the agents whose plain-text replies are reports, not new requests.
        name: Its name in a team.
    """

    def __init__(
        self,
        network: Network,
        *,
        model_client: ChatCompletionClient | None = None,
        trust: Trust = "normal",
        max_tokens: int = 128,
        max_attempts: int = 2,
        max_chunk_chars: int = DEFAULT_MAX_CHUNK_CHARS,
        peers: tuple[str, ...] = ("matching", "compliance"),
        name: str = "copilot",
    ) -> None:
        super().__init__(
            name,
            "The user's assistant: plans the work, has Matching delegate it and Compliance "
            "check it, and answers saying where each part came from.",
            network,
        )
        if not 1 <= max_attempts <= 5:
            raise ToolError(f"max_attempts must be 1 to 5 (got {max_attempts})")
        self.model_client = model_client
        self.trust: Trust = trust
        self.max_tokens = max_tokens
        self.max_attempts = max_attempts
        self.max_chunk_chars = max_chunk_chars
        self.peers = peers
        self._request: TaskRequest | None = None
        self._attempt = 0
        self._verdicts: dict[int, Verdict] = {}
        self._excluded: list[str] = []

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (PlanMessage, TextMessage)

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        self._request = None
        self._attempt = 0
        self._verdicts = {}
        self._excluded = []

    def _say(self, text: str) -> Response:
        self._request = None  # the request is answered; the next text is a new one
        return Response(chat_message=TextMessage(content=text, source=self.name))

    def _plan(self, plan: Plan) -> Response:
        return Response(
            chat_message=PlanMessage(content=plan, source=self.name),
        )

    async def _stream(
        self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken
    ) -> AsyncGenerator[StreamItem, None]:
        for message in reversed(messages):
            if message.source == self.name:
                continue
            if isinstance(message, StructuredMessage):
                if isinstance(message.content, ComplianceReport) and self._request is not None:
                    yield await self._on_verdicts(message.content)
                    return
                if isinstance(message.content, TaskRequest):
                    yield self._start(message.content)
                    return
                continue
            if isinstance(message, TextMessage):
                if message.source in self.peers:
                    if self._request is not None:
                        yield self._say(
                            "The work could not be finished: " + one_line(message.content)
                        )
                        return
                    continue
                try:
                    request = parse_request(
                        message.content,
                        self.network.policy,
                        trust=self.trust,
                        max_tokens=self.max_tokens,
                        max_chunk_chars=self.max_chunk_chars,
                    )
                except ToolError as err:
                    yield self._say(f"I cannot take this request: {one_line(str(err))}")
                    return
                yield self._start(request)
                return
        yield self._say("Send me a request (plain text) and I will have the network answer it.")

    def _start(self, request: TaskRequest) -> Response:
        self._request = request
        self._attempt = 1
        self._verdicts = {}
        self._excluded = []
        try:
            plan = build_plan(request, self.network.policy, judge=True)
        except ToolError as err:
            return self._say(f"I cannot take this request: {one_line(str(err))}")
        return self._plan(plan)

    async def _on_verdicts(self, report: ComplianceReport) -> Response:
        assert self._request is not None
        for verdict in report.verdicts:
            self._verdicts[verdict.part] = verdict
        retry = [
            v for v in report.verdicts if not v.accepted and v.delegation.provider_did is not None
        ]
        if retry and self._attempt < self.max_attempts:
            for v in retry:
                for who in (v.delegation.provider_did, *v.delegation.dissenters):
                    if who and who not in self._excluded:
                        self._excluded.append(who)
            self._attempt += 1
            plan = build_plan(
                self._request,
                self.network.policy,
                attempt=self._attempt,
                only_parts=tuple(v.part for v in retry),
                exclude=tuple(self._excluded),
                judge=True,
            )
            return self._plan(plan)
        return self._say(await self.compose())

    async def compose(self) -> str:
        """The answer: accepted parts in order, then where each came from."""
        assert self._request is not None
        verdicts = [self._verdicts[k] for k in sorted(self._verdicts)]
        accepted = [v for v in verdicts if v.accepted]
        rejected = [v for v in verdicts if not v.accepted]
        lines: list[str] = []
        if not accepted:
            reasons = "; ".join(r for v in rejected for r in v.reasons[:2]) or "no result"
            lines.append(f"I could not get a trustworthy answer: {one_line(reasons, 800)}")
        else:
            summary = await self._summary(accepted)
            if summary:
                lines += [summary, ""]
            request = self._request
            for v in accepted:
                if request.subtasks:
                    lines.append(f"{v.part + 1}. {request.subtasks[v.part]}: {v.delegation.output}")
                else:
                    lines.append(v.delegation.output)
            if rejected:
                lines.append("")
                lines.append(
                    f"{len(rejected)} of {len(verdicts)} parts have no trustworthy answer."
                )
        lines += ["", "Sources:"]
        lines += [f"- {v.provenance()}" for v in accepted]
        for v in rejected:
            why = "; ".join(v.reasons) or "rejected"
            lines.append(f"- {v.provenance()} — REJECTED, not used: {one_line(why, 400)}")
        if self._excluded:
            lines.append(f"- excluded after rejected answers: {', '.join(self._excluded)}")
        return "\n".join(lines)

    async def _summary(self, accepted: list[Verdict]) -> str:
        if self.model_client is None or self._request is None:
            return ""
        results = "\n\n".join(v.delegation.output for v in accepted)[:_SUMMARY_INPUT_CHARS]
        try:
            made = await self.model_client.create(
                [
                    SystemMessage(content="Summarise the results for the user in one sentence."),
                    UserMessage(
                        content=f"Request: {self._request.instruction[:500]}\n\nResults:\n"
                        f"{results}",
                        source="user",
                    ),
                ],
                extra_create_args={"max_tokens": _SUMMARY_TOKENS},
            )
        except Exception as err:  # wording is optional: the answer stands without it
            log.info("the summary model failed: %s", err)
            return ""
        return one_line(made.content, 600) if isinstance(made.content, str) else ""
