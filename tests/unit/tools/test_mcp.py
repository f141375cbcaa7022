"""``chefsplan mcp``: a real MCP client drives the tools on a devnet served over stdio."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

mcp = pytest.importorskip("mcp")

from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402

from chefsplan_agents.llm import SCRIPTED_OUTPUT  # noqa: E402
from chefsplan_agents.tools import TOOL_NAMES  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]


def _server(*args: str) -> StdioServerParameters:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return StdioServerParameters(
        command=sys.executable, args=["-m", "chefsplan_agents", "mcp", *args], env=env, cwd=ROOT
    )


async def _session_run(log: Path) -> dict[str, Any]:
    seen: dict[str, Any] = {"progress": []}

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen["progress"].append((value, message))

    with log.open("w") as errlog:
        async with (
            stdio_client(_server("--devnet", "3", "--model", "tiny"), errlog=errlog) as (r, w),
            ClientSession(r, w) as session,
        ):
            await session.initialize()
            seen["tools"] = (await session.list_tools()).tools
            seen["find"] = await session.call_tool("find_providers", {"limit": 5})
            seen["delegate"] = await session.call_tool(
                "delegate_task",
                {"prompt": "Plan dinner", "max_tokens": 8, "trust": "low"},
                progress_callback=progress,
            )
            seen["bad"] = await session.call_tool(
                "delegate_task", {"prompt": "Plan dinner", "max_tokens": "lots"}
            )
            seen["unknown_arg"] = await session.call_tool("find_providers", {"colour": "red"})
            seen["refused"] = await session.call_tool("find_providers", {"limit": 500})
            seen["nonexistent"] = await session.call_tool("bake_bread", {})
            seen["get"] = await session.call_tool(
                "get_result", {"task_id": seen["delegate"].structuredContent["task_id"]}
            )
    return seen


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    log = tmp_path_factory.mktemp("mcp") / "server.log"
    try:
        return asyncio.run(asyncio.wait_for(_session_run(log), timeout=240))
    except BaseException:
        sys.stderr.write(log.read_text())
        raise


def _text(result: Any) -> str:
    assert len(result.content) == 1 and result.content[0].type == "text"
    return str(result.content[0].text)


def test_lists_every_tool_with_its_argument_schema(served: dict[str, Any]) -> None:
    tools = {t.name: t for t in served["tools"]}
    assert tuple(tools) == TOOL_NAMES
    schema = tools["delegate_task"].inputSchema
    assert schema["additionalProperties"] is False
    assert {"prompt", "messages", "max_tokens", "trust"} <= set(schema["properties"])
    assert "Most new tokens" in schema["properties"]["max_tokens"]["description"]
    assert tools["get_result"].inputSchema["required"] == ["task_id"]
    assert tools["find_providers"].description.startswith("Find provider nodes")


def test_find_providers_lists_the_devnet_nodes(served: dict[str, Any]) -> None:
    found = served["find"]
    assert found.isError is False
    assert len(found.structuredContent["providers"]) == 3
    assert _text(found).startswith("3 providers, best first:")


def test_delegate_task_returns_a_settled_receipt_with_progress(served: dict[str, Any]) -> None:
    result = served["delegate"]
    assert result.isError is False
    receipt = result.structuredContent
    assert receipt["output"] == SCRIPTED_OUTPUT[: len(receipt["output"])] and receipt["output"]
    assert receipt["result_cid"] in _text(result) and receipt["task_id"] in _text(result)
    assert receipt["trust"] == "low" and receipt["agreed"] == 1
    progress = served["progress"]
    values = [v for v, _ in progress]
    messages = [m for _, m in progress]
    assert values == sorted(values) and len(set(values)) == len(values)
    assert messages[0] == "delegate_task started"
    assert messages[-1] == "delegate_task done"
    assert any("settled; fetching" in m for m in messages[1:-1])
    # The same task, fetched by id, is the same result.
    fetched = served["get"]
    assert fetched.isError is False
    assert fetched.structuredContent["result_cid"] == receipt["result_cid"]


def test_bad_arguments_are_tool_errors_with_one_line(served: dict[str, Any]) -> None:
    bad = served["bad"]
    assert bad.isError is True
    line = _text(bad)
    assert line.startswith("delegate_task failed (InvalidArguments): argument 'max_tokens'")
    assert "\n" not in line
    assert bad.structuredContent["error"] == "InvalidArguments"
    assert served["unknown_arg"].isError is True and "colour" in _text(served["unknown_arg"])
    refused = served["refused"]
    assert refused.isError is True
    assert _text(refused) == "find_providers failed (ToolError): limit must be 1 to 50 (got 500)"
    assert served["nonexistent"].isError is True
    assert "unknown tool 'bake_bread'" in _text(served["nonexistent"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--devnet", "40"], "--devnet must be 0 (no devnet) to 16 nodes (got 40)"),
        (["--devnet", "1", "--model", "gpt-9"], "unknown --model 'gpt-9'"),
        (["--tools", "find_providers,bake"], "unknown tool 'bake' in --tools"),
    ],
)
def test_bad_flags_are_one_line_errors(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from chefsplan_agents.cli import run

    assert run(["mcp", *flags]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and message in captured.err
    assert captured.err.count("\n") == 1
