"""The Chain conformance suite: the chain layer and every contract function, on every backend.

``ChainConformance`` holds the tests; each backend subclasses it and says how to open a chain
with ten funded accounts. Contracts are deployed once per class and every test runs inside an
EVM snapshot that is reverted afterwards, so tests stay independent and fast.

The anvil subclass is an integration test: it uses ``$CHEFSPLAN_TEST_RPC_URL`` when set, and
otherwise starts the pinned anvil from ``node_modules`` on a free loopback port.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from chefsplan_agents.chain import (
    Artifact,
    BoundContract,
    Chain,
    Deployment,
    EmbeddedChain,
    JsonRpcChain,
    deploy_contracts,
    revert_error_class,
)
from chefsplan_agents.chain import errors as E
from chefsplan_agents.errors import (
    ChainError,
    ContractNotDeployed,
    MarketError,
    TransactionFailed,
    TxReverted,
)
from chefsplan_agents.market import (
    ChallengeState,
    MarketClient,
    OutputLogClient,
    ReplicaState,
    RevealEntry,
    TaskParams,
    TaskResult,
    make_commitment,
    result_cid_hash,
)
from chefsplan_agents.registry import (
    OUTCOME_AUDIT_FAILED,
    OUTCOME_AUDIT_PASSED,
    OUTCOME_LOST,
    OUTCOME_SLASHED,
    OUTCOME_WON,
    RegistryClient,
)

ROOT = Path(__file__).resolve().parents[2]
PROBE = Artifact.from_json(
    json.loads((ROOT / "tests" / "unit" / "chain" / "fixtures" / "Probe.json").read_text())
)
ANVIL = ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
# anvil's well-known development mnemonic: its accounts are funded on every anvil chain.
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"

ETHER = 10**18
MIN_STAKE = ETHER // 100
COOLDOWN = 3600
CHALLENGE_BOND = ETHER // 50
EVIDENCE = "bafkreievidence"
BOUNTY = ETHER // 10
BOND = ETHER // 20
DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
OFFER_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
RESULT_CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
OTHER_CID = "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"


def h(tag: str) -> bytes:
    """A distinct 32-byte value for a tag."""
    return tag.encode().ljust(32, b"\0")[:32]


class ChainConformance:
    """Behaviour every Chain backend must have. Subclasses implement :meth:`open_chain`."""

    @classmethod
    def open_chain(cls) -> Chain:
        raise NotImplementedError

    # ------------------------------------------------------------------ fixtures

    @pytest.fixture(scope="class")
    @classmethod
    def chain(cls) -> Iterator[Chain]:
        with cls.open_chain() as chain:
            yield chain

    @pytest.fixture(scope="class")
    @classmethod
    def deployment(cls, chain: Chain) -> Deployment:
        return deploy_contracts(
            chain,
            min_stake=MIN_STAKE,
            unstake_cooldown=COOLDOWN,
            challenge_bond=CHALLENGE_BOND,
        )

    @pytest.fixture(scope="class")
    @classmethod
    def probe(cls, chain: Chain) -> BoundContract:
        return chain.contract(PROBE, chain.deploy(PROBE, 5))

    @pytest.fixture(autouse=True)
    def _isolated(
        self, chain: Chain, deployment: Deployment, probe: BoundContract
    ) -> Iterator[None]:
        snapshot = chain.snapshot()
        yield
        chain.revert(snapshot)

    @pytest.fixture
    def accounts(self, chain: Chain) -> list[str]:
        return chain.accounts

    @pytest.fixture
    def registry(self, deployment: Deployment) -> RegistryClient:
        return RegistryClient(deployment.registry)

    @pytest.fixture
    def market(self, deployment: Deployment) -> MarketClient:
        return MarketClient(deployment.market, from_block=deployment.deployed_at)

    @pytest.fixture
    def output_log(self, deployment: Deployment) -> OutputLogClient:
        return OutputLogClient(deployment.output_log, from_block=deployment.deployed_at)

    @pytest.fixture
    def providers(self, registry: RegistryClient, accounts: list[str]) -> list[str]:
        """Accounts 1..4 registered as active providers."""
        for i, who in enumerate(accounts[1:5], start=1):
            registry.register(f"{DID}{i}", OFFER_CID, h(f"offer{i}"), stake=MIN_STAKE, sender=who)
        return accounts[1:5]

    # ------------------------------------------------------------------ chain basics

    def test_accounts_are_funded(self, chain: Chain) -> None:
        assert len(chain.accounts) >= 10
        assert len(set(chain.accounts)) == len(chain.accounts)
        assert all(chain.balance(a) >= 100 * ETHER for a in chain.accounts[:10])

    def test_transfer_moves_value_and_charges_gas(self, chain: Chain) -> None:
        a, b = chain.accounts[0], chain.accounts[1]
        before_a, before_b = chain.balance(a), chain.balance(b)
        receipt = chain.transfer(b, 12345, sender=a)
        assert receipt.status == 1 and receipt.gas_used == 21_000
        assert chain.balance(b) == before_b + 12345
        assert chain.balance(a) == before_a - 12345 - receipt.fee_wei

    def test_deploy_and_call(self, chain: Chain, probe: BoundContract) -> None:
        assert chain.code_at(probe.address)
        assert probe.call("value") == 5
        value, caller = probe.call("pair", sender=chain.accounts[2])
        assert (value, caller) == (5, chain.accounts[2])

    def test_transact_returns_decoded_events(self, chain: Chain, probe: BoundContract) -> None:
        receipt = probe.transact("set", 42, "hello", sender=chain.accounts[1])
        assert receipt.status == 1 and receipt.gas_used > 21_000
        assert receipt.block_number == chain.block_number()
        event = receipt.event("Set")
        assert event.args == {"who": chain.accounts[1], "value": 42, "note": "hello"}
        assert event.address == probe.address and event.tx_hash == receipt.tx_hash
        assert probe.call("value") == 42
        with pytest.raises(ChainError, match="no Nope event"):
            receipt.event("Nope")

    def test_get_logs_filters_indexed_arguments(self, chain: Chain, probe: BoundContract) -> None:
        start = chain.block_number() + 1
        probe.transact("set", 11, "a", sender=chain.accounts[1])
        probe.transact("set", 12, "b", sender=chain.accounts[2])
        probe.transact("set", 13, "c", sender=chain.accounts[1])
        mine = probe.get_logs("Set", from_block=start, filters={"who": chain.accounts[1]})
        assert [e.args["value"] for e in mine] == [11, 13]
        both = probe.get_logs(
            "Set", from_block=start, filters={"who": [chain.accounts[1], chain.accounts[2]]}
        )
        assert [e.args["note"] for e in both] == ["a", "b", "c"]
        chain.log_block_range = 2  # as on a public endpoint that caps eth_getLogs ranges
        try:
            split = probe.get_logs("Set", from_block=start, filters={"who": chain.accounts[1]})
        finally:
            chain.log_block_range = None
        assert split == mine
        with pytest.raises(ChainError, match="only indexed"):
            probe.get_logs("Set", filters={"value": 11})
        with pytest.raises(ChainError, match="no event"):
            probe.get_logs("Missing")

    def test_custom_error_with_arguments(self, probe: BoundContract) -> None:
        with pytest.raises(E.TooLow) as info:
            probe.transact("set", 3, "x")
        assert info.value.args_ == {"got": 3, "minimum": 10}
        assert isinstance(info.value, TxReverted)
        assert str(info.value) == "Probe.set reverted with TooLow(got=3, minimum=10)"
        assert type(info.value) is revert_error_class("TooLow")
        assert type(info.value).__name__ == "TooLow"

    def test_reverted_transaction_changes_nothing(self, chain: Chain, probe: BoundContract) -> None:
        sender = chain.accounts[5]
        nonce, balance, head = (
            chain._fetch_nonce(sender),
            chain.balance(sender),
            chain.block_number(),
        )
        with pytest.raises(E.TooLow):
            probe.transact("set", 3, "x", sender=sender)
        assert chain._fetch_nonce(sender) == nonce
        assert chain.balance(sender) == balance
        assert chain.block_number() == head
        assert probe.call("value") != 3
        # The nonce tracker is still in step: the next transaction goes through.
        probe.transact("set", 30, "ok", sender=sender)
        assert probe.call("value") == 30
        assert chain._fetch_nonce(sender) == nonce + 1

    def test_reverts_decode_in_calls_too(self, probe: BoundContract) -> None:
        with pytest.raises(E.TooLow):
            probe.call("set", 3, "x")
        with pytest.raises(E.Nope):
            probe.call("nope")

    def test_custom_error_without_arguments(self, probe: BoundContract) -> None:
        with pytest.raises(E.Nope) as info:
            probe.transact("nope")
        assert info.value.args_ == {}

    def test_revert_string_is_error_string(self, probe: BoundContract) -> None:
        with pytest.raises(revert_error_class("Error")) as info:
            probe.transact("requireOk", False)
        assert info.value.args_ == {"message": "not ok"}
        assert str(info.value) == "Probe.requireOk reverted: not ok"

    def test_panic_is_decoded(self, probe: BoundContract) -> None:
        with pytest.raises(E.Panic) as info:
            probe.call("divide", 1, 0)
        assert info.value.args_ == {"code": 0x12}
        assert "division or modulo by zero" in str(info.value)

    def test_bare_revert(self, probe: BoundContract) -> None:
        with pytest.raises(TxReverted, match="without a reason") as info:
            probe.transact("bare")
        assert type(info.value) is TxReverted

    def test_constructor_revert_is_decoded(self, chain: Chain) -> None:
        with pytest.raises(E.TooLow) as info:
            chain.deploy(PROBE, 0)
        assert info.value.args_ == {"got": 0, "minimum": 1}

    def test_mined_revert_is_decoded_by_replay(self, chain: Chain, probe: BoundContract) -> None:
        sender = chain.accounts[3]
        nonce_before = chain._fetch_nonce(sender)
        # An explicit gas limit skips estimation: the failing transaction is mined.
        with pytest.raises(E.TooLow):
            chain.transact(probe.fn("set", 3, "x"), sender=sender, gas=200_000)
        assert chain._fetch_nonce(sender) == nonce_before + 1
        # The nonce tracker stays in step after a mined failure.
        probe.transact("set", 20, "ok", sender=sender)
        assert probe.call("value") == 20

    def test_nonce_tracking_under_concurrent_threads(
        self, chain: Chain, probe: BoundContract
    ) -> None:
        sender = chain.accounts[4]
        start = chain._fetch_nonce(sender)
        errors: list[BaseException] = []
        receipts = []
        lock = threading.Lock()

        def send(k: int) -> None:
            try:
                for j in range(3):
                    r = probe.transact("set", 100 + 10 * k + j, f"t{k}", sender=sender)
                    with lock:
                        receipts.append(r)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=send, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len({r.tx_hash for r in receipts}) == 12
        assert chain._fetch_nonce(sender) == start + 12

    def test_nonce_resyncs_after_an_outside_send(self, chain: Chain, probe: BoundContract) -> None:
        sender = chain.accounts[5]
        probe.transact("set", 30, "a", sender=sender)  # primes the cached nonce
        # Another client with the same key sends behind the tracker's back.
        other = chain._signer(sender)
        tx = {
            "to": chain.accounts[0],
            "value": 1,
            "gas": 21_000,
            "nonce": chain._fetch_nonce(sender),
            "chainId": chain.chain_id,
            **chain._fee_fields(),
        }
        chain._eth.send_raw_transaction(other.sign_transaction(tx).raw_transaction)
        chain.mine()
        receipt = probe.transact("set", 31, "b", sender=sender)
        assert receipt.status == 1 and probe.call("value") == 31

    def test_unknown_sender_is_refused(self, chain: Chain, probe: BoundContract) -> None:
        stranger = Account.create().address
        with pytest.raises(ChainError, match="no private key for sender"):
            probe.transact("set", 20, "x", sender=stranger)

    def test_new_account_is_funded(self, chain: Chain, probe: BoundContract) -> None:
        address = chain.new_account(fund_wei=ETHER)
        assert address in chain.accounts and chain.balance(address) == ETHER
        probe.transact("set", 77, "new", sender=address)
        assert probe.get_logs("Set", filters={"who": address})[0].args["value"] == 77

    def test_insufficient_funds(self, chain: Chain, probe: BoundContract) -> None:
        poor = chain.new_account()
        with pytest.raises(TransactionFailed, match="insufficient funds"):
            chain.transfer(chain.accounts[0], 1, sender=poor)
        with pytest.raises(TransactionFailed, match="insufficient funds"):
            probe.transact("set", 50, "x", sender=poor)

    def test_no_code_is_contract_not_deployed(self, chain: Chain) -> None:
        with pytest.raises(ContractNotDeployed, match="no Probe contract at"):
            chain.contract(PROBE, chain.accounts[7])

    def test_advance_time(self, chain: Chain, probe: BoundContract) -> None:
        before = probe.call("stamp")
        chain.advance_time(5000)
        assert chain.block_timestamp() >= before + 5000
        assert probe.call("stamp") >= before + 5000

    def test_snapshot_and_revert(self, chain: Chain, probe: BoundContract) -> None:
        snap = chain.snapshot()
        probe.transact("set", 99, "x")
        assert probe.call("value") == 99
        chain.revert(snap)
        assert probe.call("value") == 5
        probe.transact("set", 98, "y")  # nonces are resynced after the revert
        assert probe.call("value") == 98

    def test_logs_and_receipts_after_a_revert_are_the_replacing_blocks(
        self, chain: Chain, probe: BoundContract
    ) -> None:
        start = chain.block_number() + 1
        snap = chain.snapshot()
        gone = probe.transact("set", 71, "gone", sender=chain.accounts[1])
        assert [e.args["note"] for e in probe.get_logs("Set", from_block=start)] == ["gone"]
        assert chain.receipt(gone.tx_hash).block_number == start  # read once: kept if cached
        chain.revert(snap)
        kept = probe.transact("set", 72, "kept", sender=chain.accounts[2])
        assert kept.block_number == start  # the same height, another block
        logs = probe.get_logs("Set", from_block=start)
        assert [(e.args["note"], e.tx_hash) for e in logs] == [("kept", kept.tx_hash)]
        assert chain.receipt(kept.tx_hash).event("Set").args["value"] == 72
        with pytest.raises(TransactionFailed, match="no mined transaction"):
            chain.receipt(gone.tx_hash)

    # ------------------------------------------------------------------ deployment

    def test_deployment_is_wired(
        self, chain: Chain, deployment: Deployment, registry: RegistryClient, market: MarketClient
    ) -> None:
        assert registry.market == deployment.market.address
        assert registry.owner == chain.accounts[0]
        assert registry.min_stake == MIN_STAKE and registry.unstake_cooldown == COOLDOWN
        assert market.challenge_bond == CHALLENGE_BOND and market.panel_size == 3
        assert set(deployment.addresses) == {"AgentRegistry", "TaskMarket", "OutputLog"}

    def test_market_constructor_reverts(self, chain: Chain, deployment: Deployment) -> None:
        zero = "0x" + "00" * 20
        with pytest.raises(E.ZeroAddress):
            chain.deploy("TaskMarket", zero, CHALLENGE_BOND)
        with pytest.raises(E.ZeroAmount):
            chain.deploy("TaskMarket", deployment.registry.address, 0)

    # ------------------------------------------------------------------ registry

    def test_register_and_read_back(self, chain: Chain, registry: RegistryClient) -> None:
        who = chain.accounts[1]
        assert registry.get_provider(who) is None
        receipt = registry.register(DID, OFFER_CID, h("offer"), stake=MIN_STAKE * 2, sender=who)
        event = receipt.event("ProviderRegistered")
        assert event.args["provider"] == who and event.args["did"] == DID
        assert event.args["stake"] == MIN_STAKE * 2
        record = registry.get_provider(who)
        assert record is not None
        assert (record.did, record.offer_cid, record.offer_hash) == (DID, OFFER_CID, h("offer"))
        assert record.stake == MIN_STAKE * 2 and record.active
        assert record.unstake_available_at == 0 and record.reputation.tasks == 0
        assert registry.is_active(who)
        assert registry.count() == 1 and [p.address for p in registry.providers()] == [who]

    def test_register_reverts(self, chain: Chain, registry: RegistryClient) -> None:
        a, b = chain.accounts[1], chain.accounts[2]
        with pytest.raises(E.EmptyDid):
            registry.register("", OFFER_CID, h("o"), stake=MIN_STAKE, sender=a)
        with pytest.raises(E.EmptyOfferCid):
            registry.register(DID, "", h("o"), stake=MIN_STAKE, sender=a)
        with pytest.raises(E.StakeTooLow) as low:
            registry.register(DID, OFFER_CID, h("o"), stake=MIN_STAKE - 1, sender=a)
        assert low.value.args_ == {"stake": MIN_STAKE - 1, "minStake": MIN_STAKE}
        registry.register(DID, OFFER_CID, h("o"), stake=MIN_STAKE, sender=a)
        with pytest.raises(E.AlreadyRegistered) as again:
            registry.register(DID + "x", OFFER_CID, h("o"), stake=MIN_STAKE, sender=a)
        assert again.value.args_ == {"provider": a}
        # A DID is a claim, not a lock: another address may name it too (readers accept only
        # the registration whose offer the DID signed for that address).
        registry.register(DID, OFFER_CID, h("o"), stake=MIN_STAKE, sender=b)
        assert registry.is_active(a) and registry.is_active(b)

    def test_update_offer(self, chain: Chain, registry: RegistryClient) -> None:
        a = chain.accounts[1]
        with pytest.raises(E.NotRegistered):
            registry.update_offer(OTHER_CID, h("o2"), sender=a)
        registry.register(DID, OFFER_CID, h("o"), stake=MIN_STAKE, sender=a)
        with pytest.raises(E.EmptyOfferCid):
            registry.update_offer("", h("o2"), sender=a)
        receipt = registry.update_offer(OTHER_CID, h("o2"), sender=a)
        assert receipt.event("OfferUpdated").args["offerCid"] == OTHER_CID
        record = registry.get_provider(a)
        assert record is not None and (record.offer_cid, record.offer_hash) == (OTHER_CID, h("o2"))

    def test_add_stake(self, chain: Chain, registry: RegistryClient) -> None:
        a = chain.accounts[1]
        with pytest.raises(E.NotRegistered):
            registry.add_stake(5, sender=a)
        registry.register(DID, OFFER_CID, h("o"), stake=MIN_STAKE, sender=a)
        with pytest.raises(E.ZeroAmount):
            registry.add_stake(0, sender=a)
        receipt = registry.add_stake(5, sender=a)
        assert receipt.event("StakeAdded").args == {
            "provider": a,
            "amount": 5,
            "stake": MIN_STAKE + 5,
        }
        record = registry.get_provider(a)
        assert record is not None and record.stake == MIN_STAKE + 5

    def test_unstake_lifecycle(self, chain: Chain, registry: RegistryClient) -> None:
        a = chain.accounts[1]
        with pytest.raises(E.NotRegistered):
            registry.request_unstake(sender=a)
        with pytest.raises(E.NotRegistered):
            registry.withdraw_stake(sender=a)
        registry.register(DID, OFFER_CID, h("o"), stake=MIN_STAKE, sender=a)
        with pytest.raises(E.UnstakeNotRequested):
            registry.withdraw_stake(sender=a)
        receipt = registry.request_unstake(sender=a)
        available = receipt.event("UnstakeRequested").args["availableAt"]
        assert available == chain.block_timestamp() + COOLDOWN
        assert not registry.is_active(a)
        assert [p.address for p in registry.providers(active_only=True)] == []
        with pytest.raises(E.UnstakeAlreadyRequested):
            registry.request_unstake(sender=a)
        with pytest.raises(E.CooldownActive) as early:
            registry.withdraw_stake(sender=a)
        assert early.value.args_ == {"availableAt": available}
        chain.advance_time(COOLDOWN + 1)
        before = chain.balance(a)
        receipt = registry.withdraw_stake(sender=a)
        assert receipt.event("StakeWithdrawn").args["amount"] == MIN_STAKE
        assert chain.balance(a) == before + MIN_STAKE - receipt.fee_wei
        # The registration ended: DID and offer cleared, and the address may register again.
        assert registry.get_provider(a) is None
        with pytest.raises(E.NotRegistered) as gone:
            registry.withdraw_stake(sender=a)
        assert gone.value.args_ == {"provider": a}
        registry.register(DID, OTHER_CID, h("o2"), stake=MIN_STAKE, sender=a)
        record = registry.get_provider(a)
        assert record is not None and record.active and record.offer_cid == OTHER_CID
        assert registry.count() == 1

    def test_roles(self, chain: Chain, registry: RegistryClient, deployment: Deployment) -> None:
        owner, stranger = chain.accounts[0], chain.accounts[1]
        with pytest.raises(E.NotOwner) as not_owner:
            registry.set_market(stranger, sender=stranger)
        assert not_owner.value.args_ == {"caller": stranger}
        with pytest.raises(E.MarketAlreadySet):
            registry.set_market(stranger, sender=owner)
        with pytest.raises(E.NotMarket):
            registry.record_outcomes({stranger: OUTCOME_WON}, sender=owner)

    def test_set_market_zero_address(self, chain: Chain) -> None:
        fresh = RegistryClient(
            chain.contract("AgentRegistry", chain.deploy("AgentRegistry", MIN_STAKE, COOLDOWN))
        )
        assert fresh.market is None
        with pytest.raises(E.ZeroAddress):
            fresh.set_market("0x" + "00" * 20)

    def test_record_outcomes_by_market(self, chain: Chain) -> None:
        market_eoa, p1, p2, p3 = chain.accounts[6], *chain.accounts[1:4]
        fresh = RegistryClient(
            chain.contract("AgentRegistry", chain.deploy("AgentRegistry", MIN_STAKE, COOLDOWN))
        )
        fresh.set_market(market_eoa)
        for i, who in enumerate((p1, p2, p3)):
            fresh.register(f"{DID}{i}", OFFER_CID, h("o"), stake=MIN_STAKE, sender=who)
        receipt = fresh.record_outcomes(
            {p1: OUTCOME_WON, p2: OUTCOME_LOST, p3: OUTCOME_SLASHED}, sender=market_eoa
        )
        assert len(receipt.events_named("ReputationUpdated")) == 3
        assert fresh.reputation(p1).won == 1
        assert (fresh.reputation(p2).lost, fresh.reputation(p2).slashed) == (1, 1)
        assert fresh.reputation(p3).slashed == 1 and fresh.reputation(p3).lost == 0
        assert fresh.reputation(p1).success_rate > 0.5 > fresh.reputation(p2).success_rate
        with pytest.raises(E.UnknownOutcome) as unknown:
            fresh.record_outcomes({p1: 7}, sender=market_eoa)
        assert unknown.value.args_ == {"outcome": 7}
        with pytest.raises(E.LengthMismatch):
            fresh.contract.transact("recordOutcomes", [p1, p2], [1], sender=market_eoa)

    def test_audit_outcomes_by_market(self, chain: Chain) -> None:
        market_eoa, a, b = chain.accounts[6], *chain.accounts[1:3]
        fresh = RegistryClient(
            chain.contract("AgentRegistry", chain.deploy("AgentRegistry", MIN_STAKE, COOLDOWN))
        )
        fresh.set_market(market_eoa)
        for i, who in enumerate((a, b)):
            fresh.register(f"{DID}{i}", OFFER_CID, h("o"), stake=MIN_STAKE, sender=who)
        fresh.record_outcomes({a: OUTCOME_AUDIT_PASSED, b: OUTCOME_AUDIT_FAILED}, sender=market_eoa)
        receipt = fresh.record_outcomes({a: OUTCOME_AUDIT_PASSED}, sender=market_eoa)
        assert receipt.event("ReputationUpdated").args["auditsPassed"] == 2
        rep_a, rep_b = fresh.reputation(a), fresh.reputation(b)
        assert (rep_a.won, rep_a.audits_passed, rep_a.audits_failed) == (2, 2, 0)
        assert (rep_b.lost, rep_b.slashed, rep_b.audits_failed) == (1, 1, 1)
        with pytest.raises(E.NotMarket):
            fresh.record_outcomes({a: OUTCOME_AUDIT_FAILED}, sender=a)

    # ------------------------------------------------------------------ market: posting

    def _task(self, market: MarketClient, **overrides: Any) -> TaskParams:
        terms: dict[str, Any] = {
            "bounty_per_replica": BOUNTY,
            "bond": BOND,
            "replicas": 1,
            "claim_window": 600,
            "commit_timeout": 300,
            "reveal_window": 600,
        }
        terms.update(overrides)
        return market.new_task(h("bundle"), **terms)

    def test_post_task(self, chain: Chain, market: MarketClient) -> None:
        params = self._task(market, replicas=3)
        assert params.quorum == 2 and params.escrow == 3 * BOUNTY
        before = chain.balance(market.address)
        posted = market.post_task(params, "bafybundle")
        assert posted.task_id == market.task_id(params) == market.task_id_of(params)
        assert chain.balance(market.address) == before + 3 * BOUNTY
        record = market.get_task(posted.task_id)
        assert record is not None
        assert record.params == params and record.bundle_cid == "bafybundle"
        assert record.state.open and record.state.claimed == 0
        assert market.get_task(h("missing")) is None

    def test_post_task_reverts(self, chain: Chain, market: MarketClient) -> None:
        good = self._task(market, replicas=3)
        stranger = chain.accounts[1]
        from dataclasses import replace

        with pytest.raises(E.NotRequester):
            market.contract.transact(
                "postTask", good.as_abi(), "cid", sender=stranger, value=good.escrow
            )
        with pytest.raises(E.EmptyCid):
            market.post_task(good, "")
        with pytest.raises(E.InvalidReplicas):
            market.post_task(replace(good, replicas=0, quorum=0), "cid", value=0)
        with pytest.raises(E.InvalidReplicas) as many:
            market.post_task(replace(good, replicas=17, quorum=9), "cid")
        assert many.value.args_ == {"replicas": 17, "maxReplicas": 16}
        with pytest.raises(E.InvalidQuorum):
            market.post_task(replace(good, quorum=1), "cid")
        with pytest.raises(E.InvalidQuorum):
            market.post_task(replace(good, quorum=4), "cid")
        with pytest.raises(E.ZeroAmount):
            market.post_task(replace(good, bond=0), "cid")

        # The client refuses terms out of bounds before sending; the contract checks them too.
        def post_raw(params: TaskParams) -> None:
            market.contract.transact("postTask", params.as_abi(), "cid", value=params.escrow)

        with pytest.raises(MarketError, match="commit_timeout"):
            market.post_task(replace(good, commit_timeout=0), "cid")
        with pytest.raises(E.InvalidDeadlines):
            post_raw(replace(good, commit_timeout=0))
        with pytest.raises(E.InvalidDeadlines):
            post_raw(replace(good, claim_deadline=chain.block_timestamp() - 1))
        with pytest.raises(E.InvalidDeadlines):
            post_raw(replace(good, reveal_deadline=good.commit_phase_end))
        day = 24 * 3600
        with pytest.raises(E.DeadlineTooFar):
            post_raw(replace(good, reveal_deadline=good.claim_deadline + 31 * day))
        with pytest.raises(E.CommitTimeoutTooLong) as commit:
            long = good.claim_deadline + 8 * day
            post_raw(replace(good, commit_timeout=7 * day + 1, reveal_deadline=long))
        assert commit.value.args_ == {"commitTimeout": 7 * day + 1, "maxCommitTimeout": 7 * day}
        with pytest.raises(E.ChallengeWindowTooLong) as window:
            post_raw(replace(good, challenge_window=2**63))
        assert window.value.args_ == {
            "challengeWindow": 2**63,
            "maxChallengeWindow": 7 * day,
        }
        with pytest.raises(MarketError, match="more than 30 days"):
            market.post_task(replace(good, reveal_deadline=good.claim_deadline + 31 * day), "c")
        with pytest.raises(E.WrongValue) as wrong:
            market.post_task(good, "cid", value=good.escrow - 1)
        assert wrong.value.args_ == {"sent": good.escrow - 1, "expected": good.escrow}
        market.post_task(good, "cid")
        with pytest.raises(E.TaskExists):
            market.post_task(good, "cid")

    def test_reverts_are_judged_at_the_next_block(self, chain: Chain, market: MarketClient) -> None:
        # The next block may be later than the latest one: a deadline of "the next block's
        # time" is already past for the transaction, whatever the latest block says.
        from dataclasses import replace

        before = chain.pending_timestamp()
        good = self._task(market)
        pending = chain.pending_timestamp()
        assert pending >= chain.block_timestamp()
        # new_task counts from the pending block (anvil's follows the wall clock).
        assert before + 600 <= good.claim_deadline <= pending + 600
        late = replace(good, claim_deadline=pending, reveal_deadline=pending + 1000)
        with pytest.raises(E.InvalidDeadlines):
            market.contract.transact("postTask", late.as_abi(), "cid", value=late.escrow)
        with pytest.raises(MarketError, match="not after the chain's time"):
            market.post_task(late, "cid")
        posted = market.post_task(good, "cid")
        stamp = chain.block_timestamp(posted.receipt.block_number)
        assert stamp >= pending

    def test_cancel(self, chain: Chain, market: MarketClient, providers: list[str]) -> None:
        requester = chain.accounts[0]
        params = self._task(market, replicas=3)
        with pytest.raises(E.UnknownTask):
            market.cancel(params)
        market.post_task(params, "cid")
        with pytest.raises(E.NotRequester):
            market.cancel(params, sender=providers[0])
        receipt = market.cancel(params)
        assert receipt.event("TaskCancelled").args["refund"] == 3 * BOUNTY
        assert market.balance_of(requester) == 3 * BOUNTY
        assert not market.task_state(market.task_id(params)).open
        claimed = self._task(market, replicas=1)
        market.post_task(claimed, "cid")
        market.claim(claimed, sender=providers[0])
        with pytest.raises(E.CancelNotAllowed):
            market.cancel(claimed)

    def test_withdraw(self, chain: Chain, market: MarketClient) -> None:
        requester = chain.accounts[0]
        with pytest.raises(E.NothingToWithdraw) as nothing:
            market.withdraw(sender=requester)
        assert nothing.value.args_ == {"account": requester}
        params = self._task(market)
        market.post_task(params, "cid")
        market.cancel(params)
        before = chain.balance(requester)
        receipt = market.withdraw(sender=requester)
        assert receipt.event("Withdrawn").args == {"account": requester, "amount": BOUNTY}
        assert chain.balance(requester) == before + BOUNTY - receipt.fee_wei
        assert market.balance_of(requester) == 0

    # ------------------------------------------------------------------ market: claim/commit

    def test_claim_reverts(self, chain: Chain, market: MarketClient, providers: list[str]) -> None:
        params = self._task(market, replicas=1)
        with pytest.raises(E.UnknownTask):
            market.claim(params, sender=providers[0])
        market.post_task(params, "cid")
        with pytest.raises(E.WrongValue):
            market.claim(params, sender=providers[0], value=BOND - 1)
        with pytest.raises(E.NotActiveProvider):
            market.claim(params, sender=chain.accounts[7])
        market.claim(params, sender=providers[0])
        with pytest.raises(E.TaskFull):
            market.claim(params, sender=providers[1])
        wide = self._task(market, replicas=3)
        market.post_task(wide, "cid")
        market.claim(wide, sender=providers[0])
        with pytest.raises(E.AlreadyClaimed):
            market.claim(wide, sender=providers[0])
        chain.advance_time(601)
        with pytest.raises(E.ClaimClosed):
            market.claim(wide, sender=providers[1])

    def test_claim_then_commit(
        self, chain: Chain, market: MarketClient, providers: list[str]
    ) -> None:
        p = providers[0]
        params = self._task(market)
        market.post_task(params, "cid")
        receipt = market.claim(params, sender=p)
        commit_by = receipt.event("ReplicaClaimed").args["commitBy"]
        assert commit_by == chain.block_timestamp() + params.commit_timeout
        replica = market.replica(market.task_id(params), p)
        assert replica.state is ReplicaState.CLAIMED and replica.commit_by == commit_by
        with pytest.raises(E.ZeroCommitment):
            market.commit(params, b"\0" * 32, sender=p)
        with pytest.raises(E.WrongReplicaState):
            market.commit(params, h("c"), sender=providers[1])
        commitment = make_commitment(h("out"), h("salt"), p)
        assert commitment == market.commitment_of(h("out"), h("salt"), p)
        receipt = market.commit(params, commitment, sender=p)
        assert receipt.event("ResultCommitted").args["commitment"] == commitment
        assert market.replica(market.task_id(params), p).state is ReplicaState.COMMITTED
        assert market.task_state(market.task_id(params)).committed == 1
        with pytest.raises(E.WrongReplicaState):
            market.commit(params, commitment, sender=p)

    def test_commit_deadline(
        self, chain: Chain, market: MarketClient, providers: list[str]
    ) -> None:
        params = self._task(market)
        market.post_task(params, "cid")
        market.claim(params, sender=providers[0])
        chain.advance_time(params.commit_timeout + 1)
        with pytest.raises(E.CommitDeadlinePassed):
            market.commit(params, h("c"), sender=providers[0])

    def test_reopen(
        self, chain: Chain, market: MarketClient, registry: RegistryClient, providers: list[str]
    ) -> None:
        requester, p = chain.accounts[0], providers[0]
        params = self._task(market, replicas=2)
        market.post_task(params, "cid")
        with pytest.raises(E.WrongReplicaState):
            market.reopen(params, p)
        market.claim(params, sender=p)
        with pytest.raises(E.CommitDeadlineNotPassed):
            market.reopen(params, p)
        chain.advance_time(params.commit_timeout + 1)
        receipt = market.reopen(params, p)
        assert receipt.event("ReplicaReopened").args["slashedBond"] == BOND
        assert market.balance_of(requester) == BOND
        assert registry.reputation(p).slashed == 1
        assert market.replica(market.task_id(params), p).state is ReplicaState.REOPENED
        assert market.task_state(market.task_id(params)).claimed == 0
        market.claim(params, sender=providers[1])  # the slot is free again
        with pytest.raises(E.AlreadyClaimed):
            market.claim(params, sender=p)

    # ------------------------------------------------------------------ market: reveal

    def _claim_commit(
        self, market: MarketClient, params: TaskParams, who: str, out: bytes
    ) -> bytes:
        salt = h("salt-" + who[-6:])
        market.claim(params, make_commitment(out, salt, who), sender=who)
        return salt

    def test_reveal_reverts(self, chain: Chain, market: MarketClient, providers: list[str]) -> None:
        a, b, c = providers[:3]
        params = self._task(market, replicas=3, quorum=2)
        market.post_task(params, "cid")
        with pytest.raises(E.WrongReplicaState) as unclaimed:
            market.reveal(params, h("out"), RESULT_CID, h("s"), sender=c)
        assert unclaimed.value.args_ == {
            "taskId": market.task_id(params),
            "provider": c,
            "state": 0,
        }
        salt = self._claim_commit(market, params, a, h("out"))
        with pytest.raises(E.RevealNotOpen):
            market.reveal(params, h("out"), RESULT_CID, salt, sender=a)
        # b claims but never commits. One of three committed: b is not the last slot to
        # commit, so it may not reveal from its claim (c could still copy it).
        market.claim(params, sender=b)
        with pytest.raises(E.WrongReplicaState) as claimed:
            market.reveal(params, h("out"), RESULT_CID, salt, sender=b)
        assert claimed.value.args_ == {"taskId": market.task_id(params), "provider": b, "state": 1}
        market.claim(params, sender=c)  # two slots still uncommitted: neither is the last
        with pytest.raises(E.WrongReplicaState):
            market.reveal(params, h("out"), RESULT_CID, salt, sender=c)
        chain.advance_time(params.commit_phase_end - chain.block_timestamp() + 1)
        with pytest.raises(E.WrongReplicaState):
            market.reveal(params, h("out"), RESULT_CID, salt, sender=b)
        with pytest.raises(E.EmptyCid):
            market.reveal(params, h("out"), "", salt, sender=a)
        with pytest.raises(E.CommitmentMismatch):
            market.reveal(params, h("other"), RESULT_CID, salt, sender=a)
        with pytest.raises(E.CommitmentMismatch):
            market.reveal(params, h("out"), RESULT_CID, h("wrong salt"), sender=a)
        chain.advance_time(params.reveal_deadline - chain.block_timestamp() + 1)
        with pytest.raises(E.RevealClosed):
            market.reveal(params, h("out"), RESULT_CID, salt, sender=a)

    def test_reveal_opens_once_every_replica_committed(
        self, chain: Chain, market: MarketClient, providers: list[str]
    ) -> None:
        a, b = providers[0], providers[1]
        params = self._task(market, replicas=2, quorum=2)
        market.post_task(params, "cid")
        salt_a = self._claim_commit(market, params, a, h("out"))
        salt_b = h("salt-" + b[-6:])
        claimed = market.claim(params, make_commitment(h("out"), salt_b, b), sender=b)
        # Claiming with a commitment commits in the same transaction.
        assert claimed.event("ReplicaClaimed").args["commitment"] == make_commitment(
            h("out"), salt_b, b
        )
        assert claimed.events_named("ResultCommitted") == []
        assert market.task_state(market.task_id(params)).committed == 2
        receipt = market.reveal(params, h("out"), RESULT_CID, salt_a, sender=a)
        event = receipt.event("ResultRevealed")
        assert event.args["outputHash"] == h("out") and event.args["resultCid"] == RESULT_CID
        assert market.replica(market.task_id(params), a).state is ReplicaState.REVEALED
        assert market.task_state(market.task_id(params)).revealed == 1

    def test_several_events_in_one_log_query(
        self, chain: Chain, market: MarketClient, providers: list[str]
    ) -> None:
        a, b = providers[0], providers[1]
        params = self._task(market, replicas=2, quorum=2)
        other = self._task(market, replicas=1)
        start = chain.block_number() + 1
        market.post_task(params, "cid")
        market.post_task(other, "cid")
        market.claim(other, sender=a)
        salt_a = self._claim_commit(market, params, a, h("good"))
        market.claim(params, sender=b)
        market.reveal(params, h("good"), RESULT_CID, h("unused"), sender=b)
        market.reveal(params, h("good"), RESULT_CID, salt_a, sender=a)
        names = ("TaskPosted", "ReplicaClaimed", "ResultRevealed")
        mine = market.contract.get_logs(
            names, from_block=start, filters={"taskId": market.task_id(params)}
        )
        assert [e.name for e in mine] == [
            "TaskPosted",
            "ReplicaClaimed",
            "ReplicaClaimed",
            "ResultRevealed",
            "ResultRevealed",
        ]
        assert [e.args.get("provider") for e in mine[1:]] == [a, b, b, a]
        assert all(e.args["taskId"] == market.task_id(params) for e in mine)
        # The same as one query per event, merged in chain order.
        one_by_one = [
            e
            for name in names
            for e in market.contract.get_logs(
                name, from_block=start, filters={"taskId": market.task_id(params)}
            )
        ]
        order = sorted(one_by_one, key=lambda e: (e.block_number, e.log_index))
        assert mine == order
        everything = market.contract.get_logs(names, from_block=start)
        assert len(everything) == len(mine) + 2  # the other task's post and claim
        # A filter must name an indexed argument every event has, in the same place.
        with pytest.raises(ChainError, match="same position in every event"):
            market.contract.get_logs(
                ("TaskPosted", "ReplicaClaimed"), from_block=start, filters={"provider": a}
            )
        with pytest.raises(ChainError, match="no event 'Nope'"):
            market.contract.get_logs(("TaskPosted", "Nope"))

    def test_last_replica_reveals_from_its_claim(
        self, chain: Chain, market: MarketClient, registry: RegistryClient, providers: list[str]
    ) -> None:
        requester, a, b = chain.accounts[0], providers[0], providers[1]
        params = self._task(market, replicas=2, quorum=2)
        market.post_task(params, "cid")
        salt_a = self._claim_commit(market, params, a, h("good"))
        market.claim(params, sender=b)  # no commitment: b is the last slot to commit
        with pytest.raises(E.RevealNotOpen):
            market.reveal(params, h("good"), RESULT_CID, salt_a, sender=a)
        with pytest.raises(E.EmptyCid):
            market.reveal(params, h("good"), "", h("any salt"), sender=b)
        # a's result is already fixed by its commitment: b reveals without committing, and
        # the salt it passes is not checked against anything.
        receipt = market.reveal(params, h("good"), RESULT_CID, h("any salt"), sender=b)
        assert receipt.events_named("ResultCommitted") == []
        shown = receipt.event("ResultRevealed").args
        assert (shown["provider"], shown["outputHash"]) == (b, h("good"))
        assert shown["resultCid"] == RESULT_CID
        state = market.task_state(market.task_id(params))
        assert (state.claimed, state.committed, state.revealed) == (2, 2, 1)
        assert state.ready_at == 0
        assert market.replica(market.task_id(params), b).state is ReplicaState.REVEALED
        with pytest.raises(E.WrongReplicaState) as twice:
            market.reveal(params, h("good"), RESULT_CID, h("any salt"), sender=b)
        assert twice.value.args_["state"] == 3
        # Every slot now counts as committed, so a's reveal is open at once, and a committed
        # replica still has to match its own commitment: b's salt or another one will not do.
        with pytest.raises(E.CommitmentMismatch):
            market.reveal(params, h("good"), RESULT_CID, h("any salt"), sender=a)
        with pytest.raises(E.CommitmentMismatch):
            market.reveal(params, h("bad"), RESULT_CID, salt_a, sender=a)
        before = chain.balance(a)
        receipt = market.reveal_and_finalize(params, h("good"), RESULT_CID, salt_a, sender=a)
        settled = market.settlement(receipt)
        assert settled.result is TaskResult.ACCEPTED and settled.winners == 2
        assert (settled.output_hash, settled.result_cid) == (h("good"), RESULT_CID)
        assert settled.refund == 0
        assert chain.balance(a) == before + BOUNTY + BOND - receipt.fee_wei
        assert market.balance_of(a) == 0 and market.balance_of(b) == BOUNTY + BOND
        assert market.balance_of(requester) == 0
        assert registry.reputation(a).won == registry.reputation(b).won == 1
        assert not market.task_state(market.task_id(params)).open

    def test_reveal_from_the_claim_closes_at_the_commit_deadline(
        self, chain: Chain, market: MarketClient, providers: list[str]
    ) -> None:
        a, b = providers[0], providers[1]
        params = self._task(market, replicas=2, quorum=2)
        market.post_task(params, "cid")
        self._claim_commit(market, params, a, h("good"))
        commit_by = market.claim(params, sender=b).event("ReplicaClaimed").args["commitBy"]
        chain.advance_time(params.commit_timeout + 1)
        before = (
            market.task_state(market.task_id(params)),
            market.replica(market.task_id(params), b),
        )
        with pytest.raises(E.CommitDeadlinePassed) as late:
            market.reveal(params, h("good"), RESULT_CID, h("any salt"), sender=b)
        assert late.value.args_ == {"commitBy": commit_by}
        with pytest.raises(E.CommitDeadlinePassed):
            market.reveal_and_finalize(params, h("good"), RESULT_CID, h("any salt"), sender=b)
        assert (
            market.task_state(market.task_id(params)),
            market.replica(market.task_id(params), b),
        ) == before
        assert before[1].state is ReplicaState.CLAIMED
        # Still a no-show: anyone may reopen it and slash its bond.
        assert market.reopen(params, b).event("ReplicaReopened").args["provider"] == b

    def test_one_replica_settles_in_claim_and_reveal(
        self, chain: Chain, market: MarketClient, registry: RegistryClient, providers: list[str]
    ) -> None:
        requester, p = chain.accounts[0], providers[0]
        params = self._task(market, replicas=1, quorum=1)
        market.post_task(params, "bundle")
        claimed = market.claim(params, sender=p)
        assert claimed.event("ReplicaClaimed").args["commitment"] == b"\0" * 32
        before = chain.balance(p)
        receipt = market.reveal_and_finalize(params, h("good"), RESULT_CID, b"\0" * 32, sender=p)
        assert receipt.events_named("ResultCommitted") == []
        assert receipt.event("ResultRevealed").args["provider"] == p
        settled = market.settlement(receipt)
        assert settled.result is TaskResult.ACCEPTED and settled.winners == 1
        assert (settled.output_hash, settled.result_cid) == (h("good"), RESULT_CID)
        assert settled.refund == 0
        assert chain.balance(p) == before + BOUNTY + BOND - receipt.fee_wei
        assert market.balance_of(p) == 0 and market.balance_of(requester) == 0
        assert registry.reputation(p).won == 1
        assert not market.task_state(market.task_id(params)).open
        assert market.replica(market.task_id(params), p).state is ReplicaState.NONE

    def test_market_assigned_task_claim_and_finalize(
        self, chain: Chain, market: MarketClient, registry: RegistryClient, providers: list[str]
    ) -> None:
        requester, assignee, other = chain.accounts[0], providers[0], providers[1]
        params = self._task(market, assignee=assignee)
        assert params.assigned and params.single_shot
        market.post_task(params, "bundle")
        with pytest.raises(E.NotAssignee) as not_assignee:
            market.claim(params, sender=other)
        assert not_assignee.value.args_ == {"caller": other, "assignee": assignee}
        with pytest.raises(E.NotAssignee):
            market.claim_and_finalize(params, h("good"), RESULT_CID, sender=other)
        with pytest.raises(E.EmptyCid):
            market.claim_and_finalize(params, h("good"), "", sender=assignee)
        before = chain.balance(assignee)
        receipt = market.claim_and_finalize(params, h("good"), RESULT_CID, sender=assignee)
        assert [e.name for e in receipt.events if e.address == market.address] == [
            "ReplicaClaimed",
            "ResultRevealed",
            "TaskFinalized",
            "Withdrawn",
        ]
        settled = market.settlement(receipt)
        assert settled.result is TaskResult.ACCEPTED and settled.winners == 1
        assert (settled.output_hash, settled.result_cid, settled.refund) == (
            h("good"),
            RESULT_CID,
            0,
        )
        assert chain.balance(assignee) == before + BOUNTY - receipt.fee_wei
        assert market.balance_of(assignee) == 0 and market.balance_of(requester) == 0
        assert registry.reputation(assignee).won == 1
        assert not market.task_state(market.task_id(params)).open
        with pytest.raises(E.UnknownTask):
            market.claim_and_finalize(params, h("good"), RESULT_CID, sender=assignee)
        windowed = self._task(market, challenge_window=60, assignee=other)
        market.post_task(windowed, "bundle")
        with pytest.raises(E.NotSingleShot):
            market.claim_and_finalize(windowed, h("good"), RESULT_CID, sender=other)
        open_task = self._task(market)
        market.post_task(open_task, "bundle")
        with pytest.raises(E.NotAssignedTask):
            market.claim_and_finalize(open_task, h("good"), RESULT_CID, sender=other)
        several = dataclasses.replace(self._task(market, assignee=assignee), replicas=3, quorum=2)
        with pytest.raises(E.InvalidReplicas) as invalid:
            market.post_task(several, "bundle")
        assert invalid.value.args_ == {"replicas": 3, "maxReplicas": 1}

    # ------------------------------------------------------------------ market: settlement

    def test_finalize_accepts_majority_and_slashes(
        self, chain: Chain, market: MarketClient, registry: RegistryClient, providers: list[str]
    ) -> None:
        requester = chain.accounts[0]
        a, b, c, d = providers
        params = self._task(market, replicas=4, quorum=3)
        market.post_task(params, "bundle")
        salts = {}
        for who, out in ((a, h("good")), (b, h("good")), (c, h("good")), (d, h("bad"))):
            salts[who] = self._claim_commit(market, params, who, out)
        for who in (a, b):
            market.reveal(params, h("good"), RESULT_CID, salts[who], sender=who)
        market.reveal(params, h("bad"), OTHER_CID, salts[d], sender=d)
        # c revealed nothing: a no-show. Reveals are still open, so settlement is too early.
        with pytest.raises(E.TooEarly):
            market.finalize(params)
        chain.advance_time(params.reveal_deadline - chain.block_timestamp() + 1)
        # Two of four reveal "good": below the quorum of three. A bystander settles.
        receipt = market.finalize(params, sender=chain.accounts[8])
        settled = market.settlement(receipt)
        assert settled.result is TaskResult.NO_QUORUM and settled.result_cid == ""
        assert settled.refund == 4 * BOUNTY + BOND  # the no-show's bond
        assert market.balance_of(a) == BOND and market.balance_of(d) == BOND
        assert market.balance_of(c) == 0
        assert market.balance_of(requester) == 4 * BOUNTY + BOND
        assert registry.reputation(c).slashed == 1 and registry.reputation(a).won == 0
        assert not market.task_state(market.task_id(params)).open

    def test_finalize_pays_the_quorum(
        self, chain: Chain, market: MarketClient, registry: RegistryClient, providers: list[str]
    ) -> None:
        requester = chain.accounts[0]
        a, b, c = providers[:3]
        params = self._task(market, replicas=3, quorum=2)
        market.post_task(params, "bundle")
        outs = {a: h("good"), b: h("good"), c: h("bad")}
        salts = {who: self._claim_commit(market, params, who, out) for who, out in outs.items()}
        for who, out in outs.items():
            market.reveal(
                params, out, RESULT_CID if out == h("good") else OTHER_CID, salts[who], sender=who
            )
        # Everyone revealed and there is no challenge window: settlement is due now.
        assert market.settle_time(params) <= chain.block_timestamp()
        reveals, cid = market.settlement_inputs(params)
        assert cid == RESULT_CID
        assert [r.provider for r in reveals] == sorted(outs, key=lambda x: int(x, 16))
        # The requester settles: its own refund is paid at once, the rest is credited.
        before = chain.balance(requester)
        receipt = market.finalize(params, sender=requester)
        settled = market.settlement(receipt)
        assert settled.result is TaskResult.ACCEPTED
        assert (settled.output_hash, settled.result_cid) == (h("good"), RESULT_CID)
        assert settled.winners == 2 and settled.payout_per_winner == BOUNTY + BOND
        assert settled.refund == BOUNTY + BOND
        assert chain.balance(requester) == before + BOUNTY + BOND - receipt.fee_wei
        assert market.balance_of(a) == market.balance_of(b) == BOUNTY + BOND
        assert market.balance_of(c) == 0 and market.balance_of(requester) == 0
        assert registry.reputation(a).won == 1
        assert (registry.reputation(c).lost, registry.reputation(c).slashed) == (1, 1)
        with pytest.raises(E.UnknownTask):
            market.finalize(params, reveals=reveals, result_cid=cid)

    def test_finalize_checks_the_reveal_list(
        self, chain: Chain, market: MarketClient, providers: list[str]
    ) -> None:
        a, b = sorted(providers[:2], key=lambda x: int(x, 16))
        params = self._task(market, replicas=2, quorum=2)
        market.post_task(params, "bundle")
        for who in (a, b):
            salt = self._claim_commit(market, params, who, h("good"))
            # reveals open only once both committed: reveal in a second pass
            del salt
        for who in (a, b):
            market.reveal(params, h("good"), RESULT_CID, h("salt-" + who[-6:]), sender=who)
        good = [RevealEntry(p, h("good"), result_cid_hash(RESULT_CID)) for p in (a, b)]
        with pytest.raises(E.BadRevealList) as short:
            market.finalize(params, reveals=good[:1], result_cid=RESULT_CID)
        assert short.value.args_ == {"index": 1}
        with pytest.raises(E.BadRevealList):
            market.finalize(params, reveals=good[::-1], result_cid=RESULT_CID)
        forged = [good[0], RevealEntry(b, h("evil"), result_cid_hash(RESULT_CID))]
        with pytest.raises(E.RevealDataMismatch) as mismatch:
            market.finalize(params, reveals=forged, result_cid=RESULT_CID)
        assert mismatch.value.args_ == {"provider": b}
        with pytest.raises(E.ResultCidMismatch):
            market.finalize(params, reveals=good, result_cid=OTHER_CID)
        assert market.settlement(market.finalize(params)).result is TaskResult.ACCEPTED

    def test_reveal_and_finalize_pays_the_caller(
        self, chain: Chain, market: MarketClient, providers: list[str]
    ) -> None:
        a, b = providers[:2]
        params = self._task(market, replicas=2, quorum=2)
        market.post_task(params, "bundle")
        salt_a = self._claim_commit(market, params, a, h("good"))
        salt_b = self._claim_commit(market, params, b, h("good"))
        market.reveal(params, h("good"), RESULT_CID, salt_a, sender=a)
        before = chain.balance(b)
        receipt = market.reveal_and_finalize(params, h("good"), RESULT_CID, salt_b, sender=b)
        settled = market.settlement(receipt)
        assert settled.result is TaskResult.ACCEPTED and settled.winners == 2
        assert chain.balance(b) == before + BOUNTY + BOND - receipt.fee_wei
        assert market.balance_of(b) == 0 and market.balance_of(a) == BOUNTY + BOND

    # ------------------------------------------------------------------ market: challenges

    def _revealed_task(self, market: MarketClient, providers: list[str], window: int) -> TaskParams:
        params = self._task(market, replicas=1, quorum=1, challenge_window=window)
        market.post_task(params, "bundle")
        salt = self._claim_commit(market, params, providers[0], h("good"))
        market.reveal(params, h("good"), RESULT_CID, salt, sender=providers[0])
        return params

    def _panel_votes(self, market: MarketClient, params: TaskParams, upheld: bool) -> None:
        """Every panelist of the task's challenge commits, then reveals, ``upheld``."""
        tid = market.task_id(params)
        record = market.challenge_of(tid)
        assert record is not None
        for member in record.panel:
            market.commit_vote(tid, upheld, h(f"salt {member}"), sender=member)
        for member in record.panel:
            market.reveal_vote(tid, upheld, h(f"salt {member}"), sender=member)

    def test_challenge_reverts(
        self, chain: Chain, market: MarketClient, providers: list[str]
    ) -> None:
        challenger = chain.accounts[5]
        closed = self._revealed_task(market, providers, window=0)
        with pytest.raises(E.ChallengeClosed):
            market.challenge(closed, EVIDENCE, sender=challenger)
        params = self._revealed_task(market, providers, window=3600)
        with pytest.raises(E.WrongValue):
            market.challenge(params, EVIDENCE, sender=challenger, value=1)
        with pytest.raises(E.SelfChallenge):
            market.challenge(params, EVIDENCE, sender=providers[0])
        receipt = market.challenge(params, EVIDENCE, sender=challenger)
        assert receipt.event("TaskChallenged").args["bond"] == CHALLENGE_BOND
        assert receipt.event("TaskChallenged").args["evidenceCid"] == EVIDENCE
        assert market.challenger_of(market.task_id(params)) == challenger
        assert market.task_state(market.task_id(params)).challenge is ChallengeState.PENDING
        with pytest.raises(E.AlreadyChallenged):
            market.challenge(params, EVIDENCE, sender=challenger)
        chain.advance_time(3601)
        with pytest.raises(E.ChallengePending):
            market.finalize(params)
        with pytest.raises(E.ResolveTooEarly):
            market.resolve(params, sender=challenger)
        with pytest.raises(E.NotPanelist):
            market.commit_vote(market.task_id(params), True, h("s"), sender=challenger)
        self._panel_votes(market, params, False)
        market.resolve(params)
        with pytest.raises(E.NoPendingChallenge):
            market.resolve(params)

    def test_challenge_upheld_overturns(
        self, chain: Chain, market: MarketClient, registry: RegistryClient, providers: list[str]
    ) -> None:
        requester, challenger, p = chain.accounts[0], chain.accounts[5], providers[0]
        params = self._revealed_task(market, providers, window=3600)
        market.challenge(params, EVIDENCE, sender=challenger)
        self._panel_votes(market, params, True)
        receipt = market.resolve(params)
        assert receipt.event("ChallengeResolved").args["upheld"] is True
        chain.advance_time(3601)
        settled = market.settlement(market.finalize(params, sender=chain.accounts[8]))
        assert settled.result is TaskResult.OVERTURNED and settled.winners == 0
        # The panel's fee comes first from the one bond; the challenger is made whole.
        fee = min(CHALLENGE_BOND // 2, BOND)
        reward = min(CHALLENGE_BOND // 2, BOND - fee)
        assert market.balance_of(challenger) == CHALLENGE_BOND + reward
        stake_taken = min(MIN_STAKE, BOND)
        paid = fee - fee % 3  # three equal shares; the remainder stays with the requester
        assert market.balance_of(requester) == BOUNTY + BOND - paid - reward + stake_taken
        assert market.balance_of(p) == 0 and registry.stake_of(p) == MIN_STAKE - stake_taken
        assert registry.reputation(p).lost == 1

    def test_challenge_rejected_pays_winners(
        self, chain: Chain, market: MarketClient, providers: list[str]
    ) -> None:
        challenger, p = chain.accounts[5], providers[0]
        params = self._revealed_task(market, providers, window=3600)
        market.challenge(params, EVIDENCE, sender=challenger)
        self._panel_votes(market, params, False)
        market.resolve(params)
        with pytest.raises(E.TooEarly):
            market.finalize(params)
        chain.advance_time(3601)
        settled = market.settlement(market.finalize(params))
        assert settled.result is TaskResult.ACCEPTED
        panel_fee = CHALLENGE_BOND // 2 - (CHALLENGE_BOND // 2) % 3
        assert market.balance_of(p) == BOUNTY + BOND + CHALLENGE_BOND - panel_fee
        assert market.balance_of(challenger) == 0

    # ------------------------------------------------------------------ output log

    def test_output_log(self, chain: Chain, output_log: OutputLogClient) -> None:
        a, b = chain.accounts[1], chain.accounts[2]
        receipt = output_log.log_output(h("task1"), h("out1"), RESULT_CID, sender=a)
        assert receipt.event("OutputLogged").args["sender"] == a
        output_log.log_output(h("task2"), h("out2"), OTHER_CID, sender=b)
        output_log.log_output(h("task1"), h("out3"), OTHER_CID, sender=b)
        entries = output_log.entries(subject=h("task1"))
        assert [(e.sender, e.output_hash, e.result_cid) for e in entries] == [
            (a, h("out1"), RESULT_CID),
            (b, h("out3"), OTHER_CID),
        ]
        assert [e.subject for e in output_log.entries(sender=b)] == [h("task2"), h("task1")]
        with pytest.raises(E.EmptyResultCid):
            output_log.log_output(h("task1"), h("out1"), "", sender=a)


class TestEmbeddedChain(ChainConformance):
    @classmethod
    def open_chain(cls) -> Chain:
        return EmbeddedChain()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _anvil_keys() -> list[bytes]:
    Account.enable_unaudited_hdwallet_features()
    return [
        bytes(Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").key)
        for i in range(10)
    ]


def anvil_required() -> bool:
    """Whether a missing anvil fails the run instead of skipping it: in CI (``CI=true``) and
    with ``CHEFSPLAN_REQUIRE_INTEGRATION=1``, as every integration test honors."""
    ci = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
    return ci or os.environ.get("CHEFSPLAN_REQUIRE_INTEGRATION", "").strip() == "1"


def need_anvil(path: Path) -> None:
    """Skip unless anvil is at ``path``; fail instead when it is required."""
    if path.exists():
        return
    reason = f"anvil is not installed at {path}: run `npm install` in the repo root"
    if anvil_required():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def test_a_missing_anvil_fails_when_required(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "anvil"
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("CHEFSPLAN_REQUIRE_INTEGRATION", raising=False)
    with pytest.raises(pytest.skip.Exception, match="anvil is not installed"):
        need_anvil(missing)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="anvil is not installed"):
        need_anvil(missing)
    monkeypatch.delenv("CI")
    monkeypatch.setenv("CHEFSPLAN_REQUIRE_INTEGRATION", "1")
    with pytest.raises(pytest.fail.Exception, match="anvil is not installed"):
        need_anvil(missing)


@pytest.mark.integration
class TestAnvilChain(ChainConformance):
    """The same suite on a real EVM node (anvil)."""

    @pytest.fixture(scope="class")
    @classmethod
    def chain(cls) -> Iterator[Chain]:
        url = os.environ.get("CHEFSPLAN_TEST_RPC_URL", "").strip()
        process = None
        if not url:
            need_anvil(ANVIL)
            port = _free_port()
            process = subprocess.Popen(
                [str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--silent"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            url = f"http://127.0.0.1:{port}"
        try:
            chain = cls._connect(url)
            with chain:
                yield chain
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=10)

    @staticmethod
    def _connect(url: str) -> Chain:
        deadline = time.monotonic() + 20
        while True:
            try:
                return JsonRpcChain(url, _anvil_keys(), timeout_s=20)
            except ChainError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
