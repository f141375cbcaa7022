"""RegistryIndex against a real in-process EVM, real signed offers and a real content store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from eth_tester import EthereumTester
from web3 import Web3
from web3.providers.eth_tester import EthereumTesterProvider
from web3.types import TxParams, Wei

from chefsplan_agents.bundles import Offer, OfferedModel, issue_offer
from chefsplan_agents.chain import BoundContract, EmbeddedChain, Event, load_artifact
from chefsplan_agents.errors import InvalidOfferTags, RegistryError
from chefsplan_agents.identity import Identity
from chefsplan_agents.registry import (
    OUTCOME_AUDIT_PASSED,
    OUTCOME_LOST,
    OUTCOME_WON,
    RegistryClient,
    Reputation,
)
from chefsplan_agents.registry._index import (
    ChainLogSource,
    RegistryIndex,
    Web3LogSource,
    reputation_score,
)
from chefsplan_agents.registry._offers import OfferStatus, offer_hash
from chefsplan_agents.storage import MemoryCidStore

ETHER = 10**18
MIN_STAKE = ETHER // 100
COOLDOWN = 3600
SMOL = "smollm2-135m"
SMOL_SHA = "a" * 64
QWEN = "qwen2.5-0.5b"
QWEN_SHA = "b" * 64


@dataclass
class Net:
    chain: EmbeddedChain
    contract: BoundContract
    client: RegistryClient
    store: MemoryCidStore
    operator: str  # stands in for the registry's market

    def offer(
        self,
        ident: Identity,
        *,
        model: str = SMOL,
        sha: str = SMOL_SHA,
        tps: float = 80.0,
        price: int = 1000,
        issuer: Identity | None = None,
        chain_id: int | None = None,
        registry: str | None = None,
        bound: bool = True,
        tags: dict[str, str] | None = None,
    ) -> str:
        """A signed offer token for ``ident`` (issued by ``issuer``, default itself), naming
        this chain and registry (others when given; none when not ``bound``)."""
        signer = issuer or ident
        offer = Offer(
            model=OfferedModel(name=model, sha256=sha, quantization="Q4_1", context_length=2048),
            generation_tokens_per_s=tps,
            prefill_tokens_per_s=tps * 3,
            price_per_1k_tokens_wei=price,
            endpoint="http://127.0.0.1:8700",
            evm_address=signer.address,
            did=signer.did,
            chain_id=(chain_id or self.chain.chain_id) if bound else None,
            registry=(registry or self.contract.address) if bound else None,
            tags=tags or {},
        )
        return issue_offer(offer, signer)

    def provider(self, *, stake: int = MIN_STAKE, **offer_kwargs: object) -> Identity:
        """A funded identity registered with a stored, signed offer."""
        ident = self.funded()
        token = self.offer(ident, **offer_kwargs)  # type: ignore[arg-type]
        cid = self.store.put(token.encode())
        self.client.register(ident.did, cid, offer_hash(token), stake=stake, sender=ident.address)
        return ident

    def funded(self) -> Identity:
        ident = Identity.generate()
        self.chain.add_account(ident.export_secrets()[1])
        self.chain.transfer(ident.address, ETHER)
        return ident


@pytest.fixture(scope="module")
def module_net() -> Iterator[Net]:
    with EmbeddedChain() as chain:
        address = chain.deploy("AgentRegistry", MIN_STAKE, COOLDOWN)
        contract = chain.contract("AgentRegistry", address)
        client = RegistryClient(contract)
        operator = chain.accounts[9]
        client.set_market(operator)
        yield Net(chain, contract, client, MemoryCidStore(), operator)


@pytest.fixture
def net(module_net: Net) -> Iterator[Net]:
    snapshot = module_net.chain.snapshot()
    yield replace(module_net, store=MemoryCidStore())
    module_net.chain.revert(snapshot)


@pytest.fixture
def index() -> Iterator[RegistryIndex]:
    with RegistryIndex(":memory:") as idx:
        yield idx


def refresh(index: RegistryIndex, net: Net) -> None:
    index.sync(net.contract)
    index.resolve_offers(net.store)


# ---------------------------------------------------------------------------- queries


def test_sync_resolves_offers_and_queries_filter(net: Net, index: RegistryIndex) -> None:
    fast = net.provider(tps=120.0, price=500, stake=3 * MIN_STAKE)
    slow = net.provider(tps=40.0, price=200)
    pricey = net.provider(tps=90.0, price=5000, stake=2 * MIN_STAKE)
    qwen = net.provider(model=QWEN, sha=QWEN_SHA, tps=60.0, price=100)

    result = index.sync(net.contract)
    assert result.logs == 4 and result.to_block == net.chain.block_number()
    assert index.count(OfferStatus.PENDING) == 4
    assert index.query() == []  # nothing is returned before its offer is verified

    resolved = index.resolve_offers(net.store)
    assert (resolved.valid, resolved.invalid, resolved.missing) == (4, 0, 0)

    def addresses(**kw: object) -> set[str]:
        return {p.address for p in index.query(**kw)}  # type: ignore[arg-type]

    assert addresses() == {fast.address, slow.address, pricey.address, qwen.address}
    assert addresses(model=SMOL) == {fast.address, slow.address, pricey.address}
    assert addresses(model_sha256=QWEN_SHA.upper()) == {qwen.address}
    assert addresses(model=SMOL, min_tokens_per_s=80) == {fast.address, pricey.address}
    assert addresses(max_price=500) == {fast.address, slow.address, qwen.address}
    assert addresses(min_stake=2 * MIN_STAKE) == {fast.address, pricey.address}
    assert addresses(model=SMOL, max_price=499) == {slow.address}
    assert addresses(model="nope") == set()

    record = index.provider(fast.address)
    assert record is not None and record.offer is not None
    assert record.did == fast.did and record.stake == 3 * MIN_STAKE and record.active
    assert record.offer.model_name == SMOL and record.offer.model_sha256 == SMOL_SHA
    assert record.offer.quantization == "Q4_1" and record.offer.context_length == 2048
    assert record.offer.generation_tokens_per_s == 120.0
    assert record.offer.prefill_tokens_per_s == 360.0
    assert record.offer.price_per_1k_tokens_wei == 500
    assert record.offer.endpoint == "http://127.0.0.1:8700"
    assert record.offer.expires_at is not None
    assert index.query(limit=2) == index.query()[:2]


def test_ranking_by_reputation_then_stake(net: Net, index: RegistryIndex) -> None:
    rich = net.provider(stake=5 * MIN_STAKE)
    proven = net.provider(stake=MIN_STAKE)
    loser = net.provider(stake=9 * MIN_STAKE)
    newcomer = net.provider(stake=2 * MIN_STAKE)
    for _ in range(3):
        net.client.record_outcomes(
            {proven.address: OUTCOME_WON, loser.address: OUTCOME_LOST}, sender=net.operator
        )
    # A panel kept one of its results: a win and a passed audit.
    net.client.record_outcomes({proven.address: OUTCOME_AUDIT_PASSED}, sender=net.operator)
    refresh(index, net)

    ranked = [p.address for p in index.query()]
    # A clean record first; newcomers by stake; a record of losses last despite the big stake.
    assert ranked == [proven.address, rich.address, newcomer.address, loser.address]
    top = index.query(limit=1)[0]
    assert top.reputation == Reputation(won=4, audits_passed=1)
    assert top.score == pytest.approx(reputation_score(Reputation(won=4, audits_passed=1)))
    bottom = index.provider(loser.address)
    assert bottom is not None and bottom.reputation == Reputation(lost=3, slashed=3)


def test_reputation_score_orders_records() -> None:
    newcomer = reputation_score(Reputation())
    assert reputation_score(Reputation(won=10)) > reputation_score(Reputation(won=2)) > newcomer
    assert newcomer > reputation_score(Reputation(won=1, slashed=10))
    # More evidence at the same rate ranks higher; a failed audit counts against.
    assert reputation_score(Reputation(won=20, slashed=2)) > reputation_score(Reputation(won=2))
    assert reputation_score(Reputation(won=5, audits_failed=1)) < reputation_score(
        Reputation(won=5)
    )
    assert 0 < reputation_score(Reputation(slashed=1000)) < newcomer < 1


def test_offer_update_replaces_old_terms(net: Net, index: RegistryIndex) -> None:
    ident = net.provider(price=1000)
    refresh(index, net)
    token = net.offer(ident, model=QWEN, sha=QWEN_SHA, price=10)
    cid = net.store.put(token.encode())
    net.client.update_offer(cid, offer_hash(token), sender=ident.address)

    index.sync(net.contract)
    pending = index.provider(ident.address)
    assert pending is not None and pending.offer_status is OfferStatus.PENDING
    assert pending.offer is None and pending.offer_cid == cid
    assert index.query(model=SMOL) == []  # the old terms are gone at once

    assert index.resolve_offers(net.store).valid == 1
    [record] = index.query(model=QWEN)
    assert record.offer is not None and record.offer.price_per_1k_tokens_wei == 10
    assert record.offer_hash == offer_hash(token)
    assert index.query(model=SMOL) == []


def test_unstake_leaves_active_results_and_withdraw_zeroes_stake(
    net: Net, index: RegistryIndex
) -> None:
    stays = net.provider()
    leaves = net.provider()
    net.client.add_stake(MIN_STAKE, sender=leaves.address)
    refresh(index, net)
    assert {p.address for p in index.query()} == {stays.address, leaves.address}
    record = index.provider(leaves.address)
    assert record is not None and record.stake == 2 * MIN_STAKE

    net.client.request_unstake(sender=leaves.address)
    index.sync(net.contract)
    assert [p.address for p in index.query()] == [stays.address]
    inactive = index.query(active_only=False)
    assert {p.address for p in inactive} == {stays.address, leaves.address}
    record = index.provider(leaves.address)
    assert record is not None and not record.active and record.unstake_available_at > 0

    net.chain.advance_time(COOLDOWN + 1)
    net.client.withdraw_stake(sender=leaves.address)
    index.sync(net.contract)
    record = index.provider(leaves.address)
    assert record is not None and record.stake == 0
    assert index.query(active_only=False, min_stake=1) == index.query()
    # Withdrawing ends the registration: its DID no longer names the address, anywhere.
    assert record.did == "" and record.offer_status is OfferStatus.INVALID
    assert record.offer_reason is not None and "unregistered" in record.offer_reason
    assert index.query(did=leaves.did, active_only=False) == []
    assert index.resolve_offers(net.store).checked == 0


def test_an_address_registers_again_after_withdrawing(net: Net, index: RegistryIndex) -> None:
    ident = net.provider()
    net.client.record_outcomes({ident.address: OUTCOME_WON}, sender=net.operator)
    net.client.request_unstake(sender=ident.address)
    net.chain.advance_time(COOLDOWN + 1)
    net.client.withdraw_stake(sender=ident.address)
    refresh(index, net)
    assert index.query(active_only=False) == []
    # Back with a fresh offer: a new registration, the same reputation counters.
    token = net.offer(ident, price=7)
    cid = net.store.put(token.encode())
    net.client.register(ident.did, cid, offer_hash(token), stake=MIN_STAKE, sender=ident.address)
    refresh(index, net)
    [record] = index.query(did=ident.did)
    assert record.address == ident.address and record.active and record.stake == MIN_STAKE
    assert record.offer is not None and record.offer.price_per_1k_tokens_wei == 7
    assert record.reputation.won == 1
    assert net.client.count() == 1


# ---------------------------------------------------------------------------- DID squatting


def test_a_squatter_naming_the_victims_did_neither_blocks_nor_impersonates_it(
    net: Net, index: RegistryIndex
) -> None:
    victim, squatter, accomplice = net.funded(), net.funded(), net.funded()
    token = net.offer(victim)
    cid = net.store.put(token.encode())
    # The squatter front-runs the victim with the victim's DID and the victim's own offer
    # (signed by the victim, naming the victim's address)...
    net.client.register(
        victim.did, cid, offer_hash(token), stake=MIN_STAKE, sender=squatter.address
    )
    # ...and an accomplice with the victim's DID and an offer it signed itself.
    forged = net.offer(accomplice)
    forged_cid = net.store.put(forged.encode())
    net.client.register(
        victim.did, forged_cid, offer_hash(forged), stake=MIN_STAKE, sender=accomplice.address
    )
    # The victim is not locked out.
    net.client.register(victim.did, cid, offer_hash(token), stake=MIN_STAKE, sender=victim.address)
    refresh(index, net)
    # Only the registration the DID's key stands behind answers for the DID.
    assert [p.address for p in index.query(did=victim.did)] == [victim.address]
    assert [p.address for p in index.query()] == [victim.address]
    flagged = {p.address: p.offer_reason or "" for p in index.flagged()}
    assert "offer names address" in flagged[squatter.address]
    assert "offer credential rejected" in flagged[accomplice.address]


def test_an_offer_must_name_this_chain_and_registry(net: Net, index: RegistryIndex) -> None:
    elsewhere = net.provider(chain_id=net.chain.chain_id + 1)
    other_registry = net.provider(registry="0x" + "11" * 20)
    unbound = net.provider(bound=False)
    good = net.provider()
    refresh(index, net)
    assert [p.address for p in index.query()] == [good.address]
    flagged = {p.address: p.offer_reason or "" for p in index.flagged()}
    assert f"names chain {net.chain.chain_id + 1}" in flagged[elsewhere.address]
    assert "names registry 0x1111" in flagged[other_registry.address]
    assert "names chain None" in flagged[unbound.address]


def test_resolving_needs_the_chain_id(net: Net) -> None:
    net.provider()
    logs = ChainLogSource(net.contract)(0, net.chain.block_number())
    with RegistryIndex() as idx:
        idx.apply_logs(logs)  # binds the registry, not the chain
        with pytest.raises(RegistryError, match="does not know its chain id"):
            idx.resolve_offers(net.store)
    with RegistryIndex(chain_id=net.chain.chain_id) as idx:
        idx.apply_logs(logs)
        assert idx.resolve_offers(net.store).valid == 1
    with pytest.raises(RegistryError, match="on chain"):
        idx2 = RegistryIndex(chain_id=5)
        try:
            idx2.sync(net.contract)
        finally:
            idx2.close()


# ---------------------------------------------------------------------------- bad offers


def test_bad_offers_are_flagged_with_a_reason_and_never_returned(
    net: Net, index: RegistryIndex
) -> None:
    good = net.provider()

    tampered = net.funded()
    token = net.offer(tampered)
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload[:-4]}AAAA.{signature}".encode()  # hash matches, signature not
    net.client.register(
        tampered.did,
        net.store.put(forged),
        offer_hash(forged),
        stake=MIN_STAKE,
        sender=tampered.address,
    )

    mismatch = net.funded()
    token = net.offer(mismatch)
    net.client.register(
        mismatch.did,
        net.store.put(token.encode()),
        offer_hash(token + "x"),
        stake=MIN_STAKE,
        sender=mismatch.address,
    )

    impostor = net.funded()
    victim = Identity.generate()
    token = net.offer(victim)  # a valid offer, but signed by another DID
    net.client.register(
        impostor.did,
        net.store.put(token.encode()),
        offer_hash(token),
        stake=MIN_STAKE,
        sender=impostor.address,
    )

    wrong_address = net.funded()
    other = Identity(wrong_address.export_secrets()[0], Identity.generate().export_secrets()[1])
    token = net.offer(other)  # same DID, names another EVM address
    net.client.register(
        wrong_address.did,
        net.store.put(token.encode()),
        offer_hash(token),
        stake=MIN_STAKE,
        sender=wrong_address.address,
    )

    index.sync(net.contract)
    result = index.resolve_offers(net.store)
    assert (result.valid, result.invalid, result.missing) == (1, 4, 0)
    assert [p.address for p in index.query(active_only=False)] == [good.address]

    reasons = {p.address: p.offer_reason or "" for p in index.flagged()}
    assert all(p.offer_status is OfferStatus.INVALID for p in index.flagged())
    assert "credential rejected" in reasons[tampered.address]
    assert "hash mismatch" in reasons[mismatch.address]
    assert "credential rejected" in reasons[impostor.address]
    assert victim.did in reasons[impostor.address] or impostor.did in reasons[impostor.address]
    assert "names address" in reasons[wrong_address.address]
    # Invalid offers are not fetched again until the provider registers another one.
    assert index.resolve_offers(net.store).checked == 0


def test_offer_bytes_that_do_not_match_their_cid_are_flagged(
    net: Net, index: RegistryIndex
) -> None:
    ident = net.funded()
    token = net.offer(ident)
    cid = net.store.put(token.encode())
    # The disk under the store flips a byte: the store's re-hash must catch it.
    [key] = net.store._blocks
    net.store._blocks[key] = net.store._blocks[key][:-1] + b"!"
    net.client.register(ident.did, cid, offer_hash(token), stake=MIN_STAKE, sender=ident.address)
    bad_cid = net.funded()
    net.client.register(
        bad_cid.did, "not-a-cid", offer_hash(token), stake=MIN_STAKE, sender=bad_cid.address
    )
    index.sync(net.contract)
    assert index.resolve_offers(net.store).invalid == 2
    reasons = {p.address: p.offer_reason or "" for p in index.flagged()}
    assert reasons[ident.address].startswith(f"offer {cid} unreadable")
    assert reasons[bad_cid.address].startswith("offer not-a-cid unreadable")
    assert index.query() == []


def test_missing_offer_is_retried_until_the_store_has_it(net: Net, index: RegistryIndex) -> None:
    ident = net.funded()
    token = net.offer(ident)
    elsewhere = MemoryCidStore()
    cid = elsewhere.put(token.encode())
    net.client.register(ident.did, cid, offer_hash(token), stake=MIN_STAKE, sender=ident.address)
    index.sync(net.contract)

    assert index.resolve_offers(net.store).missing == 1
    [flag] = index.flagged()
    assert flag.offer_status is OfferStatus.MISSING and cid in (flag.offer_reason or "")
    assert index.query() == []

    assert net.store.put(token.encode()) == cid
    assert index.resolve_offers(net.store).valid == 1
    assert [p.address for p in index.query()] == [ident.address]


def test_expired_offers_are_left_out(net: Net, index: RegistryIndex) -> None:
    from datetime import UTC, datetime, timedelta

    ident = net.provider()
    refresh(index, net)
    record = index.provider(ident.address)
    assert record is not None and record.offer is not None and record.offer.expires_at
    expiry = datetime.fromtimestamp(record.offer.expires_at, tz=UTC)
    assert len(index.query(at=expiry - timedelta(seconds=1))) == 1
    assert index.query(at=expiry + timedelta(seconds=1)) == []


# ---------------------------------------------------------------------------- ingestion


def test_resync_and_reapplied_logs_are_idempotent(net: Net, index: RegistryIndex) -> None:
    ident = net.provider()
    net.client.add_stake(MIN_STAKE, sender=ident.address)
    first = index.sync(net.contract)
    assert first.logs == 2
    before = index.provider(ident.address)

    again = index.sync(net.contract)
    assert again.logs == 0 and again.pages == 0 and again.from_block == first.to_block + 1

    logs = ChainLogSource(net.contract)(0, net.chain.block_number())
    assert index.apply_logs(logs) == 0
    assert index.apply_logs(list(reversed(logs))) == 0
    assert index.provider(ident.address) == before
    assert index.count() == 1


def test_incremental_sync_reads_only_new_blocks(net: Net, index: RegistryIndex) -> None:
    first_provider = net.provider()
    first = index.sync(net.contract, page_blocks=3)
    assert index.last_block == first.to_block == net.chain.block_number()
    assert first.pages == -(-(first.to_block + 1) // 3)

    calls: list[tuple[int, int]] = []
    source = ChainLogSource(net.contract)

    def recording(from_block: int, to_block: int) -> list[Event]:
        calls.append((from_block, to_block))
        return source(from_block, to_block)

    second_provider = net.provider()
    net.client.record_outcomes({first_provider.address: OUTCOME_WON}, sender=net.operator)
    head = net.chain.block_number()
    second = index.sync(recording, to_block=head)
    assert calls == [(first.to_block + 1, head)]
    assert second.logs == 2 and index.last_block == head
    assert index.count() == 2
    record = index.provider(first_provider.address)
    assert record is not None and record.reputation.won == 1
    assert index.provider(second_provider.address) is not None


def test_failed_batch_applies_nothing(net: Net, index: RegistryIndex) -> None:
    ident = net.provider()
    logs = ChainLogSource(net.contract)(0, net.chain.block_number())
    orphan = Event(
        name="StakeAdded",
        address=net.contract.address,
        args={"provider": Identity.generate().address, "amount": 1, "stake": 2},
        block_number=logs[-1].block_number + 1,
        tx_hash="0x" + "00" * 32,
        log_index=0,
    )
    with pytest.raises(RegistryError, match="no registration"):
        index.apply_logs([*logs, orphan])
    assert index.count() == 0 and index.last_block is None
    assert index.apply_logs(logs) == 1 and index.provider(ident.address) is not None


def test_index_file_persists_and_refuses_another_registry(net: Net, tmp_path: Path) -> None:
    ident = net.provider()
    path = tmp_path / "registry.sqlite"
    with RegistryIndex(path) as idx:
        refresh(idx, net)
        last = idx.last_block
    with RegistryIndex(path) as idx:
        assert idx.last_block == last and idx.registry_address == net.contract.address
        assert [p.address for p in idx.query()] == [ident.address]
        assert idx.sync(net.contract).logs == 0
        with pytest.raises(RegistryError, match="caches the registry at"):
            idx.sync(net.chain, "0x" + "11" * 20)
    with pytest.raises(RegistryError, match="caches the registry at"):
        RegistryIndex(path, registry_address="0x" + "22" * 20)


def test_web3_log_source_reads_the_same_state() -> None:
    tester = EthereumTester()
    w3 = Web3(EthereumTesterProvider(tester))
    artifact = load_artifact("AgentRegistry")
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    deployer = w3.eth.accounts[0]
    tx = factory.constructor(MIN_STAKE, COOLDOWN).transact({"from": deployer})
    address = w3.eth.wait_for_transaction_receipt(tx)["contractAddress"]
    assert address is not None
    registry = w3.eth.contract(address=address, abi=artifact.abi)
    ident = Identity.generate()
    tester.add_account("0x" + ident.export_secrets()[1].hex())
    w3.eth.send_transaction({"from": deployer, "to": ident.address, "value": Wei(ETHER)})
    offer = Offer(
        model=OfferedModel(name=SMOL, sha256=SMOL_SHA, quantization="Q8_0", context_length=512),
        generation_tokens_per_s=50.0,
        prefill_tokens_per_s=150.0,
        price_per_1k_tokens_wei=7,
        evm_address=ident.address,
        did=ident.did,
        chain_id=w3.eth.chain_id,
        registry=address,
    )
    token = issue_offer(offer, ident)
    store = MemoryCidStore()
    cid = store.put(token.encode())
    registry.functions.register(ident.did, cid, offer_hash(token)).transact(
        TxParams({"from": ident.address, "value": Wei(MIN_STAKE)})
    )
    registry.functions.addStake().transact(TxParams({"from": ident.address, "value": Wei(5)}))

    source = Web3LogSource(w3, address)
    events = source(0, w3.eth.block_number)
    assert [e.name for e in events] == ["ProviderRegistered", "StakeAdded"]
    assert events[0].args["offerHash"] == offer_hash(token)
    assert events[0].args["provider"] == ident.address
    with RegistryIndex() as idx:
        result = idx.sync(source)
        assert result.logs == 2 and idx.registry_address == address
        assert idx.chain_id == w3.eth.chain_id
        assert idx.resolve_offers(store).valid == 1
        [record] = idx.query(model=SMOL)
    assert record.address == ident.address and record.did == ident.did
    assert record.offer_cid == cid and record.offer_hash == offer_hash(token)
    assert record.stake == MIN_STAKE + 5
    assert record.offer is not None and record.offer.quantization == "Q8_0"
    assert record.offer.endpoint is None


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "limit must be at least 1"),
        ({"max_price": -1}, "max_price must not be negative"),
        ({"min_stake": -1}, "min_stake must not be negative"),
        ({"min_tokens_per_s": float("nan")}, "min_tokens_per_s must be"),
        ({"model_sha256": "abc"}, "model_sha256 must be 64 hex digits"),
    ],
)
def test_query_rejects_bad_filters(
    index: RegistryIndex, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(RegistryError, match=message):
        index.query(**kwargs)  # type: ignore[arg-type]


def test_sync_rejects_bad_arguments(net: Net, index: RegistryIndex) -> None:
    with pytest.raises(RegistryError, match="page_blocks must be at least 1"):
        index.sync(net.contract, page_blocks=0)
    with pytest.raises(RegistryError, match="needs the registry_address"):
        index.sync(net.chain)
    with pytest.raises(RegistryError, match="pass to_block explicitly"):
        index.sync(lambda a, b: [])
    with pytest.raises(RegistryError, match="cannot read logs from a int"):
        index.sync(42)  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match="registry address must be"):
        RegistryIndex(registry_address="not-an-address")
    with pytest.raises(RegistryError, match="provider must be an EVM address"):
        index.provider("nope")


def test_source_returning_logs_outside_the_range_is_refused(net: Net, index: RegistryIndex) -> None:
    net.provider()
    logs = ChainLogSource(net.contract)(0, net.chain.block_number())
    with pytest.raises(RegistryError, match="returned a log of block"):
        index.sync(lambda a, b: logs, to_block=logs[0].block_number - 1)


def test_queries_filter_by_signed_offer_tags(net: Net, index: RegistryIndex) -> None:
    eu_cpu = net.provider(tags={"jurisdiction": "EU", "hardware": "cpu"})
    eu_gpu = net.provider(tags={"jurisdiction": "EU", "hardware": "gpu"})
    plain = net.provider()
    refresh(index, net)
    assert {p.address for p in index.query()} == {eu_cpu.address, eu_gpu.address, plain.address}
    eu = index.query(tags={"jurisdiction": "EU"})
    assert {p.address for p in eu} == {eu_cpu.address, eu_gpu.address}
    [only] = index.query(tags={"jurisdiction": "EU", "hardware": "cpu"})
    assert only.address == eu_cpu.address
    assert only.offer is not None and only.offer.tags == {"hardware": "cpu", "jurisdiction": "EU"}
    found = index.provider(plain.address)
    assert found is not None and found.offer is not None and found.offer.tags == {}
    assert index.query(tags={"jurisdiction": "eu"}) == []  # values match exactly
    with pytest.raises(InvalidOfferTags, match="tag key"):
        index.query(tags={'a"b': "x"})


def test_an_index_of_schema_1_gains_tags_and_rechecks_its_offers(net: Net, tmp_path: Path) -> None:
    tagged = net.provider(tags={"jurisdiction": "EU"})
    path = tmp_path / "v1.sqlite"
    with RegistryIndex(path) as idx:
        refresh(idx, net)
    # Make the file what schema 1 wrote: no tags column.
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE providers DROP COLUMN tags")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.close()
    with RegistryIndex(path) as idx:
        assert idx.query() == []  # valid offers wait to be read again, tags and all
        assert idx.resolve_offers(net.store).valid == 1
        [p] = idx.query(tags={"jurisdiction": "EU"})
        assert p.address == tagged.address


def test_a_file_that_is_not_an_index_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(RegistryError, match="is not a registry index database"):
        RegistryIndex(path)
    good = tmp_path / "old.sqlite"
    with sqlite3.connect(good) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema_version', '0')")
    with pytest.raises(RegistryError, match="delete the file to rebuild it"):
        RegistryIndex(good)


def test_sync_from_a_chain_binds_its_chain_id(net: Net) -> None:
    good = net.provider()
    with RegistryIndex() as idx:
        idx.sync(net.chain, net.contract.address)
        assert idx.chain_id == net.chain.chain_id
        assert idx.resolve_offers(net.store).valid == 1
        assert [p.address for p in idx.query()] == [good.address]


def test_a_slashed_provider_is_not_routed_to_until_it_tops_up(
    net: Net, index: RegistryIndex
) -> None:
    ident = net.provider()
    refresh(index, net)
    assert [p.address for p in index.query()] == [ident.address]
    head = index.last_block
    assert head is not None

    def stake_event(name: str, block: int, stake: int) -> Event:
        return Event(
            name=name,
            address=net.contract.address,
            args={"provider": ident.address, "amount": 1, "stake": stake},
            block_number=block,
            tx_hash="0x" + "00" * 32,
            log_index=0,
        )

    index.apply_logs([stake_event("StakeSlashed", head + 1, 5)])
    slashed = index.provider(ident.address)
    assert slashed is not None and not slashed.active and slashed.stake == 5
    assert index.query() == []
    index.apply_logs([stake_event("StakeAdded", head + 2, MIN_STAKE)])
    topped = index.provider(ident.address)
    assert topped is not None and topped.active and topped.stake == MIN_STAKE
    assert [p.address for p in index.query()] == [ident.address]
