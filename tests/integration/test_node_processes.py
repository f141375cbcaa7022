"""Three provider nodes as separate OS processes, anvil and a real IPFS daemon.

The nodes are ``chefsplan node run`` processes; the requester runs in the test process. The
whole lifecycle goes through the real servers: offers and bundles on IPFS, registration, the
task, three claims, commits and reveals on anvil, settlement, the result fetched by CID.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from chefsplan_agents.chain import Chain, Deployment, deploy_contracts, open_chain
from chefsplan_agents.config import ChainSettings
from chefsplan_agents.identity import Identity, save_keystore
from chefsplan_agents.llm import SCRIPTED_OUTPUT, resolve_model
from chefsplan_agents.market import MarketClient
from chefsplan_agents.market._requester import Requester, Timeouts
from chefsplan_agents.registry import RegistryClient
from chefsplan_agents.storage import KuboStore

pytestmark = pytest.mark.integration

ANVIL_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
PASSPHRASE = "integration-test-passphrase"
ETHER = 10**18
READY_TIMEOUT_S = 120


def _first_line(stream: IO[str], timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return ""


@pytest.fixture()
def chain(rpc_url: str) -> Iterator[Chain]:
    settings = ChainSettings(backend="jsonrpc", rpc_url=rpc_url)
    with open_chain(settings, private_keys=[ANVIL_DEV_KEY]) as opened:
        yield opened


@pytest.fixture()
def deployment(chain: Chain) -> Deployment:
    return deploy_contracts(chain)


@pytest.fixture()
def node_processes(
    rpc_url: str, ipfs_api: str, chain: Chain, deployment: Deployment, tmp_path: Path
) -> Iterator[list[dict[str, Any]]]:
    resolve_model("tiny")  # build the model once, before three processes want it
    env = {**os.environ, "CHEFSPLAN_KEYSTORE_PASSPHRASE": PASSPHRASE}
    procs: list[subprocess.Popen[str]] = []
    logs: list[IO[str]] = []
    ready: list[dict[str, Any]] = []
    try:
        for i in range(3):
            identity = Identity.generate()
            keystore = save_keystore(
                identity, tmp_path / f"node{i}.json", PASSPHRASE, scrypt_n=2**4
            )
            chain.transfer(identity.address, 10 * ETHER)
            log = (tmp_path / f"node{i}.log").open("w")
            logs.append(log)
            proc = subprocess.Popen(
                [sys.executable, "-m", "chefsplan_agents", "-v", "node", "run"]
                + ["--keystore", str(keystore), "--chain", rpc_url, "--ipfs", ipfs_api]
                + ["--contracts", json.dumps(deployment.addresses), "--model", "tiny"]
                + ["--state-dir", str(tmp_path / f"state{i}"), "--threads", "1"]
                + ["--ctx", "512", "--poll-interval", "0.2", "--http-port", "0"],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
            )
            procs.append(proc)
        for i, proc in enumerate(procs):
            assert proc.stdout is not None
            line = _first_line(proc.stdout, READY_TIMEOUT_S)
            if not line:
                proc.kill()
                logged = (tmp_path / f"node{i}.log").read_text()[-2000:]
                pytest.fail(f"node {i} did not become ready:\n{logged}")
            ready.append(json.loads(line))
        yield ready
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(timeout=30))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        for proc in procs:
            if proc.stdout is not None:
                proc.stdout.close()
        for log in logs:
            log.close()
        # A clean SIGTERM shutdown exits 0.
        assert codes == [0] * len(procs), codes


def test_three_node_processes_run_a_task_end_to_end(
    chain: Chain,
    deployment: Deployment,
    ipfs_api: str,
    node_processes: list[dict[str, Any]],
) -> None:
    registry = RegistryClient(deployment.registry)
    market = MarketClient(deployment.market, from_block=deployment.deployed_at)
    for node in node_processes:
        record = registry.get_provider(node["address"])
        assert record is not None and record.active and record.did == node["did"]
        assert record.offer_cid == node["offer_cid"]
        assert node["endpoint"].startswith("http://127.0.0.1:")

    requester_id = Identity.generate()
    chain.transfer(requester_id.address, 10 * ETHER)
    with KuboStore(ipfs_api) as store:
        requester = Requester(requester_id, chain, market, store, registry=registry)
        stages: list[str] = []
        handle = requester.delegate(
            "Serve the soup",
            replicas=3,
            quorum=2,
            bounty_per_replica=10**15,
            bond=10**15,
            model=resolve_model("tiny").sha256,
            timeouts=Timeouts(claim_window=120, commit_timeout=120, reveal_window=300),
        )
        receipt = requester.wait_result(
            handle, timeout=180, on_progress=lambda p: stages.append(p.stage)
        )
        assert receipt.output == SCRIPTED_OUTPUT
        assert {r.did for r in receipt.replicas} == {n["did"] for n in node_processes}
        assert all(r.reveal_tx and r.output_hash == receipt.output_hash for r in receipt.replicas)
        assert receipt.settlement.winners == 3
        assert stages[-1] == "finalized"
        # The result is on the IPFS daemon, under the CID settled on chain.
        assert store.has(receipt.result_cid)
