"""What ``chefsplan chat`` shows: the live panel of a turn, receipts, providers, the policy.

A :class:`TurnView` collects what happens during one turn — the agents' steps (their tool-call
events), each delegated task's progress (from the network's progress listener, on worker
threads) and the answer's tokens as the model writes them — and renders it as one rich panel
that a ``Live`` display refreshes. The ``*_table`` functions render the slash commands' output.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from rich.console import Group, JustifyMethod, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from chefsplan_agents import _json
from chefsplan_agents.agents import Plan, Verdict
from chefsplan_agents.config import PolicySettings
from chefsplan_agents.market import DelegationProgress
from chefsplan_agents.tools import ProvidersFound

__all__ = [
    "ChatReceipt",
    "SlashCompleter",
    "TurnView",
    "policy_table",
    "providers_table",
    "receipt_line",
    "receipts_table",
    "short",
]

_MAX_STEPS = 14
_MAX_RESULT = 110

_STAGE_TEXT = {
    "posted": "posted, waiting for claims",
    "claimed": "claimed, nodes running the model",
    "committed": "committed, waiting for reveals",
    "revealed": "revealed, settling",
    "finalized": "settled",
}


def short(value: str | None, head: int = 10, tail: int = 4) -> str:
    """``value`` cut to its head and tail (``0x12ab34cd…ef01``); ``-`` when empty."""
    if not value:
        return "-"
    return value if len(value) <= head + tail + 1 else f"{value[:head]}…{value[-tail:]}"


def _did(value: str | None) -> str:
    # Every node's DID is a did:key; its tail tells the nodes apart.
    if value and value.startswith("did:key:"):
        value = value.removeprefix("did:key:")
    return short(value, 6, 6)


@dataclass(frozen=True)
class ChatReceipt:
    """One delegated part of an answer, as the chat lists it.

    Attributes:
        turn: The turn it answered (1 for the first question).
        part: The part of the request (1-based).
        task_ids: The on-chain tasks.
        result_cid: CID of the winning ResultBundle.
        node_did: DID of the provider whose result was used.
        agreed: Providers that returned that output.
        replicas: Providers that ran the part.
        verdict: ``accepted`` or ``rejected``.
        checks: What the checks said (re-score, second opinion, policy), one line.
        gas_used: Gas of every transaction of the settled task (``None`` before settlement).
        trust: The trust level it was delegated with.
    """

    turn: int
    part: int
    task_ids: tuple[str, ...]
    result_cid: str
    node_did: str | None
    agreed: int
    replicas: int
    verdict: str
    checks: str
    gas_used: int | None
    trust: str

    @classmethod
    def of(cls, turn: int, verdict: Verdict) -> ChatReceipt:
        """The receipt of one Compliance verdict."""
        d = verdict.delegation
        checks: list[str] = []
        if d.verification is not None:
            checks.append("re-score " + ("passed" if d.verification.passed else "failed"))
        if verdict.second_opinion is not None:
            checks.append(f"second opinion {verdict.second_opinion.verdict}")
        if verdict.policy is not None:
            checks.append("policy " + ("passed" if verdict.policy.allowed else "broken"))
        if verdict.challenge is not None:
            checks.append("challenged")
        if d.status == "failed" and d.error:
            checks.append(d.error)
        checks += [r for r in verdict.reasons if r not in checks]
        return cls(
            turn=turn,
            part=verdict.part + 1,
            task_ids=d.task_ids,
            result_cid=d.result_cid,
            node_did=d.provider_did,
            agreed=d.agreed,
            replicas=d.replicas,
            verdict=verdict.decision,
            checks="; ".join(checks),
            gas_used=d.receipt.gas_used if d.receipt is not None else None,
            trust=d.trust,
        )

    def to_json(self) -> dict[str, Any]:
        """Every field, JSON-ready."""
        doc = asdict(self)
        doc["task_ids"] = list(self.task_ids)
        return doc


def receipt_line(r: ChatReceipt) -> str:
    """A receipt as one plain line, full values (what piped output prints)."""
    gas = f"{r.gas_used}" if r.gas_used is not None else "-"
    return (
        f"receipt: part {r.part} task {','.join(r.task_ids) or '-'} result {r.result_cid or '-'} "
        f"node {r.node_did or '-'} agreed {r.agreed}/{r.replicas} {r.verdict} "
        f"({r.checks or 'no checks'}) gas {gas} trust {r.trust}"
    )


def receipts_table(receipts: list[ChatReceipt], *, title: str | None = None) -> Table:
    """Receipts as a compact table (values shortened; ``/receipts`` and ``--json`` are full)."""
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    with_turn = title is not None  # the session's list; under an answer the turn is plain
    columns: list[tuple[str, JustifyMethod]] = [
        ("part", "right"),
        ("task", "left"),
        ("result CID", "left"),
        ("node", "left"),
        ("agreed", "right"),
        ("verdict", "left"),
        ("gas", "right"),
        ("checks", "left"),
    ]
    if with_turn:
        columns.insert(0, ("turn", "right"))
    rows: list[list[str | Text]] = []
    for r in receipts:
        rows.append(
            [
                *((str(r.turn),) if with_turn else ()),
                str(r.part),
                ", ".join(short(t, 6) for t in r.task_ids) or "-",
                short(r.result_cid, 8, 6),
                _did(r.node_did),
                f"{r.agreed}/{r.replicas}",
                Text(r.verdict, style="green" if r.verdict == "accepted" else "bold red"),
                f"{r.gas_used:,}" if r.gas_used is not None else "-",
                Text(_compact(r.checks), style="dim", overflow="ellipsis", no_wrap=True),
            ]
        )
    for i, (name, justify) in enumerate(columns):
        # Every column keeps its width but the last: the checks give way on a narrow
        # terminal (the answer's sources and --json carry them in full).
        widest = max([len(name), *(len(str(row[i])) for row in rows)])
        table.add_column(
            name,
            justify=justify,
            no_wrap=True,
            overflow="ellipsis",
            min_width=None if name == "checks" else widest,
        )
    for row in rows:
        table.add_row(*row)
    return table


def _compact(checks: str) -> str:
    """``re-score passed; second opinion confirmed`` as ``re-score ✓ opinion ✓``."""
    out = checks
    for long, brief in (
        ("second opinion", "opinion"),
        (" passed", " ✓"),
        (" confirmed", " ✓"),
        (" failed", " ✗"),
        (" broken", " ✗"),
        (" disputed", " ✗"),
        ("; ", " "),
    ):
        out = out.replace(long, brief)
    return out


def providers_table(found: ProvidersFound) -> Table:
    """``find_providers``' answer as a table, best ranked first."""
    table = Table(title="providers, best ranked first", title_justify="left", show_edge=False)
    rows = [
        [
            _did(p.did),
            short(p.address, 6),
            f"{p.generation_tokens_per_s:.0f}",
            f"{p.price_per_1k_tokens_wei:,}",
            f"{p.reputation_score:.2f}",
            str(p.tasks_won),
            p.model_name,
        ]
        for p in found.providers
    ]
    names = ("node", "address", "tok/s", "wei/1k tok", "reputation", "won", "model")
    for i, name in enumerate(names):
        # The model's name comes last and gives way on a narrow terminal.
        widest = max([len(name), *(len(row[i]) for row in rows)])
        table.add_column(
            name, no_wrap=True, overflow="ellipsis", min_width=None if name == "model" else widest
        )
    for row in rows:
        table.add_row(*row)
    return table


def policy_table(policy: PolicySettings) -> Table:
    """The active policy, one rule a row (``off`` for a rule that is not set)."""
    table = Table(title="policy", title_justify="left", show_header=False, show_edge=False)
    table.add_column("rule", style="bold")
    table.add_column("value")
    for name, value in policy.model_dump(mode="json").items():
        if value in (None, [], {}, ()):
            shown = "off"
        elif isinstance(value, str | int | float | bool):
            shown = str(value)
        else:
            shown = json.dumps(value, ensure_ascii=False)
        table.add_row(name, shown)
    return table


@dataclass
class _Step:
    agent: str
    tool: str
    arguments: str
    result: str | None = None
    error: bool = False


@dataclass
class _Task:
    task_id: str
    stage: str
    replicas: int
    claimed: int = 0
    committed: int = 0
    revealed: int = 0
    nodes: list[str] = field(default_factory=list)


class TurnView:
    """The live state of one turn, rendered as a panel; safe to update from any thread."""

    def __init__(self, question: str) -> None:
        self.question = question
        self._lock = threading.Lock()
        self._plan: str | None = None
        self._steps: list[_Step] = []
        self._pending: dict[str, _Step] = {}
        self._tasks: dict[str, _Task] = {}
        self._tokens: list[str] = []
        self._status = "planning"

    # ------------------------------------------------------------------ updates

    def plan(self, plan: Plan) -> None:
        """The Copilot's plan arrived."""
        with self._lock:
            parts = len(plan.parts)
            self._plan = (
                f"plan (attempt {plan.attempt}): {parts} part{'s' if parts != 1 else ''}, "
                f"trust {plan.request.trust}"
                + (f", excluding {len(plan.exclude)} node(s)" if plan.exclude else "")
            )
            self._status = "delegating"

    def call(self, call_id: str, agent: str, tool: str, arguments: str) -> None:
        """An agent started a step (a tool-call request event)."""
        with self._lock:
            step = _Step(agent, tool, _arguments(arguments))
            self._steps.append(step)
            self._pending[call_id] = step
            self._status = f"{agent}: {tool}"

    def result(self, call_id: str, text: str, *, error: bool) -> None:
        """A step finished (a tool-call execution event)."""
        with self._lock:
            step = self._pending.pop(call_id, None)
            if step is not None:
                step.result = " ".join(text.split())
                step.error = error

    def progress(self, task_id: str, progress: DelegationProgress) -> None:
        """A delegated task moved (the network's progress listener; a worker thread)."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                task = self._tasks[task_id] = _Task(task_id, progress.stage, progress.replicas)
            task.stage = progress.stage
            task.replicas = progress.replicas
            task.claimed = progress.claimed
            task.committed = progress.committed
            task.revealed = progress.revealed

    def nodes(self, task_id: str, nodes: list[str]) -> None:
        """Which nodes answered a task (known once it is reported)."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is not None:
                task.nodes = nodes

    def token(self, text: str) -> None:
        """A piece of the answer, as the model writes it."""
        with self._lock:
            if not self._tokens:
                self._status = "writing the answer"
            self._tokens.append(text)

    def done(self, status: str) -> None:
        """The turn ended (``answered``, ``cancelled``, ``failed``)."""
        with self._lock:
            self._status = status

    @property
    def streamed(self) -> str:
        """The answer's text as streamed so far."""
        with self._lock:
            return "".join(self._tokens)

    # ------------------------------------------------------------------ rendering

    def __rich__(self) -> RenderableType:
        with self._lock:
            rows: list[RenderableType] = []
            if self._plan:
                rows.append(Text(self._plan, style="bold"))
            steps = self._steps[-_MAX_STEPS:]
            if len(self._steps) > len(steps):
                rows.append(Text(f"… {len(self._steps) - len(steps)} earlier steps", "dim"))
            for s in steps:
                line = Text()
                if s.result is None:
                    line.append("… ", style="yellow")
                elif s.error:
                    line.append("✗ ", style="red")
                else:
                    line.append("✓ ", style="green")
                line.append(f"{s.agent} → {s.tool}", style="bold")
                if s.arguments:
                    line.append(f"({s.arguments})", style="dim")
                if s.result is not None:
                    line.append(": ")
                    result = s.result
                    if len(result) > _MAX_RESULT:
                        result = result[: _MAX_RESULT - 1] + "…"
                    line.append(result, style="red" if s.error else "")
                line.no_wrap = True
                line.overflow = "ellipsis"
                rows.append(line)
            if self._tasks:
                rows.append(self._task_table())
            if self._tokens:
                rows.append(Text("".join(self._tokens), style="italic"))
            status = self._status
        title = f"copilot · {status}"
        if status not in ("answered", "cancelled", "failed"):
            title += " · Ctrl-C cancels"
        return Panel(
            Group(*rows) if rows else Text("planning…", style="dim"),
            title=title,
            title_align="left",
            border_style="cyan" if status != "cancelled" else "yellow",
        )

    def _task_table(self) -> Table:
        table = Table(show_edge=False, box=None, pad_edge=False, show_header=True)
        for name in ("task", "stage", "claim", "commit", "reveal", "nodes"):
            table.add_column(name, no_wrap=True, style="dim" if name == "task" else None)
        for t in self._tasks.values():
            stage = _STAGE_TEXT.get(t.stage, t.stage)
            table.add_row(
                short(t.task_id),
                Text(stage, style="green" if t.stage == "finalized" else "yellow"),
                f"{t.claimed}/{t.replicas}",
                f"{t.committed}/{t.replicas}",
                f"{t.revealed}/{t.replicas}",
                ", ".join(_node(n) for n in t.nodes) or "-",
            )
        return table


def _node(label: str) -> str:
    did, _, mark = label.partition(" ")
    return _did(did) + (f" {mark}" if mark else "")


def _arguments(arguments: str) -> str:
    """A step's JSON arguments as ``key=value`` pairs, cut short."""
    try:
        parsed = _json.loads(arguments) if len(arguments) < 20_000 else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        text = ", ".join(f"{k}={_value(v)}" for k, v in parsed.items())
    else:
        text = arguments
    text = " ".join(text.split())
    return text if len(text) <= 70 else text[:69] + "…"


def _value(value: Any) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 30 else value[:29] + "…")
    return json.dumps(value, default=str)


class SlashCompleter(Completer):
    """Completes slash commands (``/pro`` → ``/providers``) and their arguments.

    prompt_toolkit's word completers stop at the ``/`` (not a word character), so this
    matches the whole first word instead.
    """

    def __init__(self, commands: Mapping[str, str], arguments: Mapping[str, Sequence[str]]):
        self.commands = commands
        self.arguments = arguments

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        text = document.text_before_cursor
        if not text.startswith("/"):
            return
        name, space, rest = text.partition(" ")
        if not space:
            for command, what in self.commands.items():
                if command.startswith(name.lower()):
                    yield Completion(command, -len(name), display_meta=what)
            return
        for value in self.arguments.get(name.lower(), ()):
            if value.startswith(rest.strip().lower()) and " " not in rest.strip():
                yield Completion(value, -len(rest.lstrip()))
