"""The agents' workflow as data: a request, the plan built from it, and its steps.

A :class:`TaskRequest` is what the user asked, parsed without a model (:func:`parse_request`);
:func:`build_plan` turns it and the app's policy into a :class:`Plan` — the parts to delegate
and a list of :class:`Step`\\ s (tool, arguments, why) that the Matching and Compliance agents
follow and show as tool-call events. The same request and policy always give the same plan.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from autogen_agentchat.messages import StructuredMessage
from pydantic import BaseModel, ConfigDict, Field

from chefsplan_agents.config import PolicySettings
from chefsplan_agents.errors import ToolError
from chefsplan_agents.tools import MAX_TOOL_TOKENS, Trust

__all__ = [
    "DEFAULT_MAX_CHUNK_CHARS",
    "MAX_PARTS",
    "MAX_REQUEST_CHARS",
    "Part",
    "Plan",
    "PlanMessage",
    "Step",
    "TaskRequest",
    "build_plan",
    "parse_request",
]

MAX_REQUEST_CHARS = 200_000
"""Longest request (instruction and document) the agents take."""

MAX_PARTS = 16
"""Most parts (subtasks or chunks) one plan delegates."""

DEFAULT_MAX_CHUNK_CHARS = 1500
"""A document longer than this is split into chunks of at most this many characters."""

_OPTION = re.compile(r"^\s*(trust|sensitive|max_tokens|model)\s*:\s*(.*?)\s*$", re.IGNORECASE)
_ITEM = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+(.+?)\s*$")
_DOCUMENT_RULE = re.compile(r"^\s*-{3,}\s*$")
_YES = {"yes", "true", "1", "y", "on"}


class TaskRequest(BaseModel):
    """What the user asked, in fields.

    Attributes:
        instruction: What to do (the request without options, items or document).
        subtasks: Separate questions (a bulleted or numbered list), each delegated on its own;
            empty when the instruction is one task.
        document: A long input the instruction applies to, split into chunks if long.
        trust: How much checking the answer needs (see ``delegate_task``).
        sensitive: The data may go only to providers the policy trusts with sensitive data.
        max_tokens: Most new tokens per delegated part.
        model: A model name or GGUF sha256 the providers must serve (default: best ranked).
        max_chunk_chars: Longest chunk of the document.
    """

    model_config = ConfigDict(frozen=True)

    instruction: str
    subtasks: tuple[str, ...] = ()
    document: str | None = None
    trust: Trust = "normal"
    sensitive: bool = False
    max_tokens: int = 128
    model: str | None = None
    max_chunk_chars: int = DEFAULT_MAX_CHUNK_CHARS


class Part(BaseModel):
    """One piece of work delegated on its own.

    Attributes:
        index: Its place in the answer (0-based).
        kind: ``task`` (the whole request), ``subtask`` (one list item) or ``chunk`` (a slice
            of the document).
        prompt: What the provider's model is asked.
    """

    model_config = ConfigDict(frozen=True)

    index: int
    kind: Literal["task", "subtask", "chunk"]
    prompt: str


class Step(BaseModel):
    """One step of a plan: which agent calls which tool, with what, and why.

    ``arguments`` may name a part (``{"part": 0}``) whose result a later step uses.
    """

    model_config = ConfigDict(frozen=True)

    agent: Literal["copilot", "matching", "compliance"]
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    why: str

    def text(self) -> str:
        """One line: ``agent → tool(arguments): why``."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.arguments.items())
        if len(args) > 160:
            args = args[:159] + "…"
        return f"{self.agent} → {self.tool}({args}): {self.why}"


class Plan(BaseModel):
    """The workflow for one request: parts to delegate and the steps that handle them.

    Attributes:
        request: The request it serves.
        attempt: 1 for the first plan; a retry of rejected parts counts up.
        parts: What is delegated.
        exclude: DIDs of providers not to use (they gave rejected answers).
        challenge_window_s: Seconds each task stays open for a challenge after its reveals.
        steps: The steps, in order.
    """

    model_config = ConfigDict(frozen=True)

    request: TaskRequest
    attempt: int = 1
    parts: tuple[Part, ...]
    exclude: tuple[str, ...] = ()
    challenge_window_s: int = 0
    steps: tuple[Step, ...]

    def text(self) -> str:
        """The plan as numbered lines."""
        head = f"plan (attempt {self.attempt}): {len(self.parts)} part(s)"
        if self.request.sensitive:
            head += ", sensitive data: only qualifying providers"
        lines = [head] + [f"{i}. {s.text()}" for i, s in enumerate(self.steps, 1)]
        return "\n".join(lines)


class PlanMessage(StructuredMessage[Plan]):
    """The Copilot's plan as a chat message; its text is the numbered steps, not JSON."""

    def to_text(self) -> str:
        return self.content.text()

    def to_model_text(self) -> str:
        return self.content.text()


def _option(value: str, key: str) -> Any:
    key = key.lower()
    if key == "trust":
        trust = value.lower()
        if trust not in ("low", "normal", "high"):
            raise ToolError(f"trust must be low, normal or high (got {value!r})")
        return trust
    if key == "sensitive":
        return value.lower() in _YES
    if key == "max_tokens":
        if not value.isdigit() or not 1 <= int(value) <= MAX_TOOL_TOKENS:
            raise ToolError(f"max_tokens must be a whole number from 1 to {MAX_TOOL_TOKENS}")
        return int(value)
    return value or None


def parse_request(
    text: str,
    policy: PolicySettings | None = None,
    *,
    trust: Trust = "normal",
    max_tokens: int = 128,
    max_chunk_chars: int = DEFAULT_MAX_CHUNK_CHARS,
) -> TaskRequest:
    """Read a request written in plain text, without a model.

    - Lines ``trust: high``, ``sensitive: yes``, ``max_tokens: 64``, ``model: NAME`` set
      options (and are dropped from the instruction).
    - A line of three or more dashes starts the document the instruction applies to.
    - Bulleted (``-``, ``*``) or numbered (``1.``) lines are separate subtasks.
    - Data that matches one of the policy's ``sensitive_patterns`` marks the request sensitive.

    Args:
        text: The request.
        policy: The app's policy (for ``sensitive_patterns``).
        trust: Trust level when the text states none.
        max_tokens: New tokens per part when the text states none.
        max_chunk_chars: Longest chunk of a document.

    Raises:
        ToolError: An empty or overlong request, or an option out of range.
    """
    if len(text) > MAX_REQUEST_CHARS:
        raise ToolError(
            f"the request is {len(text)} characters long; the agents take at most "
            f"{MAX_REQUEST_CHARS}: shorten it"
        )
    lines = text.splitlines()
    document: str | None = None
    for i, line in enumerate(lines):
        if _DOCUMENT_RULE.match(line):
            document = "\n".join(lines[i + 1 :]).strip() or None
            lines = lines[:i]
            break
    options: dict[str, Any] = {"trust": trust, "max_tokens": max_tokens}
    kept: list[str] = []
    items: list[str] = []
    for line in lines:
        option = _OPTION.match(line)
        if option:
            options[option.group(1).lower()] = _option(option.group(2), option.group(1))
            continue
        item = _ITEM.match(line)
        if item:
            items.append(item.group(1))
        else:
            kept.append(line)
    instruction = "\n".join(kept).strip()
    if not instruction and not items:
        raise ToolError("the request is empty; say what you want done")
    if len(items) == 1:  # one bullet is just the request
        instruction = f"{instruction}\n{items[0]}".strip()
        items = []
    patterns = policy.sensitive_patterns if policy is not None else ()
    data = f"{text}"
    if any(re.search(p, data) for p in patterns):
        options["sensitive"] = True
    return TaskRequest(
        instruction=instruction,
        subtasks=tuple(items),
        document=document,
        max_chunk_chars=max_chunk_chars,
        **options,
    )


def _parts(request: TaskRequest) -> list[Part]:
    from chefsplan_agents.tools import split_text

    if request.document is not None:
        chunks = (
            split_text(request.document, request.max_chunk_chars)
            if len(request.document) > request.max_chunk_chars
            else [request.document]
        )
        kind: Literal["task", "chunk"] = "chunk" if len(chunks) > 1 else "task"
        return [
            Part(index=i, kind=kind, prompt=f"{request.instruction}\n\n{chunk}".strip())
            for i, chunk in enumerate(chunks)
        ]
    if request.subtasks:
        context = request.instruction
        return [
            Part(index=i, kind="subtask", prompt=f"{context}\n{item}".strip())
            for i, item in enumerate(request.subtasks)
        ]
    return [Part(index=0, kind="task", prompt=request.instruction)]


def build_plan(
    request: TaskRequest,
    policy: PolicySettings | None = None,
    *,
    attempt: int = 1,
    only_parts: tuple[int, ...] | None = None,
    exclude: tuple[str, ...] = (),
    judge: bool = False,
) -> Plan:
    """The plan for a request under the app's policy (deterministic).

    Args:
        request: The parsed request.
        policy: The app's policy (challenge window, judge rules).
        attempt: 1, or the number of a retry.
        only_parts: Delegate only these parts again (a retry).
        exclude: DIDs of providers not to use.
        judge: A local model judges the policy's fuzzy rules.

    Raises:
        ToolError: Too many parts.
    """
    policy = policy or PolicySettings()
    parts = _parts(request)
    if len(parts) > MAX_PARTS:
        raise ToolError(
            f"the request makes {len(parts)} parts; the agents delegate at most {MAX_PARTS}: "
            "raise max_chunk_chars or split the work"
        )
    if only_parts is not None:
        parts = [p for p in parts if p.index in only_parts]
    window = policy.challenge_window_s
    steps: list[Step] = []
    criteria: dict[str, Any] = {}
    if request.model:
        criteria["model"] = request.model
    if request.sensitive:
        criteria["sensitive"] = True
    if exclude:
        criteria["exclude"] = list(exclude)
    steps.append(
        Step(
            agent="matching",
            tool="find_providers",
            arguments=criteria,
            why="rank providers by model fit, speed, price, reputation and stake"
            + ("; only those the policy trusts with sensitive data" if request.sensitive else ""),
        )
    )
    for part in parts:
        steps.append(
            Step(
                agent="matching",
                tool="delegate_task",
                arguments={
                    "part": part.index,
                    "trust": request.trust,
                    "max_tokens": request.max_tokens,
                    **({"challenge_window_s": window} if window else {}),
                },
                why=f"{part.kind} {part.index + 1} of {len(_parts(request))}, posted before any "
                "is awaited so providers work in parallel"
                if len(parts) > 1
                else f"delegate the {part.kind} at trust {request.trust}",
            )
        )
    for part in parts:
        p = {"part": part.index}
        steps.append(Step(agent="compliance", tool="check_policy", arguments=p, why="app rules"))
        if judge and policy.judge_rules:
            steps.append(
                Step(
                    agent="compliance",
                    tool="judge",
                    arguments=p,
                    why="the local model answers each fuzzy rule yes or no",
                )
            )
        if request.trust != "low":
            steps.append(
                Step(
                    agent="compliance",
                    tool="second_opinion",
                    arguments=p | {"method": "rescore" if request.sensitive else "auto"},
                    why="re-score locally or have a peer re-run it"
                    + (" (re-score only: sensitive data stays put)" if request.sensitive else ""),
                )
            )
        if window:
            steps.append(
                Step(
                    agent="compliance",
                    tool="challenge_or_release",
                    arguments=p,
                    why="challenge a rejected result inside its window, else let it settle",
                )
            )
        steps.append(
            Step(agent="compliance", tool="log_output", arguments=p, why="verdict on chain")
        )
    steps.append(
        Step(agent="copilot", tool="answer", why="merge accepted parts and cite their receipts")
    )
    return Plan(
        request=request,
        attempt=attempt,
        parts=tuple(parts),
        exclude=exclude,
        challenge_window_s=window,
        steps=tuple(steps),
    )
