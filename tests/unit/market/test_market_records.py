"""Market records and the hashes the contract checks, computed independently of eth_abi."""

from __future__ import annotations

from dataclasses import asdict

import pytest
from eth_utils.crypto import keccak

from chefsplan_agents.chain import EmbeddedChain, deploy_contracts
from chefsplan_agents.errors import ChainError, MarketError
from chefsplan_agents.market import (
    MarketClient,
    OutputLogClient,
    TaskParams,
    make_commitment,
    new_salt,
    result_cid_hash,
)

PROVIDER = "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"


def word(value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return value.rjust(32, b"\0")
    return value.to_bytes(32, "big")


PARAMS = TaskParams(
    requester=PROVIDER,
    bundle_hash=b"\x11" * 32,
    replicas=3,
    quorum=2,
    bounty_per_replica=10**17,
    bond=5 * 10**16,
    claim_deadline=1_800_000_000,
    commit_timeout=300,
    reveal_deadline=1_800_000_900,
    challenge_window=60,
    nonce=42,
)


def test_commitment_is_keccak_of_three_words() -> None:
    out, salt = b"\xaa" * 32, b"\xbb" * 32
    expected = keccak(out + salt + word(bytes.fromhex(PROVIDER[2:])))
    assert make_commitment(out, salt, PROVIDER) == expected
    assert make_commitment("0x" + "aa" * 32, "bb" * 32, PROVIDER.lower()) == expected
    assert make_commitment(out, salt, "0x" + "00" * 20) != expected


def test_commitment_rejects_bad_input() -> None:
    with pytest.raises(ChainError, match="salt must be 32 bytes"):
        make_commitment(b"\xaa" * 32, b"short", PROVIDER)
    with pytest.raises(ChainError, match="must be an EVM address"):
        make_commitment(b"\xaa" * 32, b"\xbb" * 32, "nobody")


def test_task_id_is_keccak_of_the_static_struct() -> None:
    # abi.encode of a struct of static fields: each field one 32-byte word, in order.
    fields = asdict(PARAMS)
    encoded = (
        word(bytes.fromhex(PROVIDER[2:]))
        + word(0)  # assignee: none
        + PARAMS.bundle_hash
        + b"".join(
            word(fields[name])
            for name in (
                "replicas",
                "quorum",
                "bounty_per_replica",
                "bond",
                "claim_deadline",
                "commit_timeout",
                "reveal_deadline",
                "challenge_window",
                "nonce",
            )
        )
    )
    assert len(encoded) == 12 * 32
    assert PARAMS.task_id == keccak(encoded)


def test_params_helpers() -> None:
    assert PARAMS.escrow == 3 * 10**17
    assert PARAMS.commit_phase_end == 1_800_000_300
    raw = {
        "requester": PROVIDER.lower(),
        "assignee": "0x" + "00" * 20,
        "bundleHash": PARAMS.bundle_hash,
        "replicas": 3,
        "quorum": 2,
        "bountyPerReplica": 10**17,
        "bond": 5 * 10**16,
        "claimDeadline": 1_800_000_000,
        "commitTimeout": 300,
        "revealDeadline": 1_800_000_900,
        "challengeWindow": 60,
        "nonce": 42,
    }
    assert TaskParams.from_abi(raw) == PARAMS


def test_salts_and_cid_hashes() -> None:
    salts = {new_salt() for _ in range(20)}
    assert len(salts) == 20 and all(len(s) == 32 for s in salts)
    assert result_cid_hash("bafy") == keccak(b"bafy")


def test_new_task_terms_and_validation() -> None:
    with EmbeddedChain(accounts=1) as chain:
        deployment = deploy_contracts(chain)
        market = MarketClient(deployment.market)
        now = chain.pending_timestamp()
        params = market.new_task(
            b"\x01" * 32,
            bounty_per_replica=1,
            bond=2,
            replicas=4,
            claim_window=100,
            commit_timeout=10,
            reveal_window=50,
            nonce=7,
        )
        assert params.quorum == 3 and params.requester == chain.accounts[0]
        assert params.claim_deadline == now + 100
        assert params.reveal_deadline == now + 160 and params.nonce == 7
        assert market.task_id_of(params) == params.task_id
        assert market.new_task(b"\x01" * 32, bounty_per_replica=1, bond=1).nonce != (
            market.new_task(b"\x01" * 32, bounty_per_replica=1, bond=1).nonce
        )
        with pytest.raises(MarketError, match="replicas must be at least 1"):
            market.new_task(b"\x01" * 32, bounty_per_replica=1, bond=1, replicas=0)
        with pytest.raises(MarketError, match="claim_window must not be negative"):
            market.new_task(b"\x01" * 32, bounty_per_replica=1, bond=1, claim_window=-1)
        with pytest.raises(ChainError, match="bundle_hash must be 32 bytes"):
            market.new_task(b"\x01", bounty_per_replica=1, bond=1)
        with pytest.raises(MarketError, match="needs a TaskMarket"):
            MarketClient(deployment.registry)
        with pytest.raises(MarketError, match="needs an OutputLog"):
            OutputLogClient(deployment.market)
