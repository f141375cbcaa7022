"""``chefsplan chat``: the Copilot in the terminal.

Each question goes to the agents' team (Copilot, Matching, Compliance; :func:`agents.team`):
the Copilot plans it, Matching delegates the parts to provider nodes, Compliance checks the
results, and the Copilot answers with where each part came from. While a turn runs, a live
panel shows the agents' steps (their tool-call events), each task's progress on chain (the
network's progress listener) and the answer's summary as the local model writes it; the
receipts follow the answer.

The network is an embedded devnet by default (``--nodes`` provider nodes running ``--model``,
in this process); ``--network`` uses the chain and IPFS daemon of the settings instead. The
Copilot's own model (``--model``, loaded here) words the answer's summary and re-scores the
nodes' results.

On a terminal the input is prompt_toolkit (history in the state folder, slash-command
completion); Ctrl-C cancels a turn, Ctrl-C twice at the prompt or Ctrl-D quits. With stdin
piped, each line is a question (or a slash command) and the output is plain; ``--json`` prints
one JSON object per line.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import typer
from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import (
    ModelClientStreamingChunkEvent,
    StructuredMessage,
    TextMessage,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
)
from autogen_core import CancellationToken
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelCapabilities,
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

from chefsplan_agents.agents import (
    ComplianceReport,
    DelegationReport,
    LocalModelClient,
    Plan,
    team,
)
from chefsplan_agents.cli._app import app, err, out, settings
from chefsplan_agents.cli._chat_ui import (
    ChatReceipt,
    TurnView,
    policy_table,
    providers_table,
    receipt_line,
    receipts_table,
)
from chefsplan_agents.config import Settings
from chefsplan_agents.devnet import DEVNET_MODELS, Devnet
from chefsplan_agents.errors import ChefsplanError, ConfigError
from chefsplan_agents.llm import is_stub_spec, resolve_model
from chefsplan_agents.market import DelegationProgress, TaskHandle
from chefsplan_agents.network import Network, connect, progress_listener
from chefsplan_agents.tools import Trust, find_providers

__all__ = ["ChatSession", "default_history_path"]

log = logging.getLogger(__name__)

TRUST_LEVELS: tuple[Trust, ...] = ("low", "normal", "high")
COMMANDS: dict[str, str] = {
    "/providers": "list the providers the registry offers, best ranked first",
    "/trust": "/trust low|normal|high: the trust level for later questions",
    "/receipts": "every receipt of this session",
    "/policy": "the policy the Compliance agent applies",
    "/help": "this list",
    "/quit": "leave (also /exit, Ctrl-D, or Ctrl-C twice at the prompt)",
    "/exit": "leave",
}
_MODEL_NAMES = {"tiny": "the tiny test model", "smollm2": "SmolLM2", "smollm2-135m": "SmolLM2"}
_MAX_LINE_CHARS = 200_000


def default_history_path() -> Path:
    """Where the prompt's history lives: ``$XDG_STATE_HOME/chefsplan/chat_history``, else
    ``~/.local/state/chefsplan/chat_history``."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "chefsplan" / "chat_history"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ---------------------------------------------------------------------------- the model


class _StreamingClient(ChatCompletionClient):
    """The Copilot's model, with its plain-text replies streamed to the turn's view.

    The Copilot asks for its summary with ``create``; this client runs ``create_stream``
    underneath and hands every piece to ``on_token``, so the summary appears as it is written.
    It reports ``function_calling=False`` so that the team runs the agents' workflow (the plan
    as data) rather than letting the model drive the tools — what it does with the bare
    :class:`LocalModelClient` too.
    """

    def __init__(self, inner: ChatCompletionClient) -> None:
        self.inner = inner
        # Per turn (a context variable, set in the turn's task): a cancelled turn winding down
        # in the background must not unhook the next turn's view.
        self.on_token: contextvars.ContextVar[Callable[[str], None] | None] = (
            contextvars.ContextVar("chefsplan_chat_on_token", default=None)
        )

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
        sink = self.on_token.get()
        if sink is None or tools or json_output:
            return await self.inner.create(
                messages,
                tools=tools,
                tool_choice=tool_choice,
                json_output=json_output,
                extra_create_args=extra_create_args,
                cancellation_token=cancellation_token,
            )
        result: CreateResult | None = None
        async for piece in self.inner.create_stream(
            messages,
            extra_create_args=extra_create_args,
            cancellation_token=cancellation_token,
        ):
            if isinstance(piece, CreateResult):
                result = piece
            else:
                sink(piece)
        if result is None:  # every stream ends with its result; a client that does not is broken
            raise RuntimeError("the model's stream ended without a result")
        return result

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
        return self.inner.create_stream(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            json_output=json_output,
            extra_create_args=extra_create_args,
            cancellation_token=cancellation_token,
        )

    async def close(self) -> None:
        await self.inner.close()

    def actual_usage(self) -> RequestUsage:
        return self.inner.actual_usage()

    def total_usage(self) -> RequestUsage:
        return self.inner.total_usage()

    def count_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = ()
    ) -> int:
        return self.inner.count_tokens(messages, tools=tools)

    def remaining_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = ()
    ) -> int:
        return self.inner.remaining_tokens(messages, tools=tools)

    @property
    def capabilities(self) -> ModelCapabilities:
        return cast(ModelCapabilities, {**self.inner.capabilities, "function_calling": False})

    @property
    def model_info(self) -> ModelInfo:
        return cast(ModelInfo, {**self.inner.model_info, "function_calling": False})


# ---------------------------------------------------------------------------- a session


@dataclass
class Turn:
    """What one question got: the answer and its receipts, or why there is none."""

    question: str
    answer: str | None = None
    receipts: list[ChatReceipt] = field(default_factory=list)
    cancelled: bool = False
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "receipts": [r.to_json() for r in self.receipts],
            "cancelled": self.cancelled,
            "error": self.error,
        }


class ChatSession:
    """The chat's state over its network: trust level, receipts, and one turn at a time.

    Args:
        network: The network the agents act on.
        model_client: The Copilot's model (``None``: answers without a summary).
        trust: Trust level for questions that state none.
        max_tokens: New tokens per delegated part for questions that state none.
    """

    def __init__(
        self,
        network: Network,
        model_client: ChatCompletionClient | None,
        *,
        trust: Trust = "normal",
        max_tokens: int = 128,
    ) -> None:
        self.network = network
        self.model = _StreamingClient(model_client) if model_client is not None else None
        self.trust: Trust = trust
        self.max_tokens = max_tokens
        self.receipts: list[ChatReceipt] = []
        self.turns = 0

    async def ask(
        self, question: str, view: TurnView, cancellation_token: CancellationToken
    ) -> Turn:
        """Run one question through the team; ``view`` hears everything as it happens.

        Raises:
            ChefsplanError: The team could not be built or a step failed outside the agents'
                safe path.
            asyncio.CancelledError: The turn was cancelled.
        """
        self.turns += 1
        turn = Turn(question)
        # A fresh team each turn: every question is a new request, and a cancelled turn
        # leaves nothing half-done behind for the next one.
        agents = team(self.network, self.model, trust=self.trust, max_tokens=self.max_tokens)

        def on_progress(handle: TaskHandle, progress: DelegationProgress) -> None:
            view.progress("0x" + handle.task_id.hex(), progress)

        if self.model is not None:
            self.model.on_token.set(view.token)
        # Set here, inside the turn's task: the team's runtime and the tools' worker threads
        # inherit the listener (and the token sink) from this context.
        with progress_listener(on_progress):
            async for item in agents.run_stream(
                task=question, cancellation_token=cancellation_token
            ):
                self._show(item, view, turn)
        return turn

    def _show(self, item: object, view: TurnView, turn: Turn) -> None:
        if isinstance(item, ToolCallRequestEvent):
            for call in item.content:
                view.call(call.id, item.source, call.name, call.arguments)
        elif isinstance(item, ToolCallExecutionEvent):
            for result in item.content:
                view.result(result.call_id, result.content, error=bool(result.is_error))
        elif isinstance(item, ModelClientStreamingChunkEvent):
            view.token(item.content)
        elif isinstance(item, StructuredMessage):
            content = item.content
            if isinstance(content, Plan):
                view.plan(content)
            elif isinstance(content, DelegationReport):
                for d in content.delegations:
                    if d.receipt is not None:  # every node that ran it, agreeing ones marked
                        nodes = [
                            (c.did or c.address) + ("" if c.agreed else " ✗")
                            for c in d.receipt.committers
                        ]
                    else:
                        nodes = [n for n in (d.provider_did, *d.dissenters) if n]
                    for task_id in d.task_ids:
                        view.nodes(task_id, nodes)
            elif isinstance(content, ComplianceReport):
                for verdict in content.verdicts:
                    receipt = ChatReceipt.of(self.turns, verdict)
                    turn.receipts.append(receipt)
                    self.receipts.append(receipt)
        elif isinstance(item, TextMessage) and item.source == "copilot":
            turn.answer = item.content
        elif isinstance(item, TaskResult) and turn.answer is None:
            last = item.messages[-1] if item.messages else None
            why = item.stop_reason or "the agents stopped without an answer"
            if isinstance(last, TextMessage):
                turn.answer = last.content
            else:
                turn.error = _one_line(why)

    def providers(self) -> Any:
        """The providers ``find_providers`` ranks first (a ``ProvidersFound``)."""
        return find_providers(self.network, limit=20)


# ---------------------------------------------------------------------------- commands


@dataclass
class _Output:
    """Where a session prints: a terminal (rich), plain lines, or JSON lines."""

    mode: Literal["tty", "plain", "json"]
    console: Console = out

    def error(self, message: str) -> None:
        if self.mode == "json":
            self.json({"error": _one_line(message)})
        else:
            err.print(Text.assemble(("error:", "red"), " ", _one_line(message)))

    def info(self, message: str) -> None:
        if self.mode == "json":
            self.json({"info": message})
        elif self.mode == "tty":
            self.console.print(Text(message, style="dim"))
        else:
            self.console.print(message)

    def json(self, doc: Mapping[str, Any]) -> None:
        self.console.print(json.dumps(doc, sort_keys=True, default=str), soft_wrap=True)


def _command(session: ChatSession, line: str, output: _Output) -> bool:
    """Run a slash command; return ``False`` when the chat should end."""
    name, _, rest = line.strip().partition(" ")
    name = name.lower()
    arg = rest.strip()
    if name in ("/quit", "/exit"):
        return False
    if name == "/help":
        if output.mode == "json":
            output.json({"command": "help", "commands": COMMANDS})
        else:
            for command, what in COMMANDS.items():
                output.console.print(f"{command:<11} {what}")
        return True
    if name == "/trust":
        if arg.lower() not in TRUST_LEVELS:
            output.error(
                f"trust is {session.trust}; set it with /trust low, /trust normal or /trust high"
            )
            return True
        session.trust = cast(Trust, arg.lower())
        if output.mode == "json":
            output.json({"command": "trust", "trust": session.trust})
        else:
            output.info(f"trust is now {session.trust} for the next questions")
        return True
    if name == "/providers":
        try:
            found = session.providers()
        except ChefsplanError as exc:
            output.error(str(exc))
            return True
        if output.mode == "json":
            output.json(
                {"command": "providers", "providers": [p.model_dump() for p in found.providers]}
            )
        elif output.mode == "tty":
            output.console.print(providers_table(found))
        else:
            for p in found.providers:
                output.console.print(f"provider: {p.did} {p.text()}")
        return True
    if name == "/receipts":
        if output.mode == "json":
            output.json(
                {"command": "receipts", "receipts": [r.to_json() for r in session.receipts]}
            )
        elif not session.receipts:
            output.info("no receipts yet: ask a question")
        elif output.mode == "tty":
            output.console.print(receipts_table(session.receipts, title="receipts this session"))
        else:
            for r in session.receipts:
                output.console.print(receipt_line(r))
        return True
    if name == "/policy":
        policy = session.network.policy
        if output.mode == "json":
            output.json({"command": "policy", "policy": policy.model_dump(mode="json")})
        elif output.mode == "tty":
            output.console.print(policy_table(policy))
        else:
            for key, value in policy.model_dump(mode="json").items():
                output.console.print(f"policy: {key} = {json.dumps(value)}")
        return True
    output.error(f"unknown command {name}; /help lists the commands")
    return True


def _print_turn(turn: Turn, output: _Output) -> None:
    if output.mode == "json":
        output.json(turn.to_json())
        return
    if turn.cancelled:
        output.info("cancelled")
        return
    if turn.error is not None:
        output.error(turn.error)
        return
    answer = turn.answer or ""
    if output.mode == "tty":
        output.console.print(Panel(Text(answer), title="answer", title_align="left"))
        if turn.receipts:
            output.console.print(receipts_table(turn.receipts))
    else:
        output.console.print(answer)
        for r in turn.receipts:
            output.console.print(receipt_line(r))


async def _turn(
    session: ChatSession, question: str, view: TurnView, token: CancellationToken
) -> Turn:
    try:
        return await session.ask(question, view, token)
    except ChefsplanError as exc:
        return Turn(question, error=str(exc))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a bug must end the turn, not the chat (and not with a trace)
        log.warning("the turn failed unexpectedly", exc_info=True)
        return Turn(question, error=f"unexpected {type(exc).__name__}: {exc} (see --verbose)")


# ---------------------------------------------------------------------------- the loops


async def _piped(session: ChatSession, output: _Output, lines: Iterator[str]) -> None:
    """Answer each line of stdin; slash commands work as at the prompt."""
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if line.startswith("/"):
            if not _command(session, line, output):
                return
            continue
        turn = await _turn(session, line[:_MAX_LINE_CHARS], TurnView(line), CancellationToken())
        _print_turn(turn, output)


class _ConsoleLog(logging.Handler):
    """Log records as dim lines through the chat's console, so they print above the live
    panel instead of tearing it."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.levelname.lower()}: {record.name}: {record.getMessage()}"
            self.console.print(Text(_one_line(text), style="dim"))
        except Exception:  # logging must never break the chat
            self.handleError(record)


@contextlib.contextmanager
def _logs_through(console: Console) -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [_ConsoleLog(console)]
    try:
        yield
    finally:
        root.handlers = saved


async def _interactive(
    session: ChatSession, output: _Output, history: Path | None, banner: str
) -> None:
    """The prompt loop on a terminal."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory, History, InMemoryHistory
    from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

    from chefsplan_agents.cli._chat_ui import SlashCompleter

    store: History
    if history is None:
        store = InMemoryHistory()
    else:
        history.parent.mkdir(parents=True, exist_ok=True)
        store = FileHistory(str(history))
    completer = SlashCompleter(COMMANDS, {"/trust": TRUST_LEVELS})

    def toolbar() -> str:
        return f" {banner} · trust {session.trust} · Alt-Enter: new line · /help · Ctrl-D quits"

    keys = KeyBindings()

    @keys.add("escape", "enter")  # Alt-Enter: a new line (options, a list, a document)
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    prompt: PromptSession[str] = PromptSession(
        history=store,
        completer=completer,
        complete_while_typing=True,
        bottom_toolbar=toolbar,
        key_bindings=keys,
    )
    console = output.console
    console.print(
        Text.assemble(
            ("chefsplan chat", "bold"),
            f" — {banner}. Ask a question; /help lists the commands.",
        )
    )
    interrupted = False
    background: set[asyncio.Future[Turn]] = set()
    while True:
        try:
            line = await prompt.prompt_async("you › ")
        except KeyboardInterrupt:
            if interrupted:
                return
            interrupted = True
            console.print(Text("(Ctrl-C again or Ctrl-D to quit)", style="dim"))
            continue
        except EOFError:
            return
        line = line.strip()
        if not line:
            continue
        interrupted = False
        if line.startswith("/"):
            if not _command(session, line, output):
                return
            continue
        view = TurnView(line)
        _print_turn(await _live_turn(session, line, view, console, background), output)


async def _live_turn(
    session: ChatSession,
    question: str,
    view: TurnView,
    console: Console,
    background: set[asyncio.Future[Turn]],
) -> Turn:
    """One turn under a live panel; Ctrl-C (SIGINT: the prompt is not reading now) cancels it.

    A cancelled turn returns at once. The team winds down in the background: a task already
    posted still settles (its escrow is spent) and its worker thread runs to the end.
    """
    loop = asyncio.get_running_loop()
    token = CancellationToken()
    task = asyncio.ensure_future(_turn(session, question[:_MAX_LINE_CHARS], view, token))
    cancelled = asyncio.Event()

    def cancel() -> None:
        token.cancel()
        task.cancel()
        cancelled.set()

    waiter = asyncio.ensure_future(cancelled.wait())
    loop.add_signal_handler(signal.SIGINT, cancel)
    try:
        with _no_echo(), Live(view, console=console, refresh_per_second=8, transient=False):
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if task.done() and not task.cancelled():
                turn = task.result()
            else:
                turn = Turn(question, cancelled=True)
                background.add(task)
                task.add_done_callback(_forget(background))
            view.done("cancelled" if turn.cancelled else "failed" if turn.error else "answered")
    finally:
        waiter.cancel()
        loop.remove_signal_handler(signal.SIGINT)
    return turn


def _forget(background: set[asyncio.Future[Turn]]) -> Callable[[asyncio.Future[Turn]], None]:
    def done(task: asyncio.Future[Turn]) -> None:
        background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("a cancelled turn ended with %r", task.exception())

    return done


@contextlib.contextmanager
def _no_echo() -> Iterator[None]:
    """Keys typed during a turn (and the ``^C`` of Ctrl-C) are not echoed into the panel."""
    try:
        import termios

        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
    except (ImportError, OSError, ValueError):
        yield
        return
    quiet = list(saved)
    quiet[3] &= ~(termios.ECHO | getattr(termios, "ECHOCTL", 0))
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)


# ---------------------------------------------------------------------------- start-up


def _check_flags(
    model: str, nodes: int, trust: str, max_tokens: int, history: Path | None, no_history: bool
) -> str:
    """Check the flags before anything starts; return the model's spec."""
    if trust not in TRUST_LEVELS:
        raise ConfigError(f"--trust must be low, normal or high (got {trust!r})")
    if not 1 <= nodes <= 16:
        raise ConfigError(f"--nodes must be 1 to 16 (got {nodes})")
    if max_tokens < 1:
        raise ConfigError(f"--max-tokens must be at least 1 (got {max_tokens})")
    if history is not None and no_history:
        raise ConfigError("--history and --no-history contradict each other; pass one")
    spec = DEVNET_MODELS.get(model, model)
    if is_stub_spec(spec):
        return spec
    if model not in DEVNET_MODELS and not model.endswith(".gguf") and "/" not in model:
        known = ", ".join(sorted(DEVNET_MODELS))
        raise ConfigError(f"unknown --model {model!r}; use one of: {known}, or a .gguf path")
    resolve_model(spec)  # ModelNotFound now, before anything starts
    return spec


@contextlib.contextmanager
def _startup() -> Iterator[Callable[[str], None]]:
    """A spinner on stderr while the chat starts, when stderr is a terminal (piped, the
    output stays clean for scripts); yields ``say(text)``."""
    if not err.is_terminal:
        yield lambda _text: None
        return
    status = err.status("starting…")
    with status:
        yield status.update


@app.command("chat")
def chat(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="The model: smollm2, tiny (test model) or a .gguf path; the devnet's nodes "
            "and the Copilot run it. stub:SECONDS: nodes that fake a model, no Copilot model.",
        ),
    ] = "smollm2",
    nodes: Annotated[int, typer.Option("--nodes", help="Provider nodes of the devnet.")] = 3,
    use_network: Annotated[
        bool,
        typer.Option(
            "--network",
            help="Use the chain and IPFS daemon of the settings (--config/--profile) instead "
            "of an embedded devnet.",
        ),
    ] = False,
    trust: Annotated[
        str, typer.Option("--trust", help="Trust level at start: low, normal or high.")
    ] = "normal",
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", help="New tokens per delegated part.")
    ] = 128,
    threads: Annotated[int, typer.Option("--threads", help="llama.cpp threads per model.")] = 2,
    history: Annotated[
        Path | None,
        typer.Option(
            "--history",
            help="History file (default: $XDG_STATE_HOME/chefsplan/chat_history).",
        ),
    ] = None,
    no_history: Annotated[
        bool, typer.Option("--no-history", help="Keep no history between sessions.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per turn (answer + receipts).")
    ] = False,
) -> None:
    """Chat with the Copilot: each question is planned, delegated to the network's nodes,
    checked, and answered with its receipts."""
    spec = _check_flags(model, nodes, trust, max_tokens, history, no_history)
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1 (got {threads})")
    config: Settings = settings()
    tty = sys.stdin.isatty() and out.is_terminal and not as_json
    mode: Literal["tty", "plain", "json"] = "json" if as_json else "tty" if tty else "plain"
    history_path = None if no_history else (history or default_history_path())
    if logging.getLogger().getEffectiveLevel() > logging.INFO:  # not --verbose
        # The devnet's nodes stand in for remote parties: their chatter (a node declining a
        # task assigned to another) is not the user's business.
        logging.getLogger("chefsplan_agents.node").setLevel(logging.ERROR)
        # A cancelled turn makes the agents' runtime log the cancellation it was handed; the
        # chat has already said "cancelled".
        logging.getLogger("autogen_core").setLevel(logging.CRITICAL)
    try:
        _chat(spec, model, nodes, use_network, config, mode, trust, max_tokens, threads,
              history_path)  # fmt: skip
    except KeyboardInterrupt:
        # Ctrl-C while starting, or in piped mode: stop, with everything closed on the way out.
        err.print("interrupted")
        raise typer.Exit(130) from None
    if mode == "tty":
        err.print(Text("bye", style="dim"))


def _chat(
    spec: str,
    model: str,
    nodes: int,
    use_network: bool,
    config: Settings,
    mode: Literal["tty", "plain", "json"],
    trust: str,
    max_tokens: int,
    threads: int,
    history_path: Path | None,
) -> None:
    tty = mode == "tty"
    with contextlib.ExitStack() as stack:
        with _startup() as say:
            network: Network | None = None
            if use_network:
                # The chain first: an unreachable one fails before the model takes its time.
                say(f"connecting to {config.chain.rpc_url}…")
                network = stack.enter_context(connect(config))
                where = f"network at {config.chain.rpc_url}"
            client: LocalModelClient | None = None
            if not is_stub_spec(spec):
                say(f"loading {_MODEL_NAMES.get(model, Path(spec).name)}…")
                client = LocalModelClient.from_model(
                    resolve_model(spec), n_threads=threads, n_ctx=2048
                )
                stack.callback(asyncio.run, client.close())
            if network is None:
                say(f"starting devnet with {nodes} node{'s' if nodes != 1 else ''}…")
                devnet = stack.enter_context(
                    Devnet.create(
                        nodes=nodes,
                        model=spec,
                        share_model=True,
                        n_threads=threads,
                        on_stage=lambda _stage, detail: say(
                            f"starting devnet with {nodes} nodes: {detail}…"
                        ),
                    )
                )
                network = devnet.network
                where = f"devnet with {nodes} node{'s' if nodes != 1 else ''}"
            network.policy = config.policy
            if client is not None:
                # The Copilot's model re-scores the nodes' results when they ran the same one.
                network.verifier = client.backend
        banner = f"{where}, model {model}"
        session = ChatSession(network, client, trust=cast(Trust, trust), max_tokens=max_tokens)
        # On a terminal, a console that wraps (the shared one keeps long lines whole for
        # scripts), so the live panel's height is what it draws.
        output = _Output(mode, Console(highlight=False, markup=False, emoji=False) if tty else out)
        if mode == "tty":
            with _logs_through(output.console):
                asyncio.run(_interactive(session, output, history_path, banner))
        else:
            asyncio.run(_piped(session, output, iter(sys.stdin)))
