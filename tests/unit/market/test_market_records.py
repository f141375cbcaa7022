"""Market records and the hashes the contract checks, computed independently of eth_abi."""

from __future__ import annotations

from dataclasses import asdict, replace

import pytest
from eth_utils.crypto import keccak

from chefsplan_agents.chain import EmbeddedChain, deploy_contracts
from chefsplan_agents.errors import ChainError, MarketError
from chefsplan_agents.market import (
    MAX_CHALLENGE_WINDOW,
    MAX_COMMIT_TIMEOUT,
    MAX_REPLICAS,
    MAX_TASK_HORIZON,
    MarketClient,
    OutputLogClient,
    TaskParams,
    check_horizons,
    make_commitment,
    new_salt,
    result_cid_hash,
    task_id_of,
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


MARKET = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def test_task_id_binds_chain_market_and_the_static_struct() -> None:
    # abi.encode(chainid, market, struct of static fields): one 32-byte word each, in order.
    fields = asdict(PARAMS)
    encoded = (
        word(1337)
        + word(bytes.fromhex(MARKET[2:]))
        + word(bytes.fromhex(PROVIDER[2:]))
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
    assert len(encoded) == 14 * 32
    assert task_id_of(PARAMS, 1337, MARKET) == keccak(encoded)
    # Another chain or another market: another task.
    assert task_id_of(PARAMS, 1, MARKET) != keccak(encoded)
    assert task_id_of(PARAMS, 1337, PROVIDER) != keccak(encoded)


def test_horizons_are_checked_as_the_contract_does() -> None:
    day = 24 * 3600
    now = PARAMS.claim_deadline - 100
    check_horizons(PARAMS, now)
    edge = replace(
        PARAMS,
        commit_timeout=MAX_COMMIT_TIMEOUT,
        reveal_deadline=now + MAX_TASK_HORIZON,
        challenge_window=MAX_CHALLENGE_WINDOW,
    )
    check_horizons(edge, now)
    cases = {
        "more than 30 days after": replace(edge, reveal_deadline=now + MAX_TASK_HORIZON + 1),
        "commit_timeout must be 1 s to 7 days": replace(edge, commit_timeout=7 * day + 1),
        "challenge_window must be at most 7 days": replace(edge, challenge_window=2**63),
        "not after the chain's time": replace(PARAMS, claim_deadline=now),
        "must come after claim deadline": replace(PARAMS, reveal_deadline=1_800_000_300),
    }
    for message, params in cases.items():
        with pytest.raises(MarketError, match=message) as info:
            check_horizons(params, now)
        assert "\n" not in str(info.value)
    year_30000 = 884_000_000_000
    with pytest.raises(MarketError, match="more than 30 days"):
        check_horizons(
            replace(PARAMS, claim_deadline=year_30000, reveal_deadline=year_30000 + 400), now
        )


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
        assert market.task_id_of(params) == market.task_id(params)
        # The Python bounds are the contract's.
        contract = deployment.market
        assert contract.call("MAX_TASK_HORIZON") == MAX_TASK_HORIZON
        assert contract.call("MAX_COMMIT_TIMEOUT") == MAX_COMMIT_TIMEOUT
        assert contract.call("MAX_CHALLENGE_WINDOW") == MAX_CHALLENGE_WINDOW
        assert contract.call("MAX_REPLICAS") == MAX_REPLICAS
        # Terms beyond them are refused before anything is sent.
        with pytest.raises(MarketError, match="challenge_window must be at most 7 days"):
            market.new_task(b"\x01" * 32, bounty_per_replica=1, bond=1, challenge_window=8 * 86400)
        with pytest.raises(MarketError, match="more than 30 days"):
            market.new_task(b"\x01" * 32, bounty_per_replica=1, bond=1, claim_window=40 * 86400)
        block = chain.block_number()
        far = replace(params, reveal_deadline=params.reveal_deadline + 31 * 86400)
        with pytest.raises(MarketError, match="more than 30 days"):
            market.post_task(far, "bafybundle")
        assert chain.block_number() == block
        assert market.new_task(b"\x01" * 32, bounty_per_replica=1, bond=1).nonce != (
            market.new_task(b"\x01" * 32, bounty_per_replica=1, bond=1).nonce
        )
        with pytest.raises(MarketError, match="replicas must be 1 to 16"):
            market.new_task(b"\x01" * 32, bounty_per_replica=1, bond=1, replicas=0)
        with pytest.raises(MarketError, match="claim_window must not be negative"):
            market.new_task(b"\x01" * 32, bounty_per_replica=1, bond=1, claim_window=-1)
        with pytest.raises(ChainError, match="bundle_hash must be 32 bytes"):
            market.new_task(b"\x01", bounty_per_replica=1, bond=1)
        with pytest.raises(MarketError, match="needs a TaskMarket"):
            MarketClient(deployment.registry)
        with pytest.raises(MarketError, match="needs an OutputLog"):
            OutputLogClient(deployment.market)
