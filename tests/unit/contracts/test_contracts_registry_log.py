"""AgentRegistry and OutputLog smoke tests on the in-process EVM."""

from __future__ import annotations

from typing import Any

from web3 import Web3
from web3.logs import DISCARD

MIN_STAKE = 10**18 // 10  # as in conftest
BOND = 10**18 // 200  # as in conftest
COOLDOWN = 3600


def test_register_views_and_events(fresh: Any, reverts: Any) -> None:
    who = fresh.providers[3]
    reg = fresh.registry.functions
    count = reg.count().call()
    receipt = fresh.send(
        reg.register("did:key:z6MkNew", "bafyofferX", b"\x02" * 32), who, value=MIN_STAKE
    )
    (event,) = fresh.registry.events.ProviderRegistered().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["did"] == "did:key:z6MkNew"
    assert bytes(event["args"]["didHash"]) == Web3.keccak(text="did:key:z6MkNew")
    assert reg.count().call() == count + 1
    assert reg.providerAt(count).call() == who
    assert reg.isActive(who).call() is True
    record = reg.getProvider(who).call()
    assert record[0] == MIN_STAKE and tuple(record[-2:]) == ("did:key:z6MkNew", "bafyofferX")
    with reverts(fresh.registry, "AlreadyRegistered"):
        reg.register("did:key:z6MkOther", "bafy", b"\0" * 32).transact(
            {"from": who, "value": MIN_STAKE}
        )
    with reverts(fresh.registry, "StakeTooLow"):
        reg.register("did:key:z6MkCheap", "bafy", b"\0" * 32).transact(
            {"from": fresh.outsider, "value": MIN_STAKE - 1}
        )


def test_offer_update_stake_and_unstake_after_cooldown(fresh: Any, reverts: Any) -> None:
    who = fresh.providers[0]
    reg = fresh.registry.functions
    receipt = fresh.send(reg.updateOffer("bafyofferNew", b"\x03" * 32), who)
    assert (
        fresh.registry.events.OfferUpdated().process_receipt(receipt, errors=DISCARD)[0]["args"][
            "offerCid"
        ]
        == "bafyofferNew"
    )
    fresh.send(reg.addStake(), who, value=5)
    assert reg.getProvider(who).call()[0] == MIN_STAKE + 5
    fresh.send(reg.requestUnstake(), who)
    assert reg.isActive(who).call() is False
    with reverts(fresh.registry, "CooldownActive"):
        reg.withdrawStake().transact({"from": who})
    fresh.travel(fresh.now() + COOLDOWN + 1)
    receipt = fresh.send(reg.withdrawStake(), who)
    (event,) = fresh.registry.events.StakeWithdrawn().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["amount"] == MIN_STAKE + 5
    assert reg.getProvider(who).call()[0] == 0


def test_naming_a_did_blocks_nobody(fresh: Any) -> None:
    # Anyone may name any DID (nothing on chain proves control of it): a squatter who
    # registers the victim's DID first does not lock the victim out. Readers accept only a
    # registration whose offer the DID signed for that address (see the registry index).
    squatter, victim = fresh.outsider, fresh.providers[3]
    reg = fresh.registry.functions
    did = "did:key:z6MkVictim"
    fresh.send(reg.register(did, "bafysquat", b"\x05" * 32), squatter, value=MIN_STAKE)
    receipt = fresh.send(reg.register(did, "bafyvictim", b"\x06" * 32), victim, value=MIN_STAKE)
    (event,) = fresh.registry.events.ProviderRegistered().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["provider"] == victim and event["args"]["did"] == did
    assert reg.isActive(victim).call() is True
    assert tuple(reg.getProvider(victim).call()[-2:]) == (did, "bafyvictim")


def test_withdrawing_the_stake_ends_the_registration(fresh: Any, reverts: Any) -> None:
    who = fresh.providers[0]
    reg = fresh.registry.functions
    count = reg.count().call()
    # A missed commit deadline puts a mark on the record (slashed = 1).
    p = fresh.params()
    fresh.post(p)
    fresh.send(fresh.market.functions.claim(p, b"\0" * 32), who, value=BOND)
    fresh.travel(fresh.now() + 301)
    fresh.send(fresh.market.functions.reopen(p, who), fresh.outsider)
    fresh.send(reg.requestUnstake(), who)
    fresh.travel(fresh.now() + COOLDOWN + 1)
    fresh.send(reg.withdrawStake(), who)
    record = reg.getProvider(who).call()
    # DID, offer, stake and flags cleared; the reputation counters stay with the address.
    assert record[0] == 0 and record[3] == 1  # stake, slashed
    assert tuple(record[6:9]) == (False, False, 0)  # active, registered, unstakeAvailableAt
    assert bytes(record[10]) == b"\0" * 32 and tuple(record[-2:]) == ("", "")
    with reverts(fresh.registry, "NotRegistered", who):
        reg.withdrawStake().transact({"from": who})
    with reverts(fresh.registry, "NotRegistered", who):
        reg.updateOffer("bafy", b"\0" * 32).transact({"from": who})
    # The address may register again, under another DID; it is listed once.
    fresh.send(reg.register("did:key:z6MkAgain", "bafyagain", b"\x07" * 32), who, value=MIN_STAKE)
    record = reg.getProvider(who).call()
    assert tuple(record[6:8]) == (True, True) and record[3] == 1
    assert tuple(record[-2:]) == ("did:key:z6MkAgain", "bafyagain")
    assert reg.count().call() == count


def test_only_the_market_updates_reputation(fresh: Any, reverts: Any) -> None:
    who = fresh.providers[0]
    reg = fresh.registry.functions
    # Audits are challenges a panel decided, recorded by the market: no key records them.
    for outcome in (1, 4, 5):
        with reverts(fresh.registry, "NotMarket"):
            reg.recordOutcomes([who], [outcome]).transact({"from": fresh.deployer})
    names = {f["name"] for f in fresh.registry.abi if f.get("type") == "function"}
    assert not names & {"recordAudit", "setAuditor", "auditor"}
    with reverts(fresh.registry, "MarketAlreadySet"):
        reg.setMarket(fresh.outsider).transact({"from": fresh.deployer})


def test_output_log_emits_and_stores_nothing(fresh: Any, reverts: Any) -> None:
    subject = Web3.keccak(text="conversation 7")
    output = Web3.keccak(text="reply")
    receipt = fresh.send(
        fresh.log.functions.logOutput(subject, output, "bafyresult"), fresh.outsider
    )
    (event,) = fresh.log.events.OutputLogged().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["sender"] == fresh.outsider
    assert bytes(event["args"]["subject"]) == subject
    assert bytes(event["args"]["outputHash"]) == output
    assert event["args"]["resultCid"] == "bafyresult"
    assert receipt["gasUsed"] < 30_000
    with reverts(fresh.log, "EmptyResultCid"):
        fresh.log.functions.logOutput(subject, output, "").transact({"from": fresh.outsider})
