"""``chefsplan chat``: piped and JSON turns with receipts, slash commands, a real terminal
session in tmux (progress, receipts, completion, Ctrl-C, history), and bad input."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from autogen_core.models import UserMessage

from chefsplan_agents.agents import LocalModelClient, model_drives_tools
from chefsplan_agents.cli import run
from chefsplan_agents.cli._chat import _StreamingClient, default_history_path
from chefsplan_agents.identity import Identity, save_keystore
from chefsplan_agents.llm import SCRIPTED_OUTPUT, resolve_model

ROOT = Path(__file__).resolve().parents[3]
TINY = ["chat", "--nodes", "3", "--model", "tiny", "--threads", "1"]
ADDRESSES = {
    "AgentRegistry": "0x" + "00" * 19 + "01",
    "TaskMarket": "0x" + "00" * 19 + "02",
    "OutputLog": "0x" + "00" * 19 + "03",
}

_servers = itertools.count()
needs_tmux = pytest.mark.skipif(
    shutil.which("tmux") is None and not os.environ.get("CI"),
    reason="tmux is not installed (CI runs this test and fails without it)",
)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A clean environment: no CHEFSPLAN_* settings, config and state under tmp_path."""
    for name in list(os.environ):
        if name.startswith("CHEFSPLAN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    found = dict(os.environ)
    found["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), found.get("PYTHONPATH")) if p)
    return found


def _chat(args: list[str], lines: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chefsplan_agents", *args],
        input=lines,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


# ---------------------------------------------------------------------------- piped


def test_piped_questions_get_answers_with_receipts_and_slash_commands_work(
    env: dict[str, str],
) -> None:
    lines = (
        "What is for dinner?\n/trust high\n/providers\n/policy\n/nope\n"
        "Name a stew.\n/receipts\n/quit\nNever asked.\n"
    )
    proc = _chat(TINY, lines, env)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    # Two answers (the third question comes after /quit), each citing where it came from.
    assert out.count("Sources:") == 2
    assert out.count(SCRIPTED_OUTPUT) >= 2
    receipts = [line for line in out.splitlines() if line.startswith("receipt: ")]
    # Under each answer its receipts, then all of them again from /receipts. (A part the
    # Compliance agent rejects is delegated once more, so a turn may hold two.)
    n = len(receipts) // 2
    assert n >= 2 and receipts[n:] == receipts[:n]
    first, second = [r for r in receipts[:n] if " accepted (" in r]
    pattern = (
        r"receipt: part 1 task 0x[0-9a-f]{64} result (bafk\w+) node (did:key:z\w+) "
        r"agreed (\d)/(\d) accepted \(([^)]*)\) gas (\d+) trust (\w+)"
    )
    a = re.fullmatch(pattern, first)
    b = re.fullmatch(pattern, second)
    assert a is not None and b is not None, (first, second)
    assert a.group(3, 4) == ("1", "1") and a[7] == "normal"  # normal: one node, re-scored locally
    assert "re-score passed" in a[5] and int(a[6]) > 0
    assert b.group(3, 4) == ("3", "3") and b[7] == "high"  # /trust high: three nodes voted
    # The answer names the same result CID and node as the receipt.
    assert f"result {a[1]}" in out and f"node {a[2]} answered" in out
    providers = [line for line in out.splitlines() if line.startswith("provider: did:key:")]
    assert len(providers) == 3
    assert "trust is now high" in out
    assert "policy: forbidden_words = []" in out
    assert "error: unknown command /nope; /help lists the commands" in proc.stderr
    assert "Never asked" not in out


def test_json_prints_one_object_per_turn(env: dict[str, str]) -> None:
    proc = _chat([*TINY, "--json"], "What is for dinner?\n/trust low\nName a pie.\n", env)
    assert proc.returncode == 0, proc.stderr
    docs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [d.get("question") or d.get("command") for d in docs] == [
        "What is for dinner?",
        "trust",
        "Name a pie.",
    ]
    for turn, trust in ((docs[0], "normal"), (docs[2], "low")):
        assert turn["error"] is None and not turn["cancelled"]
        receipt = turn["receipts"][-1]  # the accepted one (after a retry, the second)
        assert receipt["verdict"] == "accepted" and receipt["trust"] == trust
        assert receipt["result_cid"].startswith("bafk") and receipt["gas_used"] > 0
        assert re.fullmatch(r"0x[0-9a-f]{64}", receipt["task_ids"][0])
        assert receipt["result_cid"] in turn["answer"]
    assert docs[2]["receipts"][0]["turn"] == 2


# ---------------------------------------------------------------------------- streaming


def test_the_copilot_model_streams_its_plain_replies() -> None:
    async def main() -> tuple[list[str], str]:
        inner = LocalModelClient.from_model(resolve_model("tiny"), n_threads=1, n_ctx=512)
        client = _StreamingClient(inner)
        # The team must run the workflow, not hand this client the tools.
        assert client.model_info["function_calling"] is False
        assert not model_drives_tools(client)
        pieces: list[str] = []
        client.on_token.set(pieces.append)
        try:
            made = await client.create([UserMessage(content="Hi", source="user")])
            assert isinstance(made.content, str)
            return pieces, made.content
        finally:
            await client.close()

    pieces, content = asyncio.run(main())
    assert content == SCRIPTED_OUTPUT
    assert len(pieces) > 1 and "".join(pieces) == content


# ---------------------------------------------------------------------------- a terminal


class _Pane:
    """A tmux session (its own server) running one command; read with :meth:`wait_for`."""

    def __init__(self, name: str, command: str, cwd: Path) -> None:
        self.tmux = ["tmux", "-L", name]
        self.target = f"{name}:0"
        subprocess.run(
            [*self.tmux, "-f", "/dev/null", "new-session", "-d", "-s", name, "-x", "120",
             "-y", "50", "-c", str(cwd), command],
            check=True,
        )  # fmt: skip
        subprocess.run([*self.tmux, "set-option", "-t", name, "remain-on-exit", "on"], check=True)

    def send(self, *keys: str) -> None:
        subprocess.run([*self.tmux, "send-keys", "-t", self.target, *keys], check=True)

    def type(self, text: str) -> None:
        subprocess.run([*self.tmux, "send-keys", "-t", self.target, "-l", text], check=True)

    def text(self) -> str:
        return subprocess.run(
            [*self.tmux, "capture-pane", "-p", "-J", "-S", "-", "-t", self.target],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if len(re.findall(pattern, text)) >= count:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} x{count} not in the pane:\n{text}")
            time.sleep(0.1)

    def exit_status(self, timeout: float = 60.0) -> int:
        """The command's exit status (the pane's shell echoes it)."""
        found = re.search(r"EXIT=(\d+)", self.wait_for(r"EXIT=\d+", timeout=timeout))
        assert found is not None
        return int(found[1])

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], check=False, capture_output=True)


@pytest.fixture
def pane_factory(env: dict[str, str], tmp_path: Path) -> Iterator[object]:
    panes: list[_Pane] = []

    def start(args: list[str], extra_env: dict[str, str] | None = None) -> _Pane:
        run_env = {**env, **(extra_env or {})}
        exports = " ".join(
            f"{k}={shlex.quote(v)}"
            for k, v in run_env.items()
            if k in ("PYTHONPATH", "PATH", "HOME", "CHAT_RELEASE_FILE") or k.startswith("XDG_")
        )
        command = f'env -i TERM=xterm-256color {exports} {shlex.join(args)}; echo "EXIT=$?"'
        pane = _Pane(f"chefsplan-chat-{os.getpid()}-{next(_servers)}", command, tmp_path)
        panes.append(pane)
        return pane

    yield start
    for pane in panes:
        pane.close()


@needs_tmux
def test_a_terminal_session(pane_factory: object, tmp_path: Path) -> None:
    history = tmp_path / "hist" / "chat_history"
    release = tmp_path / "release"
    # slow_chat.py is the chefsplan command with the nodes' model gated: a prompt holding SLOW
    # waits until the test creates `release`, so Ctrl-C reliably lands during that turn.
    pane = pane_factory(  # type: ignore[operator]
        [sys.executable, str(ROOT / "tests/unit/cli/slow_chat.py"), *TINY,
         "--history", str(history)],
        {"CHAT_RELEASE_FILE": str(release)},
    )  # fmt: skip
    pane.wait_for(r"you ›")
    pane.type("What is for dinner?")
    pane.send("Enter")
    text = pane.wait_for(r"turn ┃|part ┃")  # the receipts table under the answer
    # The live panel: the agents' steps and the task's progress on chain.
    assert "copilot · answered" in text
    assert "✓ matching → delegate_task" in text
    assert "✓ compliance → second_opinion" in text
    assert re.search(r"0x[0-9a-f]{8}…[0-9a-f]{4}\s+settled\s+1/1\s+1/1\s+1/1\s+z6Mk\w+…\w+", text)
    assert re.search(r"bafk\w+…\w+ │ z6Mk\w+…\w+ │\s+1/1 │ accepted", text)

    # Completion: "/tr" + Tab completes the command.
    pane.type("/tr")
    pane.wait_for(r"you › /tr")
    time.sleep(0.3)  # let the completer answer before Tab asks for it
    pane.send("Tab")
    pane.wait_for(r"you › /trust")
    pane.type(" high")
    pane.send("Enter")
    pane.wait_for("trust is now high")
    pane.type("/providers")
    pane.send("Enter")
    text = pane.wait_for(r"providers, best ranked first")
    text = pane.wait_for(r"z6Mk\w+…\w+ │ 0x", count=3)
    assert "chefsplan-tiny-scripted" in text

    # A turn held by the gate: Ctrl-C cancels it and the chat goes on.
    pane.type("SLOW: plan a feast")
    pane.send("Enter")
    pane.wait_for(r"matching: delegate_task · Ctrl-C cancels")
    pane.send("C-c")
    pane.wait_for(r"copilot · cancelled")
    pane.wait_for(r"\ncancelled\n")
    release.touch()
    pane.type("Name a stew.")
    pane.send("Enter")
    text = pane.wait_for(r"│\s+3/3 │ accepted")  # the next turn, at trust high
    assert text.count("copilot · answered") == 2

    # Ctrl-C at the prompt only warns; /quit leaves.
    pane.send("C-c")
    pane.wait_for(r"Ctrl-C again or Ctrl-D to quit")
    pane.type("/quit")
    pane.send("Enter")
    assert pane.exit_status() == 0, pane.text()
    assert "Traceback" not in pane.text()
    saved = history.read_text()
    assert "+What is for dinner?" in saved and "+Name a stew." in saved


@needs_tmux
def test_ctrl_d_and_ctrl_c_twice_leave_cleanly(pane_factory: object) -> None:
    for keys in (["C-d"], ["C-c", "C-c"]):
        pane = pane_factory([sys.executable, "-m", "chefsplan_agents", *TINY, "--no-history"])  # type: ignore[operator]
        pane.wait_for(r"you ›")
        for key in keys:
            pane.send(key)
            time.sleep(0.2)
        assert pane.exit_status() == 0, pane.text()
        assert "bye" in pane.text()


def test_the_default_history_is_in_the_state_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_history_path() == tmp_path / "chefsplan" / "chat_history"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_history_path() == Path.home() / ".local/state/chefsplan/chat_history"


# ---------------------------------------------------------------------------- bad input


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["chat", "--bogus"], 2, "error: No such option: --bogus; see 'chefsplan chat --help'"),
        (["chat", "--model", "/nope/menu.gguf"], 1, "error: model file /nope/menu.gguf does"),
        (["chat", "--model", "llama9"], 1, "error: unknown --model 'llama9'; use one of"),
        (["chat", "--trust", "medium"], 1, "error: --trust must be low, normal or high"),
        (["chat", "--history", "h", "--no-history"], 1, "error: --history and --no-history"),
    ],
)
def test_bad_flags_are_one_line(
    argv: list[str], status: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(argv) == status
    captured = capsys.readouterr()
    assert captured.err.startswith(message), captured.err
    assert len(captured.err.splitlines()) == 1 and captured.out == ""


def test_an_unreachable_network_is_one_line(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_keystore(Identity.generate(), tmp_path / "key.json", "pw", scrypt_n=2**10)
    url = f"http://127.0.0.1:{_closed_port()}"
    contracts = ", ".join(f'{k} = "{v}"' for k, v in ADDRESSES.items())
    (tmp_path / "net.toml").write_text(
        f'keystore = "key.json"\n[chain]\nbackend = "jsonrpc"\nrpc_url = "{url}"\n'
        f"contracts = {{ {contracts} }}\n"
    )
    env["CHEFSPLAN_KEYSTORE_PASSPHRASE"] = "pw"
    proc = _chat(["--config", "net.toml", "chat", "--network", "--model", "tiny"], "", env)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"error: cannot reach the chain node at {url} (ConnectionError); start the node or "
        "fix chain.rpc_url\n"
    )
    assert proc.stdout == ""
