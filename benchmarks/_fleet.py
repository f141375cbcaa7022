"""A real anvil chain and ``chefsplan node run`` OS processes, shared by the benchmarks.

Every node runs the stub model (``stub:SECONDS``: a fixed sleep per task, no CPU) and keeps its
content in one shared ``LocalCidStore`` folder (``--store-path``), so a benchmark measures the
market, the node daemon and whatever drives them, not llama.cpp or an IPFS daemon.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from chefsplan_agents.chain import Chain, Deployment
from chefsplan_agents.identity import Identity, save_keystore
from chefsplan_agents.market import MarketClient
from chefsplan_agents.market._requester import Requester
from chefsplan_agents.registry import RegistryClient

ROOT = Path(__file__).resolve().parent.parent
ANVIL = ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
ANVIL_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
PASSPHRASE = "benchmark-passphrase"
ETHER = 10**18


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def anvil_answers(url: str) -> bool:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=1) as reply:
            return bool(json.loads(reply.read()).get("result"))
    except (OSError, ValueError):
        return False


@contextmanager
def anvil() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A fresh anvil (automine) on a free port: ``(rpc_url, process)``; stopped on exit."""
    if not ANVIL.exists():
        sys.exit(f"{ANVIL.relative_to(ROOT)} is missing: run `npm install`")
    port = free_port()
    rpc_url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--chain-id", "31337"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not anvil_answers(rpc_url):
            if time.monotonic() > deadline or proc.poll() is not None:
                sys.exit("anvil did not start")
            time.sleep(0.1)
        yield rpc_url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def first_line(stream: IO[str], timeout: float) -> str:
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0] if box else ""


def node_log(work: Path, tag: str, i: int) -> Path:
    """Where node ``i`` of the fleet ``tag`` writes its log."""
    return work / f"{tag}-node{i}.log"


@contextmanager
def node_processes(
    chain: Chain,
    deployment: Deployment,
    k: int,
    *,
    seconds: float,
    rpc_url: str,
    store_path: Path,
    work: Path,
    tag: str,
) -> Iterator[list[subprocess.Popen[str]]]:
    """``k`` funded ``chefsplan node run`` processes serving ``stub:seconds`` on ``deployment``.

    Yields once every node has printed its first line (it is registered and polling); on exit
    each gets SIGTERM (then SIGKILL after 30 s). Logs: :func:`node_log`.
    """
    procs: list[subprocess.Popen[str]] = []
    logs: list[IO[str]] = []
    env = {**os.environ, "CHEFSPLAN_KEYSTORE_PASSPHRASE": PASSPHRASE}
    try:
        for i in range(k):
            identity = Identity.generate()
            keystore = save_keystore(
                identity, work / f"{tag}-node{i}.json", PASSPHRASE, scrypt_n=2**4
            )
            chain.transfer(identity.address, 10 * ETHER)
            log = node_log(work, tag, i).open("w")
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "chefsplan_agents", "node", "run"]
                    + ["--keystore", str(keystore), "--chain", rpc_url]
                    + ["--store-path", str(store_path), "--model", f"stub:{seconds}"]
                    + ["--contracts", json.dumps(deployment.addresses)]
                    + ["--state-dir", str(work / f"{tag}-state{i}")]
                    + ["--poll-interval", "0.1"],
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    env=env,
                )
            )
        for i, proc in enumerate(procs):
            assert proc.stdout is not None
            if not first_line(proc.stdout, 120):
                tail = node_log(work, tag, i).read_text()[-1500:]
                raise SystemExit(f"node {i} of {k} did not start:\n{tail}")
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        for log_file in logs:
            log_file.close()


def new_requester(chain: Chain, market: MarketClient, registry: Any, store: Any) -> Requester:
    """A requester with a new identity, funded with 100 ether."""
    identity = Identity.generate()
    chain.transfer(identity.address, 100 * ETHER)
    return Requester(identity, chain, market, store, registry=RegistryClient(registry))
