"""Challenges decided by a drawn panel of staked providers, and registry stake slashing."""

from __future__ import annotations

from typing import Any

from web3 import Web3
from web3.logs import DISCARD

from tests.unit.contracts.test_contracts_market import (
    BOND,
    BOUNTY,
    CID,
    CID_HASH,
    OTHER,
    OUTPUT,
    commitment,
    salt,
)

DAY = 24 * 3600
STAKE = 0  # registry stake index in getProvider
WON, LOST, SLASHED, AUDITS_PASSED, AUDITS_FAILED = 1, 2, 3, 4, 5
ACTIVE = 6
EVIDENCE = "bafkreievidence"


def vote_salt(panelist: str) -> bytes:
    return Web3.keccak(text=f"vote salt for {panelist}")


def _revealed_task(fresh: Any, outputs: dict[str, bytes], quorum: int) -> tuple[Any, bytes]:
    """A task with a challenge window whose replicas (``outputs``' keys) all revealed."""
    p = fresh.params(replicas=len(outputs), quorum=quorum, window=600)
    task_id = fresh.post(p)
    fn = fresh.market.functions
    for who, out in outputs.items():
        fresh.send(fn.claim(p, commitment(fresh, out, who)), who, value=BOND)
    for who, out in outputs.items():
        fresh.send(fn.reveal(p, out, CID, salt(who)), who)
    return p, task_id


def _challenge(fresh: Any, p: Any, challenger: str) -> list[str]:
    receipt = fresh.send(
        fresh.market.functions.challenge(p, EVIDENCE), challenger, value=fresh.CHALLENGE_BOND
    )
    (challenged,) = fresh.market.events.TaskChallenged().process_receipt(receipt, errors=DISCARD)
    assert challenged["args"]["evidenceCid"] == EVIDENCE
    (drawn,) = fresh.market.events.PanelDrawn().process_receipt(receipt, errors=DISCARD)
    return list(drawn["args"]["panel"])


def _vote(fresh: Any, task_id: bytes, panelist: str, upheld: bool) -> None:
    fn = fresh.market.functions
    c = bytes(fn.voteCommitmentOf(upheld, vote_salt(panelist), panelist).call())
    # The documented formula: keccak256(abi.encode(upheld, salt, panelist)).
    encoded = bytes(31) + bytes([upheld]) + vote_salt(panelist) + bytes(12)
    assert c == Web3.keccak(encoded + bytes.fromhex(panelist[2:]))
    fresh.send(fn.commitVote(task_id, c), panelist)


def test_a_replica_cannot_challenge_its_own_task(fresh: Any, reverts: Any) -> None:
    fresh.enlist_panel()
    a, b = fresh.providers[:2]
    p = fresh.params(replicas=2, quorum=2, window=600)
    task_id = fresh.post(p)
    fn = fresh.market.functions
    for who in (a, b):
        fresh.send(fn.claim(p, commitment(fresh, OUTPUT, who)), who, value=BOND)
    fresh.send(fn.reveal(p, OUTPUT, CID, salt(a)), a)
    # Reveals still open: the outcome is not known yet, nothing to judge.
    with reverts(fresh.market, "ChallengeNotOpen", task_id):
        fn.challenge(p, EVIDENCE).transact({"from": fresh.outsider, "value": fresh.CHALLENGE_BOND})
    fresh.send(fn.reveal(p, OUTPUT, CID, salt(b)), b)
    for who in (a, b):
        with reverts(fresh.market, "SelfChallenge", task_id, who):
            fn.challenge(p, EVIDENCE).transact({"from": who, "value": fresh.CHALLENGE_BOND})
    assert fn.taskState(task_id).call()[4] == 0  # CHALLENGE_NONE


def test_panel_is_drawn_from_other_active_providers(fresh: Any, reverts: Any) -> None:
    a, b = fresh.providers[:2]
    p, task_id = _revealed_task(fresh, {a: OUTPUT, b: OUTPUT}, quorum=2)
    # Only providers[2] is eligible without the extra registrations: no panel, no challenge.
    with reverts(fresh.market, "PanelUnavailable", task_id, 1, 3):
        fresh.market.functions.challenge(p, EVIDENCE).transact(
            {"from": fresh.outsider, "value": fresh.CHALLENGE_BOND}
        )
    fresh.enlist_panel()
    panel = _challenge(fresh, p, fresh.outsider)
    assert len(set(panel)) == 3
    assert not {a, b, fresh.requester, fresh.outsider} & set(panel)
    for member in panel:
        assert fresh.registry.functions.isActive(member).call()
    record = fresh.market.functions.challengeOf(task_id).call()
    assert record[0] == fresh.outsider and list(record[3]) == panel


def test_panel_upholding_slashes_the_cheaters_bond_and_stake(fresh: Any, reverts: Any) -> None:
    fresh.enlist_panel()
    a, b = fresh.providers[:2]
    cb = fresh.CHALLENGE_BOND
    p, task_id = _revealed_task(fresh, {a: OUTPUT, b: OUTPUT}, quorum=2)
    panel = _challenge(fresh, p, fresh.outsider)
    fn = fresh.market.functions
    with reverts(fresh.market, "NotPanelist", task_id, fresh.outsider):
        fn.commitVote(task_id, b"\x01" * 32).transact({"from": fresh.outsider})
    _vote(fresh, task_id, panel[0], True)
    _vote(fresh, task_id, panel[1], True)
    # A vote cannot be revealed while another panelist may still commit (and copy it).
    with reverts(fresh.market, "VoteRevealNotOpen", task_id):
        fn.revealVote(task_id, True, vote_salt(panel[0])).transact({"from": panel[0]})
    _vote(fresh, task_id, panel[2], False)
    with reverts(fresh.market, "VoteMismatch", task_id, panel[0]):
        fn.revealVote(task_id, False, vote_salt(panel[0])).transact({"from": panel[0]})
    for member, upheld in zip(panel, (True, True, False), strict=True):
        fresh.send(fn.revealVote(task_id, upheld, vote_salt(member)), member)
    fresh.travel(fn.settleTime(p).call())
    with reverts(fresh.market, "ChallengePending", task_id):
        fn.finalize(p, [(a, OUTPUT, CID_HASH), (b, OUTPUT, CID_HASH)], CID).transact(
            {"from": fresh.outsider}
        )
    receipt = fresh.send(fn.resolveChallenge(p), fresh.outsider)
    (resolved,) = fresh.market.events.ChallengeResolved().process_receipt(receipt, errors=DISCARD)
    assert resolved["args"]["upheld"] and resolved["args"]["outcome"] == 2
    receipt = fresh.send(  # settled by a bystander, so every share is credited
        fn.finalize(p, [(a, OUTPUT, CID_HASH), (b, OUTPUT, CID_HASH)], ""), fresh.providers[3]
    )
    (done,) = fresh.market.events.TaskFinalized().process_receipt(receipt, errors=DISCARD)
    assert done["args"]["result"] == 3  # RESULT_OVERTURNED
    # Pot = both bonds (0.01 ether) < cb / 2: all of it is the panel's fee, no reward.
    pot = 2 * BOND
    fee = min(cb // 2, pot)
    reward = min(cb // 2, pot - fee)
    assert fn.balanceOf(panel[0]).call() == fee // 2
    assert fn.balanceOf(panel[1]).call() == fee // 2
    assert fn.balanceOf(panel[2]).call() == 0
    assert fn.balanceOf(a).call() == fn.balanceOf(b).call() == 0
    # The challenger's bond comes back; it gets nothing of the majority's beyond the reward.
    assert fn.balanceOf(fresh.outsider).call() == cb + reward
    # Requester: both bounties, the rest of the pot, and BOND of registry stake from each.
    assert fn.balanceOf(fresh.requester).call() == 2 * BOUNTY + pot - fee - reward + 2 * BOND
    for cheater in (a, b):
        record = fresh.registry.functions.getProvider(cheater).call()
        assert record[STAKE] == fresh.MIN_STAKE - BOND
        assert not record[ACTIVE]  # below the minimum stake: inactive until topped up
        # A failed audit on the record, decided by the panel (and a loss and a slash).
        assert (record[WON], record[LOST], record[SLASHED]) == (0, 1, 1)
        assert (record[AUDITS_PASSED], record[AUDITS_FAILED]) == (0, 1)
    assert fresh.w3.eth.get_balance(fresh.market.address) == sum(
        fn.balanceOf(x).call() for x in {*panel, fresh.outsider, fresh.requester}
    )
    fresh.send(fresh.registry.functions.addStake(), a, value=BOND)
    assert fresh.registry.functions.isActive(a).call()


def test_panel_rejecting_pays_the_panel_and_the_winners(fresh: Any, reverts: Any) -> None:
    fresh.enlist_panel()
    a = fresh.providers[0]
    cb = fresh.CHALLENGE_BOND
    p, task_id = _revealed_task(fresh, {a: OUTPUT}, quorum=1)
    panel = _challenge(fresh, p, fresh.requester)  # a requester may challenge its own task
    fn = fresh.market.functions
    for member in panel:
        _vote(fresh, task_id, member, False)
    with reverts(fresh.market, "ResolveTooEarly"):
        fn.resolveChallenge(p).transact({"from": fresh.outsider})
    for member in panel:
        fresh.send(fn.revealVote(task_id, False, vote_salt(member)), member)
    fresh.send(fn.resolveChallenge(p), fresh.outsider)  # all revealed: no need to wait
    fresh.travel(fn.settleTime(p).call())
    fresh.send(fn.finalize(p, [(a, OUTPUT, CID_HASH)], CID), fresh.outsider)
    share = cb // 2 // 3
    for member in panel:
        assert fn.balanceOf(member).call() == share
    assert fn.balanceOf(a).call() == BOUNTY + BOND + cb - 3 * share
    record = fresh.registry.functions.getProvider(a).call()
    assert record[STAKE] == fresh.MIN_STAKE
    # A result a panel judged and kept: a win and a passed audit.
    assert (record[WON], record[AUDITS_PASSED], record[AUDITS_FAILED]) == (1, 1, 0)


def test_a_challenge_must_name_its_evidence(fresh: Any, reverts: Any) -> None:
    fresh.enlist_panel()
    a = fresh.providers[0]
    p, task_id = _revealed_task(fresh, {a: OUTPUT}, quorum=1)
    fn = fresh.market.functions
    with reverts(fresh.market, "EmptyCid"):
        fn.challenge(p, "").transact({"from": fresh.outsider, "value": fresh.CHALLENGE_BOND})
    with reverts(fresh.market, "EvidenceCidTooLong", 129, 128):
        fn.challenge(p, "b" * 129).transact({"from": fresh.outsider, "value": fresh.CHALLENGE_BOND})
    assert fn.taskState(task_id).call()[4] == 0  # CHALLENGE_NONE
    _challenge(fresh, p, fresh.outsider)  # 128 bytes or fewer is fine


def test_an_undecided_panel_lapses_at_the_deadline(fresh: Any, reverts: Any) -> None:
    fresh.enlist_panel()
    a, b = fresh.providers[:2]
    cb = fresh.CHALLENGE_BOND
    p, task_id = _revealed_task(fresh, {a: OUTPUT, b: OTHER}, quorum=2)  # no quorum
    panel = _challenge(fresh, p, fresh.outsider)
    fn = fresh.market.functions
    _vote(fresh, task_id, panel[0], True)
    _vote(fresh, task_id, panel[1], False)
    (_, vote_by, reveal_by, *_rest) = fn.challengeOf(task_id).call()
    fresh.travel(vote_by + 1)
    with reverts(fresh.market, "VotingClosed", vote_by):
        fn.commitVote(task_id, b"\x01" * 32).transact({"from": panel[2]})
    fresh.send(fn.revealVote(task_id, True, vote_salt(panel[0])), panel[0])
    fresh.send(fn.revealVote(task_id, False, vote_salt(panel[1])), panel[1])
    with reverts(fresh.market, "ResolveTooEarly", reveal_by):
        fn.resolveChallenge(p).transact({"from": fresh.outsider})
    fresh.travel(reveal_by + 1)
    receipt = fresh.send(fn.resolveChallenge(p), fresh.outsider)
    (resolved,) = fresh.market.events.ChallengeResolved().process_receipt(receipt, errors=DISCARD)
    assert resolved["args"]["outcome"] == 4  # CHALLENGE_LAPSED: a tie decides nothing
    # The challenger is refunded; the panelist that never voted pays for the delay.
    assert fn.balanceOf(fresh.outsider).call() == cb
    no_show = fresh.registry.functions.getProvider(panel[2]).call()
    assert no_show[STAKE] == fresh.MIN_STAKE - cb // 3
    assert no_show[3] == 1  # slashed mark
    assert fn.balanceOf(fresh.requester).call() == cb // 3
    # Settlement proceeds as if unchallenged: no quorum, bonds back.
    fresh.send(fn.finalize(p, [(a, OUTPUT, CID_HASH), (b, OTHER, CID_HASH)], ""), fresh.outsider)
    assert fn.balanceOf(a).call() == fn.balanceOf(b).call() == BOND
    assert fn.balanceOf(fresh.requester).call() == cb // 3 + 2 * BOUNTY
    assert fresh.registry.functions.getProvider(a).call()[STAKE] == fresh.MIN_STAKE


def test_only_the_market_can_slash_stake(fresh: Any, reverts: Any) -> None:
    a = fresh.providers[0]
    for caller in (fresh.deployer, fresh.outsider, a):
        with reverts(fresh.registry, "NotMarket", caller):
            fresh.registry.functions.slashStake(a, 1).transact({"from": caller})
    # Nor can anyone but the registry send the market plain value.
    with reverts(fresh.market, "NotRegistry", fresh.outsider):
        fresh.w3.eth.send_transaction(
            {"from": fresh.outsider, "to": fresh.market.address, "value": 1}
        )
