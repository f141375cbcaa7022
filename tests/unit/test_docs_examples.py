"""The code in the docs runs: every ```python block of docs/*.md and README.md, and the offline
``chefsplan`` commands of their ```console blocks.

Each page's Python blocks run in order in one fresh namespace, in a subprocess of their own
(a fresh interpreter, a scratch working folder, no ``CHEFSPLAN_*`` settings from the caller),
with a timeout. A block opts out only with a marker line that gives a reason::

    # docs: no-run — needs a running IPFS daemon

Console lines ``$ chefsplan …`` run when they need no server (``cid``, ``id``, ``devnet``, or
any the page shows failing with ``error: …``) and hold no placeholder (``…``). Each must exit as
the page shows (0, or non-zero for an error), and the lines the page shows under it must appear
in its output in order (``…`` matches anything).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from chefsplan_agents.cli import run

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
NO_RUN = re.compile(r"#\s*docs:\s*no-run\b(?P<reason>.*)")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")
PAGE_TIMEOUT_S = 300
# Subcommands that work offline, with nothing but this package and the tiny model.
OFFLINE_COMMANDS = {"cid", "id", "devnet"}
GLOBAL_OPTIONS_WITH_VALUES = {"--config", "--profile", "-p"}

# The runner exec()s each block compiled under its page and line, so a failure points at the
# Markdown that holds it.
RUNNER = """
import json, sys
namespace = {"__name__": "__main__"}
for block in json.load(sys.stdin):
    print(f"--- running {block['where']}", file=sys.stderr, flush=True)
    code = "\\n" * (block["line"] - 1) + block["code"]
    exec(compile(code, block["page"], "exec"), namespace)
"""


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the block's first code line
    lang: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _blocks(page: Path) -> list[Block]:
    blocks: list[Block] = []
    lang: str | None = None
    start, lines = 0, []
    for number, text in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        fence = FENCE.match(text)
        if lang is None:
            if fence:
                lang, start, lines = fence["lang"], number + 1, []
        elif text.startswith("```"):
            blocks.append(Block(page, start, lang, "\n".join(lines) + "\n"))
            lang = None
        else:
            lines.append(text)
    return blocks


def _python(page: Path) -> list[Block]:
    return [b for b in _blocks(page) if b.lang == "python" and not NO_RUN.search(b.code)]


@dataclass(frozen=True)
class Command:
    """A ``$ chefsplan …`` line and the output the page shows under it."""

    block: Block
    text: str
    expected: tuple[str, ...]

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text, comments=True)[1:]

    @property
    def fails(self) -> bool:
        return bool(self.expected) and self.expected[0].startswith("error:")


def _commands(page: Path) -> list[Command]:
    found = []
    for block in _blocks(page):
        if block.lang != "console":
            continue
        current: list[str] | None = None
        shown: list[tuple[str, list[str]]] = []
        for text in block.code.splitlines():
            if text.startswith("$ "):
                current = []
                shown.append((text[2:].strip(), current))
            elif current is not None and text.strip():
                current.append(text.rstrip())
        for command, expected in shown:
            if not command.startswith("chefsplan ") or command.endswith("\\"):
                continue  # another program, or continued on the next line
            if "…" in command.split("#", 1)[0]:
                continue  # holds a placeholder
            offline = _subcommand(shlex.split(command, comments=True)[1:]) in OFFLINE_COMMANDS
            # A command the page shows failing fails before it needs any server.
            shows_error = bool(expected) and expected[0].startswith("error:")
            if offline or shows_error:
                found.append(Command(block, command, tuple(expected)))
    return found


def _subcommand(argv: list[str]) -> str | None:
    words = iter(argv)
    for word in words:
        if word in GLOBAL_OPTIONS_WITH_VALUES:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _shown(expected: tuple[str, ...], actual: str) -> bool:
    """Whether the lines a page shows appear, in order, in the actual output (… matches
    anything)."""
    lines = iter(actual.splitlines())
    for line in expected:
        pattern = re.compile(".*".join(re.escape(part) for part in line.split("…")))
        if not any(pattern.fullmatch(candidate.rstrip()) for candidate in lines):
            return False
    return True


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHEFSPLAN_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    env["CHEFSPLAN_KEYSTORE_PASSPHRASE"] = "docs example passphrase"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _scratch(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    # Files the pages hash or read by name.
    (work / "README.md").write_bytes((ROOT / "README.md").read_bytes())
    (work / "dataset.csv").write_text("item,qty\nflour,2\n")
    (work / "chefsplan.toml").write_text(
        '[profiles.testnet.chain]\nbackend = "jsonrpc"\nrpc_url = "http://127.0.0.1:8545"\n'
    )
    (work / "big.iso").write_bytes(bytes(i * 7 % 251 for i in range(1 << 20)))  # > one chunk
    return work


def test_opt_outs_give_a_reason() -> None:
    for page in PAGES:
        for block in _blocks(page):
            for match in NO_RUN.finditer(block.code):
                reason = match["reason"].strip(" -—:")
                assert len(reason) >= 10, f"{block.where}: say why the block cannot run"


PYTHON_PAGES = [p for p in PAGES if _python(p)]


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=[p.name for p in PYTHON_PAGES])
def test_python_blocks_run(page: Path, tmp_path: Path) -> None:
    blocks = [
        {"page": str(b.page), "line": b.line, "code": b.code, "where": b.where}
        for b in _python(page)
    ]
    proc = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", RUNNER],
        input=json.dumps(blocks),
        capture_output=True,
        text=True,
        timeout=PAGE_TIMEOUT_S,
        cwd=_scratch(tmp_path),
        env=_env(tmp_path),
    )
    assert proc.returncode == 0, f"{page.name}: a block failed\n{proc.stderr[-4000:]}"


CONSOLE_PAGES = [p for p in PAGES if _commands(p)]


@pytest.mark.parametrize("page", CONSOLE_PAGES, ids=[p.name for p in CONSOLE_PAGES])
def test_console_commands_run(
    page: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # In this process (through the CLI's own entry point), in order, in one scratch folder:
    # earlier commands set up what later ones use (`id new`, then `id show`).
    work = _scratch(tmp_path)
    for name in list(os.environ):
        if name.startswith("CHEFSPLAN_"):
            monkeypatch.delenv(name)
    for name, value in _env(tmp_path).items():
        if name != "PYTHONPATH":
            monkeypatch.setenv(name, value)
    monkeypatch.chdir(work)
    capsys.readouterr()
    for command in _commands(page):
        status = run(command.argv)
        captured = capsys.readouterr()
        where = f"{command.block.where}: `{command.text}`"
        if command.fails:
            assert status != 0, f"{where} should fail as the page shows"
        else:
            assert status == 0, f"{where} failed\n{captured.err[-2000:]}"
        shown = captured.err if command.fails else captured.out
        assert _shown(command.expected, shown), (
            f"{where} printed\n{shown}\nnot what the page shows:\n" + "\n".join(command.expected)
        )
