"""The one-call devnet and ``chefsplan devnet``."""

from __future__ import annotations

import hashlib
import json

import pytest

from chefsplan_agents.bundles import GenerationParams, decode_result_bundle
from chefsplan_agents.cli import run
from chefsplan_agents.devnet import Devnet
from chefsplan_agents.errors import ConfigError, InvalidOfferTags
from chefsplan_agents.llm import SCRIPTED_OUTPUT

EXPECTED_HASH = "0x" + hashlib.sha256(SCRIPTED_OUTPUT.encode()).hexdigest()


def test_cli_devnet_json_prints_one_verified_receipt(capsys: pytest.CaptureFixture[str]) -> None:
    code = run(
        ["devnet", "--nodes", "3", "--model", "tiny", "--replicas", "3", "--quorum", "2"]
        + ["--task", "What is for dinner?", "--max-tokens", "16", "--json"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = [line for line in captured.out.splitlines() if line.strip()]
    assert len(lines) == 1
    receipt = json.loads(lines[0])
    for key in (
        "bundle_cid",
        "result_cid",
        "output",
        "output_hash",
        "task_id",
        "replicas",
        "finalize_tx",
        "gas_used",
    ):
        assert key in receipt
    assert receipt["output"] == SCRIPTED_OUTPUT
    assert receipt["output_hash"] == EXPECTED_HASH
    assert receipt["bundle_cid"].startswith("baf") and receipt["result_cid"].startswith("baf")
    assert receipt["gas_used"] > 0
    assert len(receipt["replicas"]) == 3
    for replica in receipt["replicas"]:
        assert set(replica) == {
            "did",
            "address",
            "output_hash",
            "claim_tx",
            "commit_tx",
            "reveal_tx",
        }
        assert replica["did"].startswith("did:key:z6Mk")
        assert replica["output_hash"] == EXPECTED_HASH
        assert all(replica[k].startswith("0x") for k in ("claim_tx", "commit_tx", "reveal_tx"))
    assert len({r["address"] for r in receipt["replicas"]}) == 3
    assert receipt["finalize_tx"] in {r["reveal_tx"] for r in receipt["replicas"]}


def test_cli_devnet_assign_settles_in_the_nodes_one_transaction(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = run(["devnet", "--nodes", "2", "--task", "Yours", "--max-tokens", "16", "--assign"])
    code = code or run(
        ["devnet", "--nodes", "2", "--task", "Yours", "--max-tokens", "16", "--assign", "--json"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "assigning to node 0x" in captured.err
    receipt = json.loads(captured.out.strip().splitlines()[-1])
    [replica] = receipt["replicas"]
    assert receipt["output"] == SCRIPTED_OUTPUT
    assert replica["claim_tx"] == replica["reveal_tx"] == receipt["finalize_tx"]


def test_cli_devnet_table_and_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["devnet", "--nodes", "1", "--task", "hi", "--max-tokens", "16"]) == 0
    captured = capsys.readouterr()
    assert SCRIPTED_OUTPUT in captured.out
    assert "result_cid" in captured.out
    for stage in ("model", "register", "post", "finalized"):
        assert stage in captured.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replicas", "2", "--quorum", "3"], "--quorum 3 is more than --replicas 2"),
        (["--replicas", "4", "--quorum", "2"], "is not a majority"),
        (["--nodes", "2", "--replicas", "3"], "needs at least 3 nodes"),
        (["--model", "gpt-4"], "unknown --model 'gpt-4'"),
        (["--nodes", "0"], "--nodes must be at least 1"),
        (["--max-tokens", "0"], "--max-tokens must be at least 1"),
        (["--assign", "--replicas", "3"], "--assign gives the task to one node; drop --replicas 3"),
    ],
)
def test_cli_devnet_bad_flags_are_one_line_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["devnet", "--nodes", "4", "--task", "x"]
    assert run(base + args) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert captured.out == ""


def test_devnet_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="1 to 16 nodes"):
        Devnet.create(nodes=0)
    with pytest.raises(ConfigError, match="unknown devnet model"):
        Devnet.create(nodes=1, model="llama-70b")


def test_node_tags_are_one_mapping_or_one_per_node() -> None:
    with pytest.raises(ConfigError, match="lists 1 tag sets for 2 nodes"):
        Devnet.create(nodes=2, model="stub:0", node_tags=[{"jurisdiction": "EU"}])
    with pytest.raises(InvalidOfferTags, match="tag key"):
        Devnet.create(nodes=1, model="stub:0", node_tags={"Bad": "x"})
    with Devnet.create(nodes=2, model="stub:0", node_tags={"jurisdiction": "EU"}) as net:
        assert [n.tags for n in net.nodes] == [{"jurisdiction": "EU"}] * 2
        found = net.network.providers(tags={"jurisdiction": "EU"})
        assert {p.address for p in found} == {n.address for n in net.nodes}


def test_devnet_nodes_run_at_their_own_thread_counts() -> None:
    with pytest.raises(ConfigError, match="lists 2 thread counts for 3 nodes"):
        Devnet.create(nodes=3, model="tiny", n_threads=[1, 2])
    with Devnet.create(
        nodes=3, model="tiny", share_model=True, n_threads=[1, 2, 1], n_ctx=256
    ) as net:
        assert [n.llm.info.n_threads for n in net.nodes] == [1, 2, 1]
        # A shared model is loaded once per thread count.
        assert net.nodes[0].llm is net.nodes[2].llm and net.nodes[1].llm is not net.nodes[0].llm
        receipt = net.run_task(
            "Threads", replicas=3, quorum=3, params=GenerationParams(max_tokens=16)
        )
        assert receipt.settlement.winners == 3  # the scripted model agrees across thread counts


def test_devnet_with_local_store_and_shared_model() -> None:
    with Devnet.create(nodes=2, model="tiny", store="local", share_model=True, n_ctx=256) as net:
        workdir = net.workdir
        assert (workdir / "blocks").is_dir()
        assert net.nodes[0].llm is net.nodes[1].llm
        receipt = net.run_task(
            "Share", replicas=2, quorum=2, params=GenerationParams(max_tokens=16)
        )
        result = decode_result_bundle(net.store.get(receipt.result_cid))
        assert result.output == receipt.output == SCRIPTED_OUTPUT
        assert receipt.settlement.winners == 2
    assert not workdir.exists()


def test_devnet_cheater_node_is_outvoted_and_slashed() -> None:
    from chefsplan_agents.testing import Lazy

    with pytest.raises(ConfigError, match="cheater indexes must be 0 to 2"):
        Devnet.create(nodes=3, model="tiny", share_model=True, cheaters={3: Lazy()})
    with Devnet.create(
        nodes=3, model="tiny", share_model=True, n_threads=1, cheaters={0: Lazy(n_tokens=4)}
    ) as net:
        cheater, honest = net.nodes[0], net.nodes[1:]
        assert cheater.cheat is not None and all(n.cheat is None for n in honest)
        receipt = net.run_task(
            "Dinner?", replicas=3, quorum=2, params=GenerationParams(max_tokens=16)
        )
        assert receipt.output == SCRIPTED_OUTPUT
        votes = {r.address: r.output_hash for r in receipt.replicas}
        assert votes[cheater.address] not in (None, receipt.output_hash)  # it did reveal
        assert net.registry.reputation(cheater.address).lost == 1
        assert all(net.registry.reputation(n.address).won == 1 for n in honest)
        # Its bond went to the requester with the unearned bounty.
        bond = net.market.get_task(receipt.task_id).params.bond  # type: ignore[union-attr]
        assert receipt.settlement.refund >= bond > 0
