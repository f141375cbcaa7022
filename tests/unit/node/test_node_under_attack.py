"""One node on a devnet takes every attack in turn, then serves an honest task, bonds intact."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from _raw_http import exchange, request

from chefsplan_agents.bundles import (
    GenerationParams,
    ModelRequirement,
    TaskBundle,
    encode_bundle,
    sign_bundle,
)
from chefsplan_agents.devnet import Devnet
from chefsplan_agents.errors import TxReverted
from chefsplan_agents.identity import Identity
from chefsplan_agents.llm import SCRIPTED_OUTPUT
from chefsplan_agents.market import TaskParams
from chefsplan_agents.node import NodeHttpClient, NodePolicy, TaskStage
from chefsplan_agents.node._signing import HEADER_DID, sign_request

BOUNTY = 10**15
BOND = 2 * 10**15


def _task(net: Devnet, prompt: str) -> TaskBundle:
    requester = net.requester.identity
    task = TaskBundle(
        kind="chat",
        messages=({"role": "user", "content": prompt},),  # type: ignore[arg-type]
        params=GenerationParams(max_tokens=32),
        model=ModelRequirement(sha256=net.model_sha256),
        requester_did=requester.did,
    )
    return sign_bundle(task, requester)


def _bundle(net: Devnet, prompt: str) -> bytes:
    return encode_bundle(_task(net, prompt))


def _post(net: Devnet, data: bytes, **terms: Any) -> TaskParams:
    values: dict[str, Any] = {"bounty_per_replica": BOUNTY, "bond": BOND, "replicas": 1}
    values.update(terms)
    params = net.market.new_task(
        hashlib.sha256(data).digest(), requester=net.requester.address, **values
    )
    net.market.post_task(params, net.store.put(data))
    return params


def _http_garbage(net: Devnet, address: tuple[str, int]) -> list[bytes]:
    node_did = net.nodes[0].did
    stranger = Identity.generate()
    body = _bundle(net, "free lunch")
    signed = sign_request(
        stranger, method="POST", path="/start_job", query="", body=body, audience_did=node_did
    ).as_headers()
    deep = b"[" * 100_000 + b"]" * 100_000
    allowed = sign_request(
        net.requester.identity,
        method="POST",
        path="/start_job",
        query="",
        body=deep,
        audience_did=node_did,
    ).as_headers()
    return [
        request("GET", "/availability", raw_headers="Content-Length: ²\r\n".encode("latin-1")),
        request("GET", "/availability", {HEADER_DID: "did:key:z" + "1" * 60_000}),
        request("POST", "/start_job", {**signed, "Content-Length": str(len(body))}, body),
        request("POST", "/start_job", {**allowed, "Content-Length": str(len(deep))}, deep),
        b"GET /availability\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"POST /start_job HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ]


def test_a_node_survives_every_attack_then_serves_an_honest_task(tmp_path: Path) -> None:
    policy = NodePolicy(max_tokens=64, max_deadline_horizon_s=2 * 3600, max_challenge_window_s=3600)
    with Devnet.create(
        nodes=1, model="tiny", n_threads=1, n_ctx=256, policy=policy, workdir=tmp_path
    ) as net:
        node = net.nodes[0]
        requester = net.requester
        server = node.serve_http(allowed_requesters=[requester.identity.did])
        withdrawn_before = node.withdrawn_wei
        owed_before = net.market.balance_of(requester.address)
        reputation_before = net.registry.reputation(node.address)

        honest = _bundle(net, "What is on the menu?")
        attacks = {
            "deep JSON bundle": _post(net, b"[" * 200_000 + b"]" * 200_000),
            "short window, large bond, 1 wei": _post(
                net, honest, bounty_per_replica=1, bond=10**18, commit_timeout=1
            ),
            "short commit and claim windows": _post(
                net, _bundle(net, "quick"), commit_timeout=1, claim_window=10
            ),
            "claim deadline far ahead": _post(net, _bundle(net, "later"), claim_window=3 * 3600),
            "long challenge window": _post(
                net, _bundle(net, "challenge"), challenge_window=2 * 3600
            ),
        }
        for data in _http_garbage(net, server.address):
            answer = exchange(server.address, data)
            assert answer.status is not None and 400 <= answer.status < 500, data[:80]
        for _ in range(3):
            node.tick()

        for what, params in attacks.items():
            record = node.task(net.market.task_id(params))
            assert record is not None and record.stage is TaskStage.REFUSED, what
            assert net.market.events("ReplicaClaimed", task_id=net.market.task_id(params)) == [], (
                what
            )
        # The requester waits out every window and tries to take a bond: there is none.
        net.chain.advance_time(120)
        for params in attacks.values():
            try:
                net.market.reopen(params, node.address, sender=requester.address)
            except TxReverted:
                pass
            else:
                raise AssertionError("a replica of the node was reopened")

        receipt = net.run_task("Honest work", bounty_per_replica=BOUNTY, bond=BOND)
        assert receipt.output == SCRIPTED_OUTPUT
        assert [r.address for r in receipt.replicas] == [node.address]
        client = NodeHttpClient(server.url, requester.identity, node.did, timeout_s=30)
        job = client.wait(client.start_job(_task(net, "And a direct job")).job_id, 60)
        assert job.result is not None and job.result.output == SCRIPTED_OUTPUT

        # No bond lost: paid the honest bounty with its bond back, nothing credited to the
        # requester, never slashed.
        assert node.withdrawn_wei - withdrawn_before == BOUNTY + BOND
        assert net.market.balance_of(node.address) == 0
        assert net.market.balance_of(requester.address) == owed_before
        reputation = net.registry.reputation(node.address)
        assert reputation.slashed == reputation_before.slashed
        assert reputation.won == reputation_before.won + 1
        assert net.market.events("ReplicaReopened") == []
