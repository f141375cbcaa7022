from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chefsplan_agents.cli import run


@pytest.fixture
def vector_files(
    tmp_path: Path, cid_vectors: list[dict[str, Any]], vector_content: Any
) -> list[tuple[Path, dict[str, Any]]]:
    files = []
    for vector in cid_vectors:
        path = tmp_path / f"v{vector['size']}.bin"
        path.write_bytes(vector_content(vector["size"], vector["seed"]))
        files.append((path, vector))
    return files


def test_prints_only_the_cidv1(
    vector_files: list[tuple[Path, dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    for path, vector in vector_files:
        assert run(["cid", str(path)]) == 0
        captured = capsys.readouterr()
        assert captured.out == vector["cidv1"] + "\n"
        assert captured.err == ""


def test_v0(
    vector_files: list[tuple[Path, dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    for path, vector in vector_files:
        assert run(["cid", "--v0", str(path)]) == 0
        assert capsys.readouterr().out == vector["cidv0"] + "\n"


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["cid", str(tmp_path / "nope.bin")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert "does not exist" in lines[0]


def test_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["cid", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "is a directory" in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_no_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["cid"]) == 2
    assert "Missing argument" in capsys.readouterr().err


def test_console_script(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "hello.txt"
    path.write_bytes(b"hello")
    proc = subprocess.run(
        [sys.executable, "-m", "chefsplan_agents", "cid", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    # `ipfs add --cid-version=1` of b"hello", as a daemon prints it.
    assert proc.stdout == "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq\n"
