"""The network commands as a user runs them: real processes against anvil, an IPFS daemon and
``chefsplan node run`` nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _fleet import ETHER, PASSPHRASE, Fleet

from chefsplan_agents.chain import Chain, Deployment
from chefsplan_agents.identity import Identity, save_keystore

pytestmark = pytest.mark.integration


def _chefsplan(env: dict[str, str], cwd: Path, *argv: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "chefsplan_agents", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def test_registry_task_and_verify_against_real_servers(
    pinned_tools: None,
    chain: Chain,
    deployment: Deployment,
    fleet: Fleet,
    rpc_url: str,
    ipfs_api: str,
    tmp_path: Path,
) -> None:
    nodes = fleet.start(2, chain_url=rpc_url, model="tiny")
    requester = Identity.generate()
    chain.transfer(requester.address, 10 * ETHER)
    keystore = save_keystore(requester, tmp_path / "requester.json", PASSPHRASE, scrypt_n=2**4)
    config = tmp_path / "chefsplan.toml"
    contracts = ", ".join(f'{k} = "{v}"' for k, v in deployment.addresses.items())
    config.write_text(
        f'keystore = "{keystore}"\n'
        "[profiles.local.chain]\n"
        f'backend = "jsonrpc"\nrpc_url = "{rpc_url}"\ncontracts = {{ {contracts} }}\n'
        "[profiles.local.storage]\n"
        f'backend = "kubo"\nipfs_api = "{ipfs_api}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHEFSPLAN_")}
    env.update(CHEFSPLAN_KEYSTORE_PASSPHRASE=PASSPHRASE, XDG_DATA_HOME=str(tmp_path / "data"))
    common = ("--config", str(config), "--profile", "local")

    listed = _chefsplan(env, tmp_path, *common, "registry", "ls", "--json")
    by_address = {p["address"]: p for p in listed["providers"]}
    assert {n.address for n in nodes} <= set(by_address)
    assert all(by_address[n.address]["offer_status"] == "valid" for n in nodes)
    sha = by_address[nodes[0].address]["model_sha256"]

    receipt = _chefsplan(
        env, tmp_path, *common, "task", "post", "Say hi", "--model", sha, "--replicas", "2",
        "--max-tokens", "16", "--watch", "--timeout", "240", "--json",
    )  # fmt: skip
    assert receipt["output"] == "CHEFSPLAN OK" and receipt["winners"] == 2

    shown = _chefsplan(env, tmp_path, *common, "task", "show", receipt["task_id"], "--json")
    assert shown["status"] == "finalized" and shown["result_cid"] == receipt["result_cid"]

    verdict = _chefsplan(
        env, tmp_path, *common, "verify", receipt["result_cid"], "--task", receipt["bundle_cid"],
        "--model", "tiny", "--json",
    )  # fmt: skip
    assert verdict["passed"] is True
