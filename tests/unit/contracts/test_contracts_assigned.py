"""TaskMarket: tasks assigned to one provider, and ``claimAndFinalize`` (claim, reveal and
settle a one-replica task in one transaction), on the in-process EVM."""

from __future__ import annotations

from typing import Any

from eth_utils import event_abi_to_log_topic
from web3 import Web3
from web3.logs import DISCARD

BOUNTY = 10**18 // 100  # as in conftest
BOND = 10**18 // 200
OUTPUT = Web3.keccak(text="the answer is 42")
CID = "bafkreidon73zkcrwdb5iafqtijxildoonbwnpv7dyd6ef3qdgads2jc4su"
CID_HASH = Web3.keccak(text=CID)
ZERO32 = b"\0" * 32
RESULT_ACCEPTED = 1


def task_id_of(chain: Any, p: tuple[Any, ...]) -> bytes:
    return bytes(chain.market.functions.taskIdOf(p).call())


def won(chain: Any, provider: str) -> int:
    return int(chain.registry.functions.getProvider(provider).call()[1])


def event_names(chain: Any, receipt: Any) -> list[tuple[str, str]]:
    """(contract, event name) of every log of ``receipt``, in emission order."""
    topics = {}
    for label, contract in (("market", chain.market), ("registry", chain.registry)):
        for entry in contract.abi:
            if entry["type"] == "event":
                topics[(contract.address, bytes(event_abi_to_log_topic(entry)))] = (
                    label,
                    entry["name"],
                )
    return [topics[(log["address"], bytes(log["topics"][0]))] for log in receipt["logs"]]


def claim_and_finalize(chain: Any, p: tuple[Any, ...], sender: str, **tx: Any) -> Any:
    call = chain.market.functions.claimAndFinalize(p, OUTPUT, tx.pop("cid", CID))
    return call.transact({"from": sender, "value": tx.pop("value", BOND), **tx})


# ------------------------------------------------------------------ assigned tasks


def test_only_the_assignee_may_claim_an_assigned_task(fresh: Any, reverts: Any) -> None:
    assignee, other = fresh.providers[1], fresh.providers[0]
    p = fresh.params(assignee=assignee)
    fresh.post(p)
    fn = fresh.market.functions
    with reverts(fresh.market, "NotAssignee", other, assignee):
        fn.claim(p, ZERO32).transact({"from": other, "value": BOND})
    with reverts(fresh.market, "NotAssignee", other, assignee):
        claim_and_finalize(fresh, p, other)
    # Nobody else gets further either: an outsider hits the assignee check first.
    with reverts(fresh.market, "NotAssignee", fresh.outsider, assignee):
        fn.claim(p, ZERO32).transact({"from": fresh.outsider, "value": BOND})
    fresh.send(fn.claim(p, ZERO32), assignee, value=BOND)
    state = fn.taskState(task_id_of(fresh, p)).call()
    assert state[1] == 1  # claimed


def test_assigned_task_settles_through_claim_and_reveal_from_the_claim(fresh: Any) -> None:
    assignee = fresh.providers[2]
    p = fresh.params(assignee=assignee)
    task_id = fresh.post(p)
    fn = fresh.market.functions
    fresh.send(fn.claim(p, ZERO32), assignee, value=BOND)
    before = fresh.w3.eth.get_balance(assignee)
    receipt = fresh.send(
        fn.revealAndFinalize(p, OUTPUT, CID, ZERO32, [(assignee, OUTPUT, CID_HASH)], ""),
        assignee,
    )
    (done,) = fresh.market.events.TaskFinalized().process_receipt(receipt, errors=DISCARD)
    assert bytes(done["args"]["taskId"]) == task_id
    assert done["args"]["result"] == RESULT_ACCEPTED
    fee = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert fresh.w3.eth.get_balance(assignee) == before - fee + BOUNTY + BOND
    assert fresh.w3.eth.get_balance(fresh.market.address) == 0


def test_an_assigned_task_has_one_replica(fresh: Any, reverts: Any) -> None:
    fn = fresh.market.functions
    for replicas, quorum in ((3, 2), (2, 2)):
        p = fresh.params(replicas=replicas, quorum=quorum, assignee=fresh.providers[0])
        with reverts(fresh.market, "InvalidReplicas", replicas, 1):
            fn.postTask(p, "bafybundle").transact(
                {"from": fresh.requester, "value": replicas * BOUNTY}
            )
    # The general bound still comes first.
    p = fresh.params(replicas=17, quorum=9, assignee=fresh.providers[0])
    with reverts(fresh.market, "InvalidReplicas", 17, 16):
        fn.postTask(p, "bafybundle").transact({"from": fresh.requester, "value": 17 * BOUNTY})
    assert fresh.w3.eth.get_balance(fresh.market.address) == 0


def test_assigned_task_to_an_inactive_provider_cannot_be_claimed(fresh: Any, reverts: Any) -> None:
    inactive = fresh.providers[3]  # never registered
    p = fresh.params(assignee=inactive)
    fresh.post(p)
    with reverts(fresh.market, "NotActiveProvider", inactive):
        fresh.market.functions.claim(p, ZERO32).transact({"from": inactive, "value": BOND})
    with reverts(fresh.market, "NotActiveProvider", inactive):
        claim_and_finalize(fresh, p, inactive)
    # The requester can still take the bounty back: the task was never claimed.
    fresh.send(fresh.market.functions.cancel(p), fresh.requester)
    assert fresh.market.functions.balanceOf(fresh.requester).call() == BOUNTY


# ------------------------------------------------------------------ claimAndFinalize


def test_claim_and_finalize_pays_the_assignee_in_one_transaction(fresh: Any, reverts: Any) -> None:
    assignee = fresh.providers[1]
    p = fresh.params(assignee=assignee)
    task_id = fresh.post(p)
    fn = fresh.market.functions
    assert fresh.w3.eth.get_balance(fresh.market.address) == BOUNTY
    counters = tuple(fresh.registry.functions.getProvider(assignee).call()[1:6])
    wallet = fresh.w3.eth.get_balance(assignee)
    requester_wallet = fresh.w3.eth.get_balance(fresh.requester)
    receipt = fresh.send(fn.claimAndFinalize(p, OUTPUT, CID), assignee, value=BOND)
    block_time = fresh.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    fee = receipt["gasUsed"] * receipt["effectiveGasPrice"]

    # Paid at once: the bond back and the bounty, nothing left in the market.
    assert fresh.w3.eth.get_balance(assignee) == wallet - fee + BOUNTY
    assert fresh.w3.eth.get_balance(fresh.market.address) == 0
    assert fn.balanceOf(assignee).call() == 0
    assert fn.balanceOf(fresh.requester).call() == 0
    assert fresh.w3.eth.get_balance(fresh.requester) == requester_wallet

    assert event_names(fresh, receipt) == [
        ("market", "ReplicaClaimed"),
        ("market", "ResultRevealed"),
        ("market", "TaskFinalized"),
        ("registry", "ReputationUpdated"),
        ("market", "Withdrawn"),
    ]
    events = fresh.market.events
    (claimed,) = events.ReplicaClaimed().process_receipt(receipt, errors=DISCARD)
    assert dict(claimed["args"]) == {
        "taskId": task_id,
        "provider": assignee,
        "commitBy": block_time + 300,
        "commitment": ZERO32,
    }
    (shown,) = events.ResultRevealed().process_receipt(receipt, errors=DISCARD)
    assert dict(shown["args"]) == {
        "taskId": task_id,
        "provider": assignee,
        "outputHash": OUTPUT,
        "resultCid": CID,
    }
    (done,) = events.TaskFinalized().process_receipt(receipt, errors=DISCARD)
    assert dict(done["args"]) == {
        "taskId": task_id,
        "result": RESULT_ACCEPTED,
        "outputHash": OUTPUT,
        "resultCid": CID,
        "winners": 1,
        "payoutPerWinner": BOUNTY + BOND,
        "refund": 0,
    }
    (paid,) = events.Withdrawn().process_receipt(receipt, errors=DISCARD)
    assert dict(paid["args"]) == {"account": assignee, "amount": BOUNTY + BOND}

    # Reputation: one more task won, nothing else (won, lost, slashed, audits).
    after = tuple(fresh.registry.functions.getProvider(assignee).call()[1:6])
    assert after == (counters[0] + 1, *counters[1:])

    # The task is gone; no replica was stored.
    assert tuple(fn.taskState(task_id).call()) == (0, 0, 0, 0, 0, False, 0)
    assert fn.replicaOf(task_id, assignee).call()[0] == 0
    with reverts(fresh.market, "UnknownTask", task_id):
        claim_and_finalize(fresh, p, assignee)
    with reverts(fresh.market, "UnknownTask", task_id):
        fn.claim(p, ZERO32).transact({"from": assignee, "value": BOND})
    with reverts(fresh.market, "UnknownTask", task_id):
        fn.cancel(p).transact({"from": fresh.requester})


def test_claim_and_finalize_refuses_an_open_task(fresh: Any, reverts: Any) -> None:
    # Nothing commits an open task's output before it is sent: whoever saw the transaction
    # could copy it and claim first. Only an assignee may claim, reveal and settle at once.
    first = fresh.providers[0]
    p = fresh.params()  # no assignee: any active provider
    task_id = fresh.post(p)
    with reverts(fresh.market, "NotAssignedTask", task_id):
        claim_and_finalize(fresh, p, first)
    # Checked before the value and the caller.
    with reverts(fresh.market, "NotAssignedTask", task_id):
        claim_and_finalize(fresh, p, fresh.outsider, value=0)
    assert fresh.w3.eth.get_balance(fresh.market.address) == BOUNTY
    # It stays claimable the ordinary way.
    fresh.send(fresh.market.functions.claim(p, ZERO32), first, value=BOND)


def test_claim_and_finalize_needs_a_single_shot_task(fresh: Any, reverts: Any) -> None:
    provider = fresh.providers[0]
    windowed = fresh.params(window=60, assignee=provider)
    windowed_id = fresh.post(windowed)
    with reverts(fresh.market, "NotSingleShot", windowed_id):
        claim_and_finalize(fresh, windowed, provider)
    # Checked before the value and the caller.
    with reverts(fresh.market, "NotSingleShot", windowed_id):
        claim_and_finalize(fresh, windowed, fresh.outsider, value=0)
    # It stays claimable the ordinary way.
    fresh.send(fresh.market.functions.claim(windowed, ZERO32), provider, value=BOND)


def test_claim_and_finalize_checks_in_the_contracts_order(fresh: Any, reverts: Any) -> None:
    assignee, other = fresh.providers[0], fresh.providers[1]
    p = fresh.params(assignee=assignee)
    task_id = fresh.post(p)
    unknown = fresh.params(assignee=assignee)
    with reverts(fresh.market, "UnknownTask", task_id_of(fresh, unknown)):
        claim_and_finalize(fresh, unknown, assignee)
    # The value comes before the caller; the caller before the CID.
    with reverts(fresh.market, "WrongValue", BOND - 1, BOND):
        claim_and_finalize(fresh, p, other, value=BOND - 1)
    with reverts(fresh.market, "WrongValue", BOND + 1, BOND):
        claim_and_finalize(fresh, p, assignee, value=BOND + 1)
    with reverts(fresh.market, "NotAssignee", other, assignee):
        claim_and_finalize(fresh, p, other, cid="")
    with reverts(fresh.market, "EmptyCid"):
        claim_and_finalize(fresh, p, assignee, cid="")
    # The claim deadline is inclusive: one second after it, the task is closed.
    claim_deadline = p[7]
    fresh.travel(claim_deadline + 1)
    with reverts(fresh.market, "ClaimClosed", claim_deadline):
        claim_and_finalize(fresh, p, assignee)
    assert fresh.w3.eth.get_balance(fresh.market.address) == BOUNTY
    assert fresh.market.functions.taskState(task_id).call()[0] == 1  # still open


def test_claim_and_finalize_at_the_claim_deadline_itself(fresh: Any) -> None:
    provider = fresh.providers[0]
    p = fresh.params(assignee=provider)
    fresh.post(p)
    fresh.travel(p[7])  # the next block is stamped at the deadline
    receipt = fresh.send(fresh.market.functions.claimAndFinalize(p, OUTPUT, CID), provider, BOND)
    assert fresh.w3.eth.get_block(receipt["blockNumber"])["timestamp"] == p[7]


def test_a_claimed_task_cannot_be_claimed_and_finalized(fresh: Any, reverts: Any) -> None:
    a = fresh.providers[0]
    p = fresh.params(assignee=a)
    task_id = fresh.post(p)
    fn = fresh.market.functions
    fresh.send(fn.claim(p, ZERO32), a, value=BOND)
    with reverts(fresh.market, "TaskFull", task_id):
        claim_and_finalize(fresh, p, a)
    # Once reopened (a missed its commit deadline), a is locked out.
    fresh.travel(fresh.now() + 301)
    fresh.send(fn.reopen(p, a), fresh.outsider)
    with reverts(fresh.market, "AlreadyClaimed", task_id, a):
        claim_and_finalize(fresh, p, a)
    # a's slashed bond went to the requester; the bounty is still escrowed.
    assert fn.balanceOf(fresh.requester).call() == BOND
    assert fresh.w3.eth.get_balance(fresh.market.address) == BOUNTY + BOND


def test_claim_and_finalize_needs_an_active_provider(fresh: Any, reverts: Any) -> None:
    for who in (fresh.outsider, fresh.providers[3]):
        p = fresh.params(assignee=who)
        fresh.post(p)
        with reverts(fresh.market, "NotActiveProvider", who):
            claim_and_finalize(fresh, p, who)
    # A provider that asked to unstake is no longer active.
    leaving = fresh.providers[2]
    p = fresh.params(assignee=leaving)
    fresh.post(p)
    fresh.send(fresh.registry.functions.requestUnstake(), leaving)
    with reverts(fresh.market, "NotActiveProvider", leaving):
        claim_and_finalize(fresh, p, leaving)
