"""TaskMarket smoke tests on the in-process EVM (full revert suite: the market client tests)."""

from __future__ import annotations

from typing import Any

from web3 import Web3
from web3.logs import DISCARD

BOUNTY = 10**18 // 100  # as in conftest
BOND = 10**18 // 200
OUTPUT = Web3.keccak(text="the answer is 42")
OTHER = Web3.keccak(text="the answer is 41")
CID = "bafkreidon73zkcrwdb5iafqtijxildoonbwnpv7dyd6ef3qdgads2jc4su"
CID_HASH = Web3.keccak(text=CID)


def salt(provider: str) -> bytes:
    return Web3.keccak(text=f"salt for {provider}")


def commitment(chain: Any, output: bytes, provider: str) -> bytes:
    value = bytes(chain.market.functions.commitmentOf(output, salt(provider), provider).call())
    # The documented formula: keccak256(abi.encode(outputHash, salt, provider)).
    encoded = output + salt(provider) + bytes(12) + bytes.fromhex(provider[2:])
    assert value == Web3.keccak(encoded)
    return value


def test_post_task_escrows_bounty_and_id_is_hash_of_params(fresh: Any, reverts: Any) -> None:
    p = fresh.params(replicas=3, quorum=2)
    task_id = fresh.post(p)
    assert task_id == bytes(fresh.market.functions.taskIdOf(p).call())
    assert fresh.w3.eth.get_balance(fresh.market.address) == 3 * BOUNTY
    state = fresh.market.functions.taskState(task_id).call()
    assert state[0] == 1  # TASK_OPEN
    with reverts(fresh.market, "TaskExists"):
        fresh.market.functions.postTask(p, "bafybundle").transact(
            {"from": fresh.requester, "value": 3 * BOUNTY}
        )


def test_one_replica_fast_path_pays_provider_in_the_reveal(fresh: Any, reverts: Any) -> None:
    provider = fresh.providers[0]
    p = fresh.params()
    task_id = fresh.post(p)
    fn = fresh.market.functions
    fresh.send(fn.claim(p, commitment(fresh, OUTPUT, provider)), provider, value=BOND)
    before = fresh.w3.eth.get_balance(provider)
    receipt = fresh.send(
        fn.revealAndFinalize(p, OUTPUT, CID, salt(provider), [(provider, OUTPUT, CID_HASH)], ""),
        provider,
    )
    fee = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert fresh.w3.eth.get_balance(provider) == before - fee + BOUNTY + BOND
    (done,) = fresh.market.events.TaskFinalized().process_receipt(receipt, errors=DISCARD)
    assert bytes(done["args"]["taskId"]) == task_id
    assert bytes(done["args"]["outputHash"]) == OUTPUT
    assert done["args"]["resultCid"] == CID
    assert done["args"]["result"] == 1  # RESULT_ACCEPTED
    assert fresh.w3.eth.get_balance(fresh.market.address) == 0
    assert fresh.registry.functions.getProvider(provider).call()[1] == 1  # won
    # Settled tasks are gone: nothing can be claimed or finalized again.
    with reverts(fresh.market, "UnknownTask"):
        fn.finalize(p, [], "").transact({"from": fresh.outsider})


def test_one_replica_settles_from_its_claim_without_a_commitment(fresh: Any, reverts: Any) -> None:
    provider = fresh.providers[0]
    p = fresh.params()
    task_id = fresh.post(p)
    fn = fresh.market.functions
    fresh.send(fn.claim(p, b"\0" * 32), provider, value=BOND)
    before = fresh.w3.eth.get_balance(provider)
    # The only replica is the last to commit: it reveals from its claim; the salt is unused.
    unused_salt = Web3.keccak(text="never committed")
    receipt = fresh.send(
        fn.revealAndFinalize(p, OUTPUT, CID, unused_salt, [(provider, OUTPUT, CID_HASH)], ""),
        provider,
    )
    assert fresh.market.events.ResultCommitted().process_receipt(receipt, errors=DISCARD) == ()
    (done,) = fresh.market.events.TaskFinalized().process_receipt(receipt, errors=DISCARD)
    assert bytes(done["args"]["taskId"]) == task_id and done["args"]["result"] == 1
    fee = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert fresh.w3.eth.get_balance(provider) == before - fee + BOUNTY + BOND
    assert fresh.w3.eth.get_balance(fresh.market.address) == 0


def test_only_the_last_uncommitted_replica_reveals_from_its_claim(fresh: Any, reverts: Any) -> None:
    a, b, c = fresh.providers[:3]
    p = fresh.params(replicas=3, quorum=2)
    task_id = fresh.post(p)
    fn = fresh.market.functions
    fresh.send(fn.claim(p, commitment(fresh, OUTPUT, a)), a, value=BOND)
    fresh.send(fn.claim(p, b"\0" * 32), b, value=BOND)
    fresh.send(fn.claim(p, b"\0" * 32), c, value=BOND)
    # Two slots uncommitted: a reveal from c's claim could still be copied by b.
    with reverts(fresh.market, "WrongReplicaState"):
        fn.reveal(p, OUTPUT, CID, salt(c)).transact({"from": c})
    fresh.send(fn.commit(p, commitment(fresh, OUTPUT, b)), b)
    receipt = fresh.send(fn.reveal(p, OUTPUT, CID, salt(c)), c)
    assert fresh.market.events.ResultCommitted().process_receipt(receipt, errors=DISCARD) == ()
    state = fn.taskState(task_id).call()
    assert (state[2], state[3]) == (3, 1)  # committed, revealed
    assert fn.replicaOf(task_id, c).call()[0] == 3  # REVEALED
    # Every slot counts as committed: the others' reveals are open, and still checked.
    with reverts(fresh.market, "CommitmentMismatch"):
        fn.reveal(p, OUTPUT, CID, salt(c)).transact({"from": a})
    fresh.send(fn.reveal(p, OUTPUT, CID, salt(a)), a)


def test_three_replicas_majority_wins_outlier_slashed(fresh: Any, reverts: Any) -> None:
    a, b, c = fresh.providers[:3]
    p = fresh.params(replicas=3, quorum=2, window=60)
    fresh.post(p)
    fn = fresh.market.functions
    outputs = {a: OUTPUT, b: OTHER, c: OUTPUT}
    for who in (a, b, c):
        fresh.send(fn.claim(p, commitment(fresh, outputs[who], who)), who, value=BOND)
    for who in (a, b, c):
        fresh.send(fn.reveal(p, outputs[who], CID, salt(who)), who)
    reveals = [(who, outputs[who], CID_HASH) for who in (a, b, c)]
    with reverts(fresh.market, "TooEarly"):
        fn.finalize(p, reveals, CID).transact({"from": fresh.outsider})
    fresh.travel(fn.settleTime(p).call())
    receipt = fresh.send(fn.finalize(p, reveals, CID), fresh.outsider)
    (done,) = fresh.market.events.TaskFinalized().process_receipt(receipt, errors=DISCARD)
    assert done["args"]["winners"] == 2
    # The outlier's bond and the unearned bounty go back to the requester.
    assert done["args"]["refund"] == BOUNTY + BOND
    assert fn.balanceOf(a).call() == BOUNTY + BOND
    assert fn.balanceOf(c).call() == BOUNTY + BOND
    assert fn.balanceOf(b).call() == 0
    assert fn.balanceOf(fresh.requester).call() == BOUNTY + BOND
    assert fresh.registry.functions.getProvider(b).call()[2:4] == (1, 1)  # lost, slashed
    withdrawn = fresh.send(fn.withdraw(), a)
    (w,) = fresh.market.events.Withdrawn().process_receipt(withdrawn, errors=DISCARD)
    assert w["args"]["amount"] == BOUNTY + BOND
    assert fn.balanceOf(a).call() == 0
    with reverts(fresh.market, "NothingToWithdraw"):
        fn.withdraw().transact({"from": a})


def test_reveal_that_does_not_match_commit_reverts(fresh: Any, reverts: Any) -> None:
    provider = fresh.providers[0]
    p = fresh.params()
    fresh.post(p)
    fn = fresh.market.functions
    fresh.send(fn.claim(p, commitment(fresh, OUTPUT, provider)), provider, value=BOND)
    with reverts(fresh.market, "CommitmentMismatch"):
        fn.reveal(p, OTHER, CID, salt(provider)).transact({"from": provider})
    with reverts(fresh.market, "CommitmentMismatch"):
        fn.reveal(p, OUTPUT, CID, Web3.keccak(text="wrong salt")).transact({"from": provider})
    fresh.send(fn.reveal(p, OUTPUT, CID, salt(provider)), provider)


def test_no_reveal_while_another_replica_can_still_commit(fresh: Any, reverts: Any) -> None:
    a, b = fresh.providers[:2]
    p = fresh.params(replicas=2, quorum=2)
    fresh.post(p)
    fn = fresh.market.functions
    fresh.send(fn.claim(p, commitment(fresh, OUTPUT, a)), a, value=BOND)
    with reverts(fresh.market, "RevealNotOpen"):
        fn.reveal(p, OUTPUT, CID, salt(a)).transact({"from": a})
    fresh.send(fn.claim(p, b"\0" * 32), b, value=BOND)
    fresh.send(fn.commit(p, commitment(fresh, OUTPUT, b)), b)
    fresh.send(fn.reveal(p, OUTPUT, CID, salt(a)), a)


def test_missed_commit_deadline_is_reopened_and_slashed(fresh: Any, reverts: Any) -> None:
    a, b = fresh.providers[:2]
    p = fresh.params()
    fresh.post(p)
    fn = fresh.market.functions
    fresh.send(fn.claim(p, b"\0" * 32), a, value=BOND)
    with reverts(fresh.market, "TaskFull"):
        fn.claim(p, b"\0" * 32).transact({"from": b, "value": BOND})
    with reverts(fresh.market, "CommitDeadlineNotPassed"):
        fn.reopen(p, a).transact({"from": fresh.outsider})
    fresh.travel(fresh.now() + 301)
    fresh.send(fn.reopen(p, a), fresh.outsider)
    assert fn.balanceOf(fresh.requester).call() == BOND
    assert fresh.registry.functions.getProvider(a).call()[3] == 1  # slashed
    with reverts(fresh.market, "AlreadyClaimed"):
        fn.claim(p, b"\0" * 32).transact({"from": a, "value": BOND})
    fresh.send(fn.claim(p, commitment(fresh, OUTPUT, b)), b, value=BOND)


def test_cancel_before_any_claim_refunds(fresh: Any, reverts: Any) -> None:
    p = fresh.params(replicas=2, quorum=2)
    fresh.post(p)
    fn = fresh.market.functions
    with reverts(fresh.market, "NotRequester"):
        fn.cancel(p).transact({"from": fresh.outsider})
    fresh.send(fn.cancel(p), fresh.requester)
    assert fn.balanceOf(fresh.requester).call() == 2 * BOUNTY


def test_claim_needs_an_active_registered_provider(fresh: Any, reverts: Any) -> None:
    p = fresh.params()
    fresh.post(p)
    with reverts(fresh.market, "NotActiveProvider"):
        fresh.market.functions.claim(p, b"\0" * 32).transact(
            {"from": fresh.outsider, "value": BOND}
        )


def test_no_quorum_refunds_bounty_and_returns_revealed_bonds(fresh: Any, reverts: Any) -> None:
    a, b, c = fresh.providers[:3]
    p = fresh.params(replicas=3, quorum=2)
    fresh.post(p)
    fn = fresh.market.functions
    outputs = {a: OUTPUT, b: OTHER}
    for who in (a, b):
        fresh.send(fn.claim(p, commitment(fresh, outputs[who], who)), who, value=BOND)
    fresh.send(fn.claim(p, b"\0" * 32), c, value=BOND)  # never commits
    fresh.travel(fresh.now() + 901)  # commit phase over: reveals open without c
    for who in (a, b):
        fresh.send(fn.reveal(p, outputs[who], CID, salt(who)), who)
    fresh.travel(fn.settleTime(p).call())
    reveals = [(a, OUTPUT, CID_HASH), (b, OTHER, CID_HASH), (c, b"\0" * 32, b"\0" * 32)]
    with reverts(fresh.market, "BadRevealList"):
        fn.finalize(p, reveals[:2], "").transact({"from": fresh.outsider})
    receipt = fresh.send(fn.finalize(p, reveals, ""), fresh.outsider)
    (done,) = fresh.market.events.TaskFinalized().process_receipt(receipt, errors=DISCARD)
    assert done["args"]["result"] == 2  # RESULT_NO_QUORUM
    assert bytes(done["args"]["outputHash"]) == b"\0" * 32
    assert fn.balanceOf(a).call() == BOND
    assert fn.balanceOf(b).call() == BOND
    assert fn.balanceOf(c).call() == 0
    assert fn.balanceOf(fresh.requester).call() == 3 * BOUNTY + BOND


def test_reveal_cannot_settle_before_the_challenge_window(fresh: Any, reverts: Any) -> None:
    a = fresh.providers[0]
    p = fresh.params(window=60)
    fresh.post(p)
    fn = fresh.market.functions
    fresh.send(fn.claim(p, commitment(fresh, OUTPUT, a)), a, value=BOND)
    with reverts(fresh.market, "TooEarly"):
        fn.revealAndFinalize(p, OUTPUT, CID, salt(a), [(a, OUTPUT, CID_HASH)], "").transact(
            {"from": a}
        )
    fresh.send(fn.reveal(p, OUTPUT, CID, salt(a)), a)
    assert fn.taskState(fresh.market.functions.taskIdOf(p).call()).call()[3] == 1  # revealed


def test_unclaimed_task_refunds_after_reveal_deadline(fresh: Any, reverts: Any) -> None:
    p = fresh.params(replicas=3, quorum=2)
    fresh.post(p)
    fn = fresh.market.functions
    with reverts(fresh.market, "TooEarly"):
        fn.finalize(p, [], "").transact({"from": fresh.outsider})
    fresh.travel(fn.settleTime(p).call())
    receipt = fresh.send(fn.finalize(p, [], ""), fresh.outsider)
    (done,) = fresh.market.events.TaskFinalized().process_receipt(receipt, errors=DISCARD)
    assert done["args"]["refund"] == 3 * BOUNTY
    assert fn.balanceOf(fresh.requester).call() == 3 * BOUNTY


DAY = 24 * 3600


def post_reverts(fresh: Any, reverts: Any, p: tuple[Any, ...], error: str, *args: Any) -> None:
    with reverts(fresh.market, error, *args):
        fresh.market.functions.postTask(p, "bafybundle").transact(
            {"from": fresh.requester, "value": p[5] * p[3]}
        )


def test_post_task_caps_every_horizon(fresh: Any, reverts: Any) -> None:
    fn = fresh.market.functions
    assert fn.MAX_TASK_HORIZON().call() == 30 * DAY
    assert fn.MAX_COMMIT_TIMEOUT().call() == 7 * DAY
    assert fn.MAX_CHALLENGE_WINDOW().call() == 7 * DAY
    now = fresh.now()
    # A claim deadline in the year 30000 would lock every claimant's bond for ever.
    year_30000 = 884_000_000_000
    far = fresh.params(claimDeadline=year_30000, revealDeadline=year_30000 + 1000)
    post_reverts(fresh, reverts, far, "DeadlineTooFar")
    late_reveal = fresh.params(revealDeadline=now + 31 * DAY)
    post_reverts(fresh, reverts, late_reveal, "DeadlineTooFar")
    long_commit = fresh.params(commitTimeout=7 * DAY + 1, revealDeadline=now + 8 * DAY)
    post_reverts(fresh, reverts, long_commit, "CommitTimeoutTooLong", 7 * DAY + 1, 7 * DAY)
    huge_window = fresh.params(window=2**63)
    post_reverts(fresh, reverts, huge_window, "ChallengeWindowTooLong", 2**63, 7 * DAY)
    post_reverts(fresh, reverts, fresh.params(window=7 * DAY + 1), "ChallengeWindowTooLong")
    assert fresh.w3.eth.get_balance(fresh.market.address) == 0
    # Every bound itself is allowed: the next block is stamped `at`.
    at = now + 100
    fresh.travel(at)
    edge = fresh.params(
        claimDeadline=at + 10 * DAY,
        commitTimeout=7 * DAY,
        revealDeadline=at + 30 * DAY,
        window=7 * DAY,
    )
    task_id = fresh.post(edge)
    assert fn.taskState(task_id).call()[0] == 1


def test_task_id_binds_the_chain_and_the_market(fresh: Any) -> None:
    p = fresh.params()
    chain_id = fresh.w3.eth.chain_id
    encoded = fresh.w3.codec.encode(
        [
            "uint256",
            "address",
            "(address,address,bytes32,uint8,uint8,uint96,uint96,uint64,uint64,uint64,uint64,uint64)",
        ],
        [chain_id, fresh.market.address, p],
    )
    task_id = fresh.post(p)
    assert task_id == Web3.keccak(encoded)
    assert bytes(fresh.market.functions.taskIdOf(p).call()) == task_id
    # The same terms on another market are another task.
    other = fresh.deploy("TaskMarket", fresh.registry.address, 10**16)
    receipt = fresh.send(other.functions.postTask(p, "bafybundle"), fresh.requester, p[5])
    (event,) = other.events.TaskPosted().process_receipt(receipt, errors=DISCARD)
    assert bytes(event["args"]["taskId"]) != task_id
    assert bytes(event["args"]["taskId"]) == bytes(other.functions.taskIdOf(p).call())
