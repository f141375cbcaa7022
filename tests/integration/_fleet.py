"""Provider nodes as ``chefsplan node run`` OS processes, for the integration tests.

One :class:`Fleet` starts nodes (each with a fresh funded identity, its own keystore, state
folder and log) and stops them all with SIGTERM at the end, killing any that hang.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from chefsplan_agents.chain import Chain, Deployment
from chefsplan_agents.identity import Identity, save_keystore

ANVIL_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
PASSPHRASE = "integration-test-passphrase"
ETHER = 10**18
READY_TIMEOUT_S = 120


def first_line(stream: IO[str], timeout: float) -> str:
    """The first line ``stream`` prints within ``timeout`` seconds ("" if none)."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return ""


@dataclass
class NodeProcess:
    """One ``chefsplan node run`` process and what it said when ready."""

    proc: subprocess.Popen[str]
    log_path: Path
    ready: dict[str, Any]

    @property
    def address(self) -> str:
        return str(self.ready["address"])

    @property
    def did(self) -> str:
        return str(self.ready["did"])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Fleet:
    """Starts node processes against one deployment; :meth:`stop` ends them all."""

    def __init__(self, chain: Chain, deployment: Deployment, ipfs_api: str, tmp_path: Path) -> None:
        self.chain = chain
        self.deployment = deployment
        self.ipfs_api = ipfs_api
        self.tmp_path = tmp_path
        self.nodes: list[NodeProcess] = []

    def start(
        self,
        count: int,
        *,
        chain_url: str,
        model: str,
        ipfs_api: str | None = None,
        args: Sequence[str] = (),
        prefix: Sequence[str] = (),
    ) -> list[NodeProcess]:
        """Start ``count`` nodes and wait until each prints its ready line.

        Args:
            count: How many.
            chain_url: The JSON-RPC URL the nodes use.
            model: ``--model`` (``tiny``, ``stub:SECONDS``, …).
            ipfs_api: The IPFS API they use (default the fleet's).
            args: Extra ``node run`` options.
            prefix: A command to run the node under (e.g. ``ip netns exec NAME``).
        """
        env = {**os.environ, "CHEFSPLAN_KEYSTORE_PASSPHRASE": PASSPHRASE}
        started: list[tuple[subprocess.Popen[str], Path]] = []
        for _ in range(count):
            i = len(self.nodes) + len(started)
            identity = Identity.generate()
            keystore = save_keystore(
                identity, self.tmp_path / f"node{i}.json", PASSPHRASE, scrypt_n=2**4
            )
            self.chain.transfer(identity.address, 10 * ETHER)
            log_path = self.tmp_path / f"node{i}.log"
            with log_path.open("w") as log:
                proc = subprocess.Popen(
                    [*prefix, sys.executable, "-m", "chefsplan_agents", "-v", "node", "run"]
                    + ["--keystore", str(keystore), "--chain", chain_url]
                    + ["--ipfs", ipfs_api or self.ipfs_api, "--model", model]
                    + ["--contracts", json.dumps(self.deployment.addresses)]
                    + ["--state-dir", str(self.tmp_path / f"state{i}")]
                    + ["--poll-interval", "0.2", *args],
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    env=env,
                )
            started.append((proc, log_path))
        nodes = []
        for proc, log_path in started:
            assert proc.stdout is not None
            line = first_line(proc.stdout, READY_TIMEOUT_S)
            node = NodeProcess(proc, log_path, json.loads(line) if line else {})
            self.nodes.append(node)
            if not line:
                proc.kill()
                pytest.fail(f"node did not become ready:\n{node.log()[-2000:]}")
            nodes.append(node)
        return nodes

    def stop(self) -> list[int]:
        """SIGTERM every node, kill those still running after 30 s; their exit codes."""
        for node in self.nodes:
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        codes = []
        for node in self.nodes:
            try:
                codes.append(node.proc.wait(timeout=30))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                codes.append(node.proc.wait())
            if node.proc.stdout is not None:
                node.proc.stdout.close()
        return codes
