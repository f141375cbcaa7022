"""AgentRegistry and OutputLog smoke tests on the in-process EVM."""

from __future__ import annotations

from typing import Any

from web3 import Web3
from web3.logs import DISCARD

MIN_STAKE = 10**18 // 10  # as in conftest
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
    assert reg.providerOf("did:key:z6MkNew").call() == who
    assert reg.isActive(who).call() is True
    record = reg.getProvider(who).call()
    assert record[0] == MIN_STAKE and tuple(record[-2:]) == ("did:key:z6MkNew", "bafyofferX")
    with reverts(fresh.registry, "AlreadyRegistered"):
        reg.register("did:key:z6MkOther", "bafy", b"\0" * 32).transact(
            {"from": who, "value": MIN_STAKE}
        )
    with reverts(fresh.registry, "DidTaken"):
        reg.register("did:key:z6MkNew", "bafy", b"\0" * 32).transact(
            {"from": fresh.outsider, "value": MIN_STAKE}
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


def test_only_market_and_auditor_update_reputation(fresh: Any, reverts: Any) -> None:
    who = fresh.providers[0]
    reg = fresh.registry.functions
    with reverts(fresh.registry, "NotMarket"):
        reg.recordOutcomes([who], [1]).transact({"from": fresh.outsider})
    with reverts(fresh.registry, "NotAuditor"):
        reg.recordAudit(who, True).transact({"from": fresh.outsider})
    with reverts(fresh.registry, "MarketAlreadySet"):
        reg.setMarket(fresh.outsider).transact({"from": fresh.deployer})
    receipt = fresh.send(reg.recordAudit(who, False), fresh.auditor)
    (event,) = fresh.registry.events.ReputationUpdated().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["auditsFailed"] == 1


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
