"""Stateful property tests of the TaskMarket and AgentRegistry contracts.

A Hypothesis state machine drives random sequences of market actions (post, claim, commit,
reveal, reveal-and-finalize, claim-and-finalize, finalize, reopen, challenge, resolve, cancel,
withdraw, unstake, time travel) by several accounts through the Python clients
(:class:`MarketClient`, :class:`RegistryClient`) on the in-process EVM, and keeps a Python model
of what the contracts must hold: task phases, escrowed bounties, bonds, challenge bonds,
withdrawable balances, wallets and reputation counters.

Every action is predicted by the model first: either the exact custom error the contract must
revert with (the checks are ported in the contract's order), or success with the exact credits.
After every step the invariants compare the chain with the model:

- the market's ETH balance equals escrowed bounties + bonds held + challenge bonds held + every
  withdrawable balance, and each ``balanceOf`` equals the model's;
- every wallet equals the model's (value sent, fees paid, withdrawals, direct payouts), and the
  total ether of all participants and contracts plus fees paid is conserved;
- nobody is credited twice for one task (one settlement per task; each credit within its cap);
- a reveal that does not match its commitment reverts and leaves the task unchanged.

The last replica to commit may reveal straight from its claim (no commitment, salt unused)
before its commit deadline. That state takes several steps to line up, so most runs start with
a task staged in it (``staged_last_claim``), and the claim, reveal and ``progress`` rules draw
it on purpose.

Settlement (``finalize`` and ``revealAndFinalize``) sends the caller's own share to the caller in
the same transaction and credits everyone else; the model follows the caller's wallet for it.

Some one-replica tasks name an ``assignee``, the only provider that may claim them (posting an
assigned task with more replicas is probed too, and must revert). ``claimAndFinalize`` claims,
reveals and settles an assigned one-replica task without a challenge window in one transaction
and pays the caller bounty + bond at once; its rule mostly aims at such tasks (and probes open
ones, which it must refuse) and predicts every check in the contract's order. Posts probe the
horizon bounds (reveal deadline at most 30 days ahead, commit timeout and challenge window at
most 7 days), and task ids bind the chain id and the market's address.
Random rules alone rarely line up the phases of a task, so ``progress`` takes one task several
honest steps further (travelling the clock when it must wait) while the other rules keep probing
wrong callers, values, states and deadlines in between.

Run longer with ``HYPOTHESIS_PROFILE=ci`` or ``HYPOTHESIS_PROFILE=thorough``.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from eth_utils.crypto import keccak
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from chefsplan_agents.chain import EmbeddedChain, Receipt, deploy_contracts
from chefsplan_agents.errors import MarketError, TxReverted
from chefsplan_agents.market import (
    MAX_CHALLENGE_WINDOW,
    MAX_COMMIT_TIMEOUT,
    MAX_TASK_HORIZON,
    ZERO_ADDRESS,
    MarketClient,
    RevealEntry,
    TaskParams,
    check_horizons,
    make_commitment,
    result_cid_hash,
)
from chefsplan_agents.registry import RegistryClient

# ------------------------------------------------------------------ terms of the network

MIN_STAKE = 10**16
# Odd, so that sharing it among winners leaves a remainder for the requester.
CHALLENGE_BOND = 10**15 + 7
EVIDENCE = "bafkreievidence"
MAX_REPLICAS = 16
ZERO32 = b"\x00" * 32
CLOCK_LEAD_S = 30 * 24 * 3600

OUTPUTS = (keccak(b"the answer is 42"), keccak(b"the answer is 41"))

# Contract constants (TaskMarket.sol).
REPLICA_NONE, REPLICA_CLAIMED, REPLICA_COMMITTED, REPLICA_REVEALED, REPLICA_REOPENED = range(5)
CHALLENGE_NONE, CHALLENGE_PENDING, CHALLENGE_UPHELD, CHALLENGE_REJECTED, CHALLENGE_LAPSED = range(5)
VOTE_NONE, VOTE_COMMITTED, VOTE_UPHOLD, VOTE_REJECT = range(4)
PANEL_SIZE = 3
DAY = 24 * 3600
RESULT_ACCEPTED, RESULT_NO_QUORUM, RESULT_OVERTURNED = 1, 2, 3
(
    OUTCOME_NONE,
    OUTCOME_WON,
    OUTCOME_LOST,
    OUTCOME_SLASHED,
    OUTCOME_AUDIT_PASSED,
    OUTCOME_AUDIT_FAILED,
) = range(6)

_nonces = itertools.count(1)


def _stateful_settings() -> settings:
    """The default run for ``make test``, or a profile named by ``$HYPOTHESIS_PROFILE``."""
    name = os.environ.get("HYPOTHESIS_PROFILE", "")
    if name in ("ci", "thorough"):
        return settings.get_profile(name)
    return settings(
        max_examples=25,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        # The explain phase traces every line of py-evm: minutes per failing example.
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    )


# ------------------------------------------------------------------ the network under test


class MarketNetwork:
    """The contracts on one in-process chain, deployed once and rolled back per example.

    This is the only place that touches the chain; the state machine calls the clients through
    it, so the same machine can drive another backend by swapping this class.
    """

    def __init__(self) -> None:
        self.chain = EmbeddedChain()
        accounts = self.chain.accounts
        self.deployer = accounts[0]
        self.panel_salt = keccak(b"panel vote salt")
        self.requesters = accounts[2:4]
        self.providers = accounts[4:8]
        self.unregistered = accounts[8]
        self.challenger = accounts[9]
        self.accounts = list(accounts)
        deployment = deploy_contracts(
            self.chain,
            min_stake=MIN_STAKE,
            challenge_bond=CHALLENGE_BOND,
            sender=self.deployer,
        )
        self.market = MarketClient(deployment.market, from_block=deployment.deployed_at)
        self.registry = RegistryClient(deployment.registry)
        for i, provider in enumerate(self.providers):
            self.registry.register(
                f"did:key:z6MkStatefulProvider{i}",
                f"bafyoffer{i}",
                keccak(f"offer {i}".encode()),
                stake=MIN_STAKE,
                sender=provider,
            )
        # py-evm stamps a block with the wall clock unless its parent is later; run the chain
        # ahead of the wall clock so every block is exactly one second after its parent and
        # the model can predict the timestamp each transaction sees.
        self.chain.advance_time(CLOCK_LEAD_S)
        self._base = self.chain.snapshot()

    def reset(self) -> None:
        """Roll the chain back to just after deployment and registration."""
        self.chain.revert(self._base)
        self._base = self.chain.snapshot()

    def now(self) -> int:
        """The timestamp the next transaction will see (blocks are one second apart)."""
        return self.chain.block_timestamp("pending")

    def wallet(self, account: str) -> int:
        return self.chain.balance(account)


_network: MarketNetwork | None = None


def _get_network() -> MarketNetwork:
    global _network
    if _network is None:
        _network = MarketNetwork()
    return _network


# ------------------------------------------------------------------ the model


@dataclass
class ReplicaModel:
    """Mirror of ``TaskMarket.Replica`` plus what the provider meant to reveal."""

    state: int
    commit_by: int = 0
    commitment: bytes = ZERO32
    output: bytes = ZERO32  # the output hash the provider committed to (honest reveal)
    salt: bytes = ZERO32
    revealed_output: bytes = ZERO32
    revealed_cid: str = ""


@dataclass
class TaskModel:
    """Mirror of ``TaskMarket.TaskState`` for one incarnation of a task id."""

    params: TaskParams
    incarnation: int
    open: bool = True
    committed: int = 0
    revealed: int = 0
    challenge: int = CHALLENGE_NONE
    ever_claimed: bool = False
    ready_at: int = 0
    challenger: str | None = None
    panel: tuple[str, ...] = ()
    votes: tuple[int, ...] = ()
    settled: bool = False

    @property
    def task_id(self) -> bytes:
        return _get_network().market.task_id(self.params)


@dataclass
class SettlementModel:
    """What a settlement credits, as ``_finalize`` computes it."""

    credits: dict[str, int]
    outcomes: dict[str, int]
    result: int
    output_hash: bytes
    winners: int
    refund: int
    cid: str
    stake_takes: dict[str, int]  # registry stake slashed per provider (upheld challenges)


def challenge_state(market: MarketClient, task_id: bytes) -> int:
    return int(market.task_state(task_id).challenge)


def _cid_for(provider_index: int, output: bytes) -> str:
    return f"bafyresult{provider_index}x{output[:4].hex()}"


class TaskMarketMachine(RuleBasedStateMachine):
    """Random market sessions checked step by step against a model."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _get_network()
        self.net.reset()
        self.market = self.net.market
        self.registry = self.net.registry
        accounts = self.net.accounts
        self.tasks: dict[bytes, TaskModel] = {}
        self.task_order: list[bytes] = []
        # Contract storage that outlives a task's incarnation (reopened replicas do).
        self.replicas: dict[tuple[bytes, str], ReplicaModel] = {}
        self.credit = dict.fromkeys(accounts, 0)  # withdrawable in the market
        self.credited_total = dict.fromkeys(accounts, 0)
        self.withdrawn_total = dict.fromkeys(accounts, 0)
        self.wallet = {a: self.net.wallet(a) for a in accounts}
        self.stakes = {p: MIN_STAKE for p in self.net.providers}
        self.stake_slashed = 0  # registry stake sent to the market by slashStake
        self.active = {a: a in self.net.providers for a in accounts}
        self.unstaked: set[str] = set()
        self.reputation: dict[str, Counter[str]] = {p: Counter() for p in self.net.providers}
        self.fees = 0
        self.market_start = self.net.wallet(self.market.address)
        self.registry_start = self.net.wallet(self.registry.address)
        self.total_start = sum(self.wallet.values()) + self.market_start + self.registry_start
        # Credits per (task id, incarnation, account), to prove nobody is paid twice.
        self.paid: dict[tuple[bytes, int, str], int] = {}
        self.settlements: Counter[tuple[bytes, int]] = Counter()
        self.touched: bytes | None = None
        self.dirty = True  # a transaction succeeded since the last full balance check
        # Set by ``progress``: the next rule acts on this task, with honest arguments.
        self.steer: TaskModel | None = None
        self.honest = False
        # Set while the last slot to commit reveals from its claim: reveals pick a CLAIMED one.
        self.direct = False
        # The latest expected revert, for rules that check its arguments too.
        self.last_revert: TxReverted | None = None

    # -------------------------------------------------------------- helpers

    def _attempt(
        self,
        expected: str | None,
        action: Callable[[], Receipt],
        *,
        sender: str,
        value: int = 0,
    ) -> Receipt | None:
        """Run ``action``; it must revert with ``expected`` or, when ``None``, succeed."""
        # Statistics (``--hypothesis-show-statistics``): which outcomes the runs reached.
        event(f"{sys._getframe(1).f_code.co_name}: {expected or 'ok'}")
        try:
            receipt = action()
        except TxReverted as exc:
            assert expected is not None, f"unexpected revert {exc.error_name}: {exc}"
            assert exc.error_name == expected, f"expected {expected}, reverted with {exc}"
            self.last_revert = exc
            return None
        assert expected is None, f"expected a revert with {expected}, but the call succeeded"
        self.dirty = True
        self.wallet[sender] -= value + receipt.fee_wei
        self.fees += receipt.fee_wei
        return receipt

    def _pick_task(self, data: st.DataObject) -> TaskModel | None:
        if self.steer is not None:
            return self.steer
        if not self.task_order:
            return None
        open_ids = [t for t in self.task_order if self.tasks[t].open]
        fresh = bool(open_ids) and data.draw(st.integers(0, 9), label="fresh") > 0
        tid = data.draw(st.sampled_from(open_ids if fresh else self.task_order), label="task")
        return self.tasks[tid]

    def _replica(self, task: TaskModel, provider: str) -> ReplicaModel:
        return self.replicas.get((task.task_id, provider), ReplicaModel(REPLICA_NONE))

    def _current(self, task: TaskModel) -> list[str]:
        """Providers holding a claimed replica, ascending by address (the settlement order)."""
        held = [
            p
            for (tid, p), r in self.replicas.items()
            if tid == task.task_id
            and r.state in (REPLICA_CLAIMED, REPLICA_COMMITTED, REPLICA_REVEALED)
        ]
        return sorted(held, key=lambda a: int(a, 16))

    def _claimed(self, task: TaskModel) -> int:
        return len(self._current(task))

    def _escrow(self, task: TaskModel) -> int:
        if not task.open:
            return 0
        p = task.params
        held = p.bounty_per_replica * p.replicas + p.bond * self._claimed(task)
        held_challenge = task.challenge not in (CHALLENGE_NONE, CHALLENGE_LAPSED)
        return held + (CHALLENGE_BOND if held_challenge else 0)

    @staticmethod
    def _settle_time(task: TaskModel, revealed: int, ready_at: int) -> int:
        p = task.params
        closed = ready_at if revealed == p.replicas else p.reveal_deadline + 1
        return closed + p.challenge_window

    def _reveal_entries(
        self, task: TaskModel, extra: tuple[str, ReplicaModel] | None = None
    ) -> list[RevealEntry]:
        holders = self._current(task)
        entries = []
        for p in holders:
            r = extra[1] if extra and extra[0] == p else self._replica(task, p)
            if r.state == REPLICA_REVEALED:
                entries.append(RevealEntry(p, r.revealed_output, result_cid_hash(r.revealed_cid)))
            else:
                entries.append(RevealEntry(p))
        return entries

    def _credit_to(self, task: TaskModel, account: str, amount: int, direct_to: str | None) -> None:
        key = (task.task_id, task.incarnation, account)
        self.paid[key] = self.paid.get(key, 0) + amount
        self.credited_total[account] += amount
        if direct_to is not None and account == direct_to:
            self.wallet[account] += amount
            self.withdrawn_total[account] += amount
        else:
            self.credit[account] += amount

    # -------------------------------------------------------------- settlement model

    def _predict_settlement(
        self,
        task: TaskModel,
        reveals: list[RevealEntry],
        cid: str,
        now: int,
        *,
        revealed: int,
        ready_at: int,
        self_reveal: tuple[str, ReplicaModel] | None = None,
    ) -> str | SettlementModel:
        """``_finalize``'s checks and credits, in the contract's order."""
        p = task.params
        if task.challenge == CHALLENGE_PENDING:
            return "ChallengePending"
        if now < self._settle_time(task, revealed, ready_at):
            return "TooEarly"
        if len(reveals) != self._claimed(task):
            return "BadRevealList"
        states = []
        prev = 0
        for entry in reveals:
            if int(entry.provider, 16) <= prev:
                return "BadRevealList"
            prev = int(entry.provider, 16)
            if self_reveal and entry.provider == self_reveal[0]:
                r = self_reveal[1]
            else:
                r = self._replica(task, entry.provider)
            if r.state == REPLICA_REVEALED:
                if (entry.output_hash, entry.result_cid_hash) != (
                    r.revealed_output,
                    result_cid_hash(r.revealed_cid),
                ):
                    return "RevealDataMismatch"
            elif r.state not in (REPLICA_CLAIMED, REPLICA_COMMITTED):
                return "BadRevealList"
            states.append(r.state)
        upheld = task.challenge == CHALLENGE_UPHELD
        # Tally: the first output hash (in list order) with the most votes.
        best, winner = 0, ZERO32
        for i, entry in enumerate(reveals):
            if states[i] != REPLICA_REVEALED:
                continue
            votes = sum(
                1
                for j, other in enumerate(reveals)
                if states[j] == REPLICA_REVEALED and other.output_hash == entry.output_hash
            )
            if votes > best:
                best, winner = votes, entry.output_hash
        accepted = best >= p.quorum
        winners = best if accepted and not upheld else 0
        out_cid = ""
        if accepted and not upheld:
            cid_hash = result_cid_hash(cid)
            if not any(
                states[i] == REPLICA_REVEALED
                and e.output_hash == winner
                and e.result_cid_hash == cid_hash
                for i, e in enumerate(reveals)
            ):
                return "ResultCidMismatch"
            out_cid = cid
        credits: Counter[str] = Counter()
        outcomes: dict[str, int] = {}
        refund = p.bounty_per_replica * p.replicas
        to_challenger = 0
        for i, entry in enumerate(reveals):
            is_revealed = states[i] == REPLICA_REVEALED
            in_majority = is_revealed and accepted and entry.output_hash == winner
            outcome = OUTCOME_NONE
            if in_majority and not upheld:
                # A result a panel judged and kept is a passed audit.
                rejected = task.challenge == CHALLENGE_REJECTED
                outcome = OUTCOME_AUDIT_PASSED if rejected else OUTCOME_WON
                refund -= p.bounty_per_replica
                credits[entry.provider] += p.bounty_per_replica + p.bond
            elif in_majority:
                outcome = OUTCOME_AUDIT_FAILED  # overturned by the panel
                to_challenger += p.bond
            elif is_revealed and accepted and not upheld:
                outcome = OUTCOME_LOST
                refund += p.bond
            elif is_revealed:
                credits[entry.provider] += p.bond
            else:
                outcome = OUTCOME_SLASHED
                refund += p.bond
            outcomes[entry.provider] = outcome
        stake_takes: dict[str, int] = {}
        if task.challenge in (CHALLENGE_UPHELD, CHALLENGE_REJECTED):
            assert task.challenger is not None
            majority = VOTE_UPHOLD if upheld else VOTE_REJECT
            seats = sum(1 for v in task.votes if v == majority)
            half = CHALLENGE_BOND // 2

            def pay_panel(fee: int) -> int:
                share = fee // seats
                if share == 0:
                    return 0
                for member, vote in zip(task.panel, task.votes, strict=True):
                    if vote == majority:
                        credits[member] += share
                return share * seats

            if upheld:
                fee = min(half, to_challenger)
                reward = min(half, to_challenger - fee)
                paid = pay_panel(fee)
                credits[task.challenger] += CHALLENGE_BOND + reward
                refund += to_challenger - paid - reward
                for provider, outcome in outcomes.items():
                    if outcome == OUTCOME_AUDIT_FAILED:
                        stake_takes[provider] = min(self.stakes.get(provider, 0), p.bond)
                        refund += stake_takes[provider]
            else:
                held = CHALLENGE_BOND - pay_panel(half)
                if winners == 0:
                    refund += held
                else:
                    share = held // winners
                    refund += held - share * winners
                    for i, entry in enumerate(reveals):
                        if states[i] == REPLICA_REVEALED and entry.output_hash == winner:
                            credits[entry.provider] += share
        if refund:
            credits[p.requester] += refund
        result = RESULT_NO_QUORUM
        if upheld:
            result = RESULT_OVERTURNED
        elif accepted:
            result = RESULT_ACCEPTED
        return SettlementModel(
            credits=dict(credits),
            outcomes=outcomes,
            result=result,
            output_hash=winner if result == RESULT_ACCEPTED else ZERO32,
            winners=winners,
            refund=refund,
            cid=out_cid,
            stake_takes=stake_takes,
        )

    def _apply_settlement(
        self,
        task: TaskModel,
        settlement: SettlementModel,
        receipt: Receipt,
        reveals: list[RevealEntry],
        direct_to: str | None = None,
    ) -> None:
        p = task.params
        event(f"settled: result {settlement.result}, challenge {task.challenge}")
        done = self.market.settlement(receipt)
        assert done.task_id == task.task_id
        assert int(done.result) == settlement.result
        assert done.output_hash == settlement.output_hash
        assert done.result_cid == settlement.cid
        assert done.winners == settlement.winners
        assert done.payout_per_winner == p.bounty_per_replica + p.bond
        assert done.refund == settlement.refund
        # One settlement per incarnation; no account credited beyond what one task can pay it.
        self.settlements[(task.task_id, task.incarnation)] += 1
        assert self.settlements[(task.task_id, task.incarnation)] == 1
        # The caller's own share is sent to it in the same transaction (a Withdrawn event).
        sent = [e for e in receipt.events_named("Withdrawn") if e.address == self.market.address]
        own = settlement.credits.get(direct_to, 0) if direct_to else 0
        assert [(e.args["account"], int(e.args["amount"])) for e in sent] == (
            [(direct_to, own)] if own else []
        )
        for account, amount in settlement.credits.items():
            self._credit_to(task, account, amount, direct_to)
        for account in settlement.credits:
            paid = self.paid[(task.task_id, task.incarnation, account)]
            cap = p.bounty_per_replica + p.bond + CHALLENGE_BOND  # a provider's best case
            if account == p.requester:
                # Bounties, bonds, the challenge bond share, as much registry stake, and the
                # stake of silent panelists (challengeBond / PANEL_SIZE each: one bond in all).
                cap = p.escrow + 2 * p.bond * p.replicas + 2 * CHALLENGE_BOND
            if account == task.challenger and account != p.requester:
                cap = max(cap, CHALLENGE_BOND + p.bond * p.replicas)
            assert 0 < paid <= cap, f"{account} credited {paid} for one task, outside (0, {cap}]"
        for entry in reveals:
            self.replicas.pop((task.task_id, entry.provider), None)
            outcome = settlement.outcomes.get(entry.provider, OUTCOME_NONE)
            self._record_outcome(entry.provider, outcome)
        for provider, take in settlement.stake_takes.items():
            self._take_stake(provider, take)
        task.open = False
        task.settled = True
        task.challenger = None
        task.panel = ()
        task.votes = ()

    def _take_stake(self, provider: str, take: int) -> None:
        """``slashStake``: the stake shrinks; below the minimum the provider is inactive."""
        self.stakes[provider] -= take
        self.stake_slashed += take
        if self.stakes[provider] < MIN_STAKE:
            self.active[provider] = False

    def _record_outcome(self, provider: str, outcome: int) -> None:
        rep = self.reputation.setdefault(provider, Counter())
        if outcome == OUTCOME_WON:
            rep["won"] += 1
        elif outcome == OUTCOME_LOST:
            rep["lost"] += 1
            rep["slashed"] += 1
        elif outcome == OUTCOME_SLASHED:
            rep["slashed"] += 1
        elif outcome == OUTCOME_AUDIT_PASSED:
            rep["won"] += 1
            rep["audits_passed"] += 1
        elif outcome == OUTCOME_AUDIT_FAILED:
            rep["lost"] += 1
            rep["slashed"] += 1
            rep["audits_failed"] += 1

    # -------------------------------------------------------------- rules: requester

    @initialize(data=st.data())
    def first_task(self, data: st.DataObject) -> None:
        """Every run starts with one valid task, so the other rules have something to act on."""
        self._draw_and_post(data, valid=True)

    @initialize(data=st.data())
    def staged_last_claim(self, data: st.DataObject) -> None:
        """Most runs also start with a task whose slots are claimed, the last one (mostly)
        without a commitment, so that reveals from the claim meet their window."""
        if data.draw(st.integers(0, 3), label="staged") == 3:
            return
        net = self.net
        replicas = data.draw(st.integers(1, 3), label="replicas")
        now = net.now()
        claim_deadline = now - 1 + 300
        params = TaskParams(
            requester=net.requesters[1],
            bundle_hash=keccak(f"staged bundle {claim_deadline}".encode()),
            replicas=replicas,
            quorum=replicas // 2 + 1,
            bounty_per_replica=10**15,
            bond=10**14,
            claim_deadline=claim_deadline,
            commit_timeout=3600,  # long, so that random time travel rarely passes it
            reveal_deadline=claim_deadline + 3600 + 300,
            challenge_window=data.draw(st.sampled_from([0, 30]), label="challenge_window"),
            nonce=next(_nonces),
        )
        self._post(params, "bafybundle", params.escrow, params.requester, now)
        self.steer, self.honest = self.tasks[self.market.task_id(params)], True
        try:
            for _ in range(replicas):
                self.claim(data)
        finally:
            self.steer, self.honest = None, False

    @initialize(data=st.data())
    def single_shot_task(self, data: st.DataObject) -> None:
        """Most runs also start with a one-replica task without a challenge window, often
        assigned to one provider: the task ``claimAndFinalize`` takes."""
        kind = data.draw(st.integers(0, 3), label="single_shot")
        if kind == 3:
            return
        net = self.net
        now = net.now()
        claim_deadline = now - 1 + data.draw(st.sampled_from([300, 5]), label="claim_window")
        assignee = ZERO_ADDRESS
        if kind < 2:
            assignee = data.draw(st.sampled_from(net.providers), label="assignee")
        params = TaskParams(
            requester=net.requesters[0],
            bundle_hash=keccak(f"single-shot bundle {claim_deadline}".encode()),
            replicas=1,
            quorum=1,
            bounty_per_replica=3 * 10**15 + 1,
            bond=5,
            claim_deadline=claim_deadline,
            commit_timeout=200,
            reveal_deadline=claim_deadline + 200 + 300,
            challenge_window=0,
            nonce=next(_nonces),
            assignee=assignee,
        )
        self._post(params, "bafybundle", params.escrow, params.requester, now)
        if data.draw(st.integers(0, 2), label="at_once") == 0:
            # Its provider (or, now and then, a wrong caller) takes it at once.
            self.steer = self.tasks[self.market.task_id(params)]
            try:
                self.claim_and_finalize(data)
            finally:
                self.steer = None

    @rule(data=st.data())
    def post(self, data: st.DataObject) -> None:
        """Post a task with random terms; some are invalid on purpose."""
        self._draw_and_post(data, valid=False)

    def _draw_and_post(self, data: st.DataObject, *, valid: bool) -> None:
        net = self.net
        requester = data.draw(st.sampled_from(net.requesters), label="requester")
        replicas = data.draw(st.integers(1, 3), label="replicas")
        lowest = replicas // 2 + 1 if valid else 1
        quorum = data.draw(st.integers(lowest, replicas), label="quorum")
        bounties = [10**15, 3 * 10**15 + 1, 7] + ([] if valid else [0])
        bounty = data.draw(st.sampled_from(bounties), label="bounty")
        bond = data.draw(st.sampled_from([10**14, 2 * 10**15, 5] + ([] if valid else [0])))
        claim_windows = [60, 300, 5] + ([] if valid else [0])
        claim_window = data.draw(st.sampled_from(claim_windows), label="claim_window")
        # Invalid posts now and then break a horizon: a commit timeout, a reveal deadline or a
        # challenge window longer than the market allows (bonds locked for centuries).
        too_long = [] if valid else [MAX_COMMIT_TIMEOUT + 1]
        commit_timeout = data.draw(st.sampled_from([30, 200, 3, *too_long]), label="commit_timeout")
        too_far = [] if valid else [MAX_TASK_HORIZON, 800_000_000_000]
        reveal_window = data.draw(st.sampled_from([60, 300, 5, *too_far]), label="reveal_window")
        windows = [0, 0, 30, 200] + ([] if valid else [MAX_CHALLENGE_WINDOW + 1, 2**63])
        challenge_window = data.draw(st.sampled_from(windows), label="challenge_window")
        assignee = self._draw_assignee(data, replicas, valid=valid)
        sender = requester
        if not valid and data.draw(st.integers(0, 14), label="sender_kind") == 0:
            sender = data.draw(st.sampled_from(net.accounts), label="sender")
        cid = "bafybundle" if valid or data.draw(st.integers(0, 19), label="cid_kind") else ""
        now = net.now()
        claim_deadline = now - 1 + claim_window
        params = TaskParams(
            requester=requester,
            bundle_hash=keccak(f"bundle {claim_deadline}".encode()),
            replicas=replicas,
            quorum=quorum,
            bounty_per_replica=bounty,
            bond=bond,
            claim_deadline=claim_deadline,
            commit_timeout=commit_timeout,
            reveal_deadline=claim_deadline + commit_timeout + reveal_window,
            challenge_window=challenge_window,
            nonce=next(_nonces),
            assignee=assignee,
        )
        value = params.escrow
        if not valid:
            delta = data.draw(st.sampled_from([0] * 8 + [1, -1]), label="value_delta")
            value = max(value + delta, 0)
        self._post(params, cid, value, sender, now)

    def _draw_assignee(self, data: st.DataObject, replicas: int, *, valid: bool) -> str:
        """Mostly nobody; a one-replica task is often assigned to one of the providers.

        Invalid posts now and then assign a task of several replicas (``InvalidReplicas``) or
        name an account that is no provider (the post is valid; nobody can claim the task).
        """
        if replicas == 1:
            kind = data.draw(st.integers(0, 9), label="assignee_kind")
            if kind < 4:
                return data.draw(st.sampled_from(self.net.providers), label="assignee")
            if not valid and kind == 9:
                return self.net.unregistered
        elif not valid and data.draw(st.integers(0, 3), label="assign_many") == 0:
            return data.draw(st.sampled_from(self.net.providers), label="assignee")
        return ZERO_ADDRESS

    @rule(data=st.data())
    def repost(self, data: st.DataObject) -> None:
        """Post the exact terms of a known task again (a new incarnation if it is closed)."""
        task = self._pick_task(data)
        if task is None:
            return
        self._post(
            task.params, "bafybundle", task.params.escrow, task.params.requester, self.net.now()
        )

    def _post(self, params: TaskParams, cid: str, value: int, sender: str, now: int) -> None:
        p = params
        task_id = self.market.task_id(p)
        existing = self.tasks.get(task_id)
        expected: str | None = None
        if p.requester != sender:
            expected = "NotRequester"
        elif not cid:
            expected = "EmptyCid"
        elif p.replicas == 0 or p.replicas > MAX_REPLICAS:
            expected = "InvalidReplicas"
        elif p.assigned and p.replicas != 1:
            expected = "InvalidReplicas"  # (replicas, 1): an assigned task has one replica
        elif p.quorum > p.replicas or 2 * p.quorum <= p.replicas:
            expected = "InvalidQuorum"
        elif p.bounty_per_replica == 0 or p.bond == 0:
            expected = "ZeroAmount"
        elif (
            p.commit_timeout == 0
            or p.claim_deadline <= now
            or p.reveal_deadline <= p.claim_deadline + p.commit_timeout
        ):
            expected = "InvalidDeadlines"
        elif p.reveal_deadline > now + MAX_TASK_HORIZON:
            expected = "DeadlineTooFar"
        elif p.commit_timeout > MAX_COMMIT_TIMEOUT:
            expected = "CommitTimeoutTooLong"
        elif p.challenge_window > MAX_CHALLENGE_WINDOW:
            expected = "ChallengeWindowTooLong"
        elif value != p.escrow:
            expected = "WrongValue"
        elif existing is not None and existing.open:
            expected = "TaskExists"

        try:
            check_horizons(p, now)
            client_refuses = False
        except MarketError:
            client_refuses = True

        def action() -> Receipt:
            if sender == p.requester and not client_refuses:
                return self.market.post_task(p, cid, value=value).receipt
            if sender == p.requester:
                # The client refuses out-of-bounds terms before sending anything...
                block = self.net.chain.block_number()
                try:
                    self.market.post_task(p, cid, value=value)
                except MarketError:
                    assert self.net.chain.block_number() == block
                else:
                    raise AssertionError("the client posted terms check_horizons refuses")
                # ...and the contract refuses them too (sent raw below).
            # The client always sends from the requester; impersonate another sender raw.
            return self.market.contract.transact(
                "postTask", p.as_abi(), cid, sender=sender, value=value
            )

        receipt = self._attempt(expected, action, sender=sender, value=value)
        if receipt is None:
            if expected == "InvalidReplicas" and p.assigned and 1 <= p.replicas <= MAX_REPLICAS:
                assert self.last_revert is not None
                assert self.last_revert.args_ == {"replicas": p.replicas, "maxReplicas": 1}
            return
        assert bytes(receipt.event("TaskPosted").args["taskId"]) == task_id
        incarnation = existing.incarnation + 1 if existing else 1
        self.tasks[task_id] = TaskModel(params=p, incarnation=incarnation)
        if existing is None:
            self.task_order.append(task_id)
        self.touched = task_id

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        """Cancel a task: only its requester, only while never claimed or challenged."""
        task = self._pick_task(data)
        if task is None:
            return
        p = task.params
        sender = p.requester
        if data.draw(st.integers(0, 4), label="sender_kind") == 0:
            sender = data.draw(st.sampled_from(self.net.accounts), label="sender")
        expected: str | None = None
        if not task.open:
            expected = "UnknownTask"
        elif sender != p.requester:
            expected = "NotRequester"
        elif task.ever_claimed or task.challenge != CHALLENGE_NONE:
            expected = "CancelNotAllowed"
        receipt = self._attempt(
            expected, lambda: self.market.cancel(p, sender=sender), sender=sender
        )
        if receipt is None:
            return
        refund = int(receipt.event("TaskCancelled").args["refund"])
        assert refund == p.escrow
        self.settlements[(task.task_id, task.incarnation)] += 1
        assert self.settlements[(task.task_id, task.incarnation)] == 1
        self._credit_to(task, p.requester, refund, None)
        task.open = False
        self.touched = task.task_id

    # -------------------------------------------------------------- rules: provider

    def _pick_provider(self, data: st.DataObject, task: TaskModel, prefer: tuple[int, ...]) -> str:
        """Mostly a provider whose replica is in a ``prefer`` state, sometimes anyone."""
        kind = 2 if self.honest else data.draw(st.integers(0, 9), label="provider_kind")
        if kind == 0:
            return data.draw(st.sampled_from(self.net.accounts), label="anyone")
        if kind == 1:
            return data.draw(st.sampled_from(self.net.providers), label="provider")
        fitting = [
            p
            for p in self.net.providers
            if self._replica(task, p).state in prefer
            and (REPLICA_NONE not in prefer or self._may_claim(task, p))
        ]
        if fitting:
            return data.draw(st.sampled_from(fitting), label="fitting")
        return data.draw(st.sampled_from(self.net.providers), label="provider")

    def _may_claim(self, task: TaskModel, provider: str) -> bool:
        """Whether ``provider`` is active and, for an assigned task, its assignee."""
        assignee = task.params.assignee
        return self.active[provider] and assignee in (ZERO_ADDRESS, provider)

    def _predict_claim(self, task: TaskModel, provider: str, value: int, now: int) -> str | None:
        """``_checkClaim``'s checks in the contract's order (shared by both kinds of claim)."""
        p = task.params
        if value != p.bond:
            return "WrongValue"
        if now > p.claim_deadline:
            return "ClaimClosed"
        if self._claimed(task) >= p.replicas:
            return "TaskFull"
        if p.assigned and provider != p.assignee:
            return "NotAssignee"
        if self._replica(task, provider).state != REPLICA_NONE:
            return "AlreadyClaimed"
        if not self.active[provider]:
            return "NotActiveProvider"
        return None

    def _check_not_assignee(self, task: TaskModel, provider: str, expected: str | None) -> None:
        if expected == "NotAssignee":
            assert self.last_revert is not None
            assert self.last_revert.args_ == {"caller": provider, "assignee": task.params.assignee}

    def _make_commitment(
        self, data: st.DataObject, task: TaskModel, provider: str
    ) -> tuple[bytes, bytes, bytes]:
        """(commitment, output, salt): honest, or one that its later reveal cannot match."""
        # Honest providers mostly agree, so that quorums (and outvoted minorities) both occur.
        choices = (OUTPUTS[0],) * 3 + OUTPUTS if self.honest else OUTPUTS
        output = data.draw(st.sampled_from(choices), label="output")
        salt = keccak(f"salt {task.params.nonce} {task.incarnation} {provider}".encode())
        kind = 2 if self.honest else data.draw(st.integers(0, 9), label="commitment_kind")
        if kind == 0:  # a copied commitment: bound to another address, it can never be revealed
            other = (
                self.net.providers[0]
                if provider != self.net.providers[0]
                else self.net.providers[1]
            )
            return make_commitment(output, salt, other), output, salt
        if kind == 1:  # garbage
            return keccak(salt + b"garbage"), output, salt
        return make_commitment(output, salt, provider), output, salt

    @rule(data=st.data())
    def claim(self, data: st.DataObject) -> None:
        """Claim a replica with a bond, committing at once or later."""
        task = self._pick_task(data)
        if task is None:
            return
        p = task.params
        provider = self._pick_provider(data, task, (REPLICA_NONE,))
        commit_now = data.draw(st.integers(0, 3), label="commit_now") > 0
        if self._claimed(task) + 1 == p.replicas:
            # The last slot often claims alone, so that it may reveal from its claim (an
            # honest node mostly does: it claims before it knows its output).
            last_commits = data.draw(st.integers(0, 3), label="last_commits_now")
            commit_now = last_commits == 3 if self.honest else last_commits >= 2
        commitment, output, salt = (ZERO32, ZERO32, ZERO32)
        if commit_now:
            commitment, output, salt = self._make_commitment(data, task, provider)
        value = p.bond
        if not self.honest:
            value += data.draw(st.sampled_from([0] * 9 + [1]), label="value_delta")
        now = self.net.now()
        expected = (
            "UnknownTask" if not task.open else self._predict_claim(task, provider, value, now)
        )
        if p.assigned:
            event(f"claim of an assigned task: {expected or 'ok'}")
        receipt = self._attempt(
            expected,
            lambda: self.market.claim(
                p, commitment if commit_now else None, sender=provider, value=value
            ),
            sender=provider,
            value=value,
        )
        self._check_not_assignee(task, provider, expected)
        if receipt is None:
            return
        claimed = receipt.event("ReplicaClaimed")
        assert int(claimed.args["commitBy"]) == now + p.commit_timeout
        replica = ReplicaModel(REPLICA_CLAIMED, commit_by=now + p.commit_timeout)
        if commit_now:
            replica = replace(
                replica, state=REPLICA_COMMITTED, commitment=commitment, output=output, salt=salt
            )
            task.committed += 1
        self.replicas[(task.task_id, provider)] = replica
        task.ever_claimed = True
        self.touched = task.task_id
        if (
            self.steer is None
            and self._reveals_from_claim(task, provider)
            and data.draw(st.integers(0, 2), label="reveal_at_once") > 0
        ):
            # The claimer runs its model and, as the last slot to commit, reveals at once.
            self.steer = task
            try:
                self._reveal_from_claim(data, task)
            finally:
                self.steer = None

    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        """Commit to a result (honest, copied or garbage; a zero commitment is refused)."""
        task = self._pick_task(data)
        if task is None:
            return
        p = task.params
        provider = self._pick_provider(data, task, (REPLICA_CLAIMED,))
        commitment, output, salt = self._make_commitment(data, task, provider)
        if not self.honest and data.draw(st.integers(0, 19), label="zero") == 0:
            commitment = ZERO32
        replica = self._replica(task, provider)
        now = self.net.now()
        expected: str | None = None
        if not task.open:
            expected = "UnknownTask"
        elif commitment == ZERO32:
            expected = "ZeroCommitment"
        elif replica.state != REPLICA_CLAIMED:
            expected = "WrongReplicaState"
        elif now > replica.commit_by:
            expected = "CommitDeadlinePassed"
        receipt = self._attempt(
            expected, lambda: self.market.commit(p, commitment, sender=provider), sender=provider
        )
        if receipt is None:
            return
        assert bytes(receipt.event("ResultCommitted").args["commitment"]) == commitment
        self.replicas[(task.task_id, provider)] = replace(
            replica, state=REPLICA_COMMITTED, commitment=commitment, output=output, salt=salt
        )
        task.committed += 1
        self.touched = task.task_id

    def _predict_reveal(
        self, task: TaskModel, provider: str, output: bytes, cid: str, salt: bytes, now: int
    ) -> str | None:
        """``_reveal``'s checks in the contract's order."""
        p = task.params
        replica = self._replica(task, provider)
        if not task.open:
            return "UnknownTask"
        if not cid:
            return "EmptyCid"
        if self._reveals_from_claim(task, provider):
            # Every other slot is fixed by its commitment: nothing is left to copy.
            if now > replica.commit_by:
                return "CommitDeadlinePassed"
            return None
        if replica.state != REPLICA_COMMITTED:
            return "WrongReplicaState"
        if task.committed < p.replicas and now <= p.commit_phase_end:
            return "RevealNotOpen"
        if now > p.reveal_deadline:
            return "RevealClosed"
        if make_commitment(output, salt, provider)[:24] != replica.commitment[:24]:
            return "CommitmentMismatch"
        return None

    def _reveals_from_claim(self, task: TaskModel, provider: str) -> bool:
        """Whether ``provider`` is the last slot to commit and may reveal without committing."""
        state = self._replica(task, provider).state
        return state == REPLICA_CLAIMED and task.committed + 1 == task.params.replicas

    def _draw_reveal(
        self, data: st.DataObject, task: TaskModel
    ) -> tuple[str, bytes, str, bytes, str]:
        """(provider, output, cid, salt, kind) where kind is honest / wrong_output / wrong_salt.

        Mostly a committed replica; now and then (always when ``progress`` says ``direct``) a
        replica still in its claim, which may reveal only as the last slot to commit.
        """
        from_claim = self.direct
        if not self.honest and not self.direct:
            from_claim = data.draw(st.integers(0, 3), label="from_claim") == 3
        prefer = (REPLICA_CLAIMED,) if from_claim else (REPLICA_COMMITTED,)
        provider = self._pick_provider(data, task, prefer)
        replica = self._replica(task, provider)
        kind = "honest"
        if not self.honest:
            kind = data.draw(
                st.sampled_from(["honest"] * 6 + ["wrong_output", "wrong_salt", "empty_cid"]),
                label="reveal_kind",
            )
        output, salt = replica.output, replica.salt
        if replica.state == REPLICA_CLAIMED:
            # Nothing was committed: any output, and a salt the contract never looks at.
            choices = (OUTPUTS[0],) * 3 + OUTPUTS if self.honest else OUTPUTS
            output = data.draw(st.sampled_from(choices), label="claim_output")
            salt = data.draw(st.sampled_from([ZERO32, keccak(b"any salt")]), label="claim_salt")
        if kind == "wrong_output":
            output = OUTPUTS[1] if output == OUTPUTS[0] else OUTPUTS[0]
        elif kind == "wrong_salt":
            salt = keccak(salt)
        index = self.net.accounts.index(provider)
        cid = "" if kind == "empty_cid" else _cid_for(index, output)
        return provider, output, cid, salt, kind

    @rule(data=st.data())
    def reveal(self, data: st.DataObject) -> None:
        """Reveal; a reveal that does not match its commitment must revert and change nothing."""
        task = self._pick_task(data)
        if task is None:
            return
        p = task.params
        provider, output, cid, salt, _kind = self._draw_reveal(data, task)
        now = self.net.now()
        expected = self._predict_reveal(task, provider, output, cid, salt, now)
        from_claim = task.open and self._reveals_from_claim(task, provider)
        if from_claim:
            event(f"reveal from the claim: {expected or 'ok'}")
        checked = expected in ("CommitmentMismatch", "CommitDeadlinePassed")
        if checked:
            before = (
                self.market.task_state(task.task_id),
                self.market.replica(task.task_id, provider),
            )
        receipt = self._attempt(
            expected,
            lambda: self.market.reveal(p, output, cid, salt, sender=provider),
            sender=provider,
        )
        if checked:
            after = (
                self.market.task_state(task.task_id),
                self.market.replica(task.task_id, provider),
            )
            assert after == before, f"a reveal reverting {expected} changed the task"
        if receipt is None:
            return
        shown = receipt.event("ResultRevealed")
        assert bytes(shown.args["outputHash"]) == output and shown.args["resultCid"] == cid
        # A reveal from the claim commits in the same call, without a ResultCommitted event.
        assert receipt.events_named("ResultCommitted") == []
        replica = self._replica(task, provider)
        self.replicas[(task.task_id, provider)] = replace(
            replica, state=REPLICA_REVEALED, revealed_output=output, revealed_cid=cid
        )
        if from_claim:
            task.committed += 1
        task.revealed += 1
        if task.revealed == p.replicas:
            task.ready_at = now
        self.touched = task.task_id

    @rule(data=st.data())
    def reveal_from_claim(self, data: st.DataObject) -> None:
        """A task whose last slot to commit has only claimed: that replica (mostly) reveals.

        The state needs several steps to line up, so this rule looks for it instead of
        waiting for the random rules to meet it; arguments stay random (a late reveal, another
        caller, an empty CID).
        """
        ready = [
            self.tasks[t]
            for t in self.task_order
            if self.tasks[t].open
            and any(self._reveals_from_claim(self.tasks[t], w) for w in self.net.providers)
        ]
        if not ready:
            return
        now = self.net.now()
        in_time = [
            t
            for t in ready
            if any(
                self._reveals_from_claim(t, w) and now <= self._replica(t, w).commit_by
                for w in self.net.providers
            )
        ]
        late = bool(in_time) and data.draw(st.integers(0, 3), label="late") == 3
        task = data.draw(st.sampled_from(in_time if in_time and not late else ready), label="task")
        self.steer = task
        try:
            self._reveal_from_claim(data, task)
        finally:
            self.steer = None

    @rule(data=st.data())
    def reveal_and_finalize(self, data: st.DataObject) -> None:
        """The last reveal settles at once and pays the caller's share straight to the caller."""
        task = self._pick_task(data)
        if task is None:
            return
        p = task.params
        provider, output, cid, salt, _kind = self._draw_reveal(data, task)
        now = self.net.now()
        expected: str | None = self._predict_reveal(task, provider, output, cid, salt, now)
        if task.open and self._reveals_from_claim(task, provider):
            event(f"reveal_and_finalize from the claim: {expected or 'ok'}")
        mine = replace(
            self._replica(task, provider),
            state=REPLICA_REVEALED,
            revealed_output=output,
            revealed_cid=cid,
        )
        reveals = self._reveal_entries(task, extra=(provider, mine)) if task.open else []
        # The winning CID: "" (the caller's own) or the CID a majority replica revealed.
        winning_cid = ""
        settlement: str | SettlementModel | None = None
        if expected is None:
            revealed = task.revealed + 1
            ready_at = now if revealed == p.replicas else task.ready_at
            settlement = self._predict_settlement(
                task,
                reveals,
                winning_cid or cid,
                now,
                revealed=revealed,
                ready_at=ready_at,
                self_reveal=(provider, mine),
            )
            if isinstance(settlement, str):
                expected = settlement
        receipt = self._attempt(
            expected,
            lambda: self.market.reveal_and_finalize(
                p, output, cid, salt, sender=provider, reveals=reveals, winning_cid=winning_cid
            ),
            sender=provider,
        )
        if receipt is None:
            return
        assert isinstance(settlement, SettlementModel)
        self.replicas[(task.task_id, provider)] = mine
        self._apply_settlement(task, settlement, receipt, reveals, direct_to=provider)
        self.touched = task.task_id

    @rule(data=st.data())
    def claim_and_finalize(self, data: st.DataObject) -> None:
        """Claim, reveal and settle a one-replica task at once; the caller is paid at once.

        Mostly aims at an assigned single-shot task nobody holds, else any task (an open one
        must revert ``NotAssignedTask``: nothing commits its output, so it could be
        front-run); callers, values and CIDs are sometimes wrong on purpose.
        """
        task = self.steer
        if task is None:
            single = [
                self.tasks[t]
                for t in self.task_order
                if self.tasks[t].open and self.tasks[t].params.single_shot
            ]
            # Only an assignee may take one; open ones are probed for NotAssignedTask.
            takeable = [t for t in single if self._claimed(t) == 0 and t.params.assigned]
            target = data.draw(st.integers(0, 3), label="target")
            if takeable and target < 2:
                task = data.draw(st.sampled_from(takeable), label="task")
            elif single and target == 2:  # perhaps claimed already: TaskFull
                task = data.draw(st.sampled_from(single), label="task")
            else:
                task = self._pick_task(data)
        if task is None:
            return
        p = task.params
        fitting = [
            w
            for w in self.net.providers
            if self._may_claim(task, w) and self._replica(task, w).state == REPLICA_NONE
        ]
        caller_kind = "fitting"
        if not self.honest:
            # An assigned task draws wrong callers more often: inactive ones must still be
            # refused as NotAssignee, which the contract checks first.
            kinds = ["fitting"] * (3 if p.assigned else 5) + ["provider", "stranger"]
            caller_kind = data.draw(st.sampled_from(kinds), label="caller_kind")
        if caller_kind == "fitting" and fitting:
            provider = data.draw(st.sampled_from(fitting), label="fitting")
        elif caller_kind == "stranger":
            strangers = [self.net.unregistered, self.net.challenger, *self.net.requesters]
            provider = data.draw(st.sampled_from(strangers), label="stranger")
        else:
            provider = data.draw(st.sampled_from(self.net.providers), label="provider")
        value = p.bond
        cid_kind = "ok"
        if not self.honest:
            value += data.draw(st.sampled_from([0] * 9 + [1]), label="value_delta")
            cid_kind = data.draw(st.sampled_from(["ok"] * 9 + ["empty"]), label="cid_kind")
        output = data.draw(st.sampled_from(OUTPUTS), label="output")
        index = self.net.accounts.index(provider)
        cid = "" if cid_kind == "empty" else _cid_for(index, output)
        now = self.net.now()
        expected: str | None
        if not task.open:
            expected = "UnknownTask"
        elif not p.assigned:
            expected = "NotAssignedTask"  # no commitment: an open task could be front-run
        elif not p.single_shot:
            expected = "NotSingleShot"
        else:
            expected = self._predict_claim(task, provider, value, now)
            if expected is None and not cid:
                expected = "EmptyCid"
        kind = "assigned" if p.assigned else "open"
        event(f"claim_and_finalize on an {kind} task: {expected or 'ok'}")
        receipt = self._attempt(
            expected,
            lambda: self.market.claim_and_finalize(p, output, cid, sender=provider, value=value),
            sender=provider,
            value=value,
        )
        self._check_not_assignee(task, provider, expected)
        if expected in ("NotSingleShot", "NotAssignedTask"):
            assert self.last_revert is not None
            assert self.last_revert.args_ == {"taskId": task.task_id}
        if receipt is None:
            return
        payout = p.bounty_per_replica + p.bond
        mine = [e for e in receipt.events if e.address == self.market.address]
        assert [e.name for e in mine] == [
            "ReplicaClaimed",
            "ResultRevealed",
            "TaskFinalized",
            "Withdrawn",
        ]
        claimed, shown, _done, paid = mine
        assert claimed.args == {
            "taskId": task.task_id,
            "provider": provider,
            "commitBy": now + p.commit_timeout,
            "commitment": ZERO32,
        }
        assert bytes(shown.args["outputHash"]) == output and shown.args["resultCid"] == cid
        assert shown.args["provider"] == provider
        done = self.market.settlement(receipt)
        assert done.task_id == task.task_id and int(done.result) == RESULT_ACCEPTED
        assert (done.output_hash, done.result_cid) == (output, cid)
        assert (done.winners, done.payout_per_winner, done.refund) == (1, payout, 0)
        assert paid.args == {"account": provider, "amount": payout}
        self.settlements[(task.task_id, task.incarnation)] += 1
        assert self.settlements[(task.task_id, task.incarnation)] == 1
        self._credit_to(task, provider, payout, provider)
        assert self.paid[(task.task_id, task.incarnation, provider)] == payout
        self._record_outcome(provider, OUTCOME_WON)
        # No replica is stored; reopened replicas of an earlier claim stay, as in ``_finalize``.
        assert self.market.replica(task.task_id, provider).state == REPLICA_NONE
        task.open = False
        task.settled = True
        task.ever_claimed = True
        self.touched = task.task_id

    # -------------------------------------------------------------- rules: anyone

    @rule(data=st.data())
    def finalize(self, data: st.DataObject) -> None:
        """Settle with the right reveal list, a client-built one, or a tampered one."""
        task = self._pick_task(data)
        if task is None:
            return
        p = task.params
        caller = data.draw(st.sampled_from(self.net.accounts), label="caller")
        reveals = self._reveal_entries(task) if task.open else []
        kinds = ["model"] * 5 + ["client", "drop", "swap", "tamper", "wrong_cid", "loser_cid"]
        kind = data.draw(st.sampled_from(kinds[:6] if self.honest else kinds), label="list_kind")
        # The CID one majority replica revealed, as an honest settler would pass it.
        votes = Counter(
            self._replica(task, e.provider).revealed_output
            for e in reveals
            if self._replica(task, e.provider).state == REPLICA_REVEALED
        )
        cid = ""
        if votes:
            best, count = votes.most_common(1)[0]
            if count >= p.quorum:
                cid = next(
                    self._replica(task, e.provider).revealed_cid
                    for e in reveals
                    if self._replica(task, e.provider).state == REPLICA_REVEALED
                    and self._replica(task, e.provider).revealed_output == best
                )
        if kind == "drop" and reveals:
            reveals = reveals[1:]
        elif kind == "swap" and len(reveals) > 1:
            reveals = [reveals[1], reveals[0], *reveals[2:]]
        elif kind == "tamper" and reveals:
            first = reveals[0]
            reveals = [replace(first, output_hash=keccak(first.output_hash)), *reveals[1:]]
        elif kind == "wrong_cid":
            cid = "bafynotrevealed"
        elif kind == "loser_cid":
            losers = [
                self._replica(task, e.provider).revealed_cid
                for e in reveals
                if self._replica(task, e.provider).state == REPLICA_REVEALED
                and self._replica(task, e.provider).revealed_cid != cid
            ]
            cid = losers[0] if losers else cid
        # The client rebuilds the list from events; it must agree with the model.
        use_client = kind == "client" and task.incarnation == 1 and task.open
        if use_client:
            built, cid = self.market.settlement_inputs(p)
            assert built == reveals, "the client's reveal list differs from the model's"
        now = self.net.now()
        if not task.open:
            outcome: str | SettlementModel = "UnknownTask"
        else:
            outcome = self._predict_settlement(
                task, reveals, cid, now, revealed=task.revealed, ready_at=task.ready_at
            )
        expected = outcome if isinstance(outcome, str) else None

        def action() -> Receipt:
            if use_client:
                return self.market.finalize(p, sender=caller)
            return self.market.finalize(p, reveals=reveals, result_cid=cid, sender=caller)

        receipt = self._attempt(expected, action, sender=caller)
        if receipt is None:
            return
        assert isinstance(outcome, SettlementModel)
        self._apply_settlement(task, outcome, receipt, reveals, direct_to=caller)
        self.touched = task.task_id

    @rule(data=st.data())
    def reopen(self, data: st.DataObject) -> None:
        """Free a replica that missed its commit deadline; its bond goes to the requester."""
        task = self._pick_task(data)
        if task is None:
            return
        p = task.params
        provider = self._pick_provider(data, task, (REPLICA_CLAIMED,))
        caller = data.draw(st.sampled_from(self.net.accounts), label="caller")
        replica = self._replica(task, provider)
        now = self.net.now()
        expected: str | None = None
        if not task.open:
            expected = "UnknownTask"
        elif replica.state != REPLICA_CLAIMED:
            expected = "WrongReplicaState"
        elif now <= replica.commit_by:
            expected = "CommitDeadlineNotPassed"
        receipt = self._attempt(
            expected, lambda: self.market.reopen(p, provider, sender=caller), sender=caller
        )
        if receipt is None:
            return
        assert int(receipt.event("ReplicaReopened").args["slashedBond"]) == p.bond
        self.replicas[(task.task_id, provider)] = replace(replica, state=REPLICA_REOPENED)
        self._credit_to(task, p.requester, p.bond, None)
        self._record_outcome(provider, OUTCOME_SLASHED)
        self.touched = task.task_id

    @rule(data=st.data())
    def challenge(self, data: st.DataObject) -> None:
        """Challenge before the settlement time, posting the challenge bond."""
        task = self._pick_task(data)
        if task is None:
            return
        p = task.params
        caller = self.net.challenger
        value = CHALLENGE_BOND
        if not self.honest:
            if data.draw(st.integers(0, 3), label="caller_kind") == 0:
                caller = data.draw(st.sampled_from(self.net.accounts), label="caller")
            value += data.draw(st.sampled_from([0] * 9 + [-1]), label="value_delta")
        now = self.net.now()
        expected: str | None = None
        if not task.open:
            expected = "UnknownTask"
        elif value != CHALLENGE_BOND:
            expected = "WrongValue"
        elif task.challenge != CHALLENGE_NONE:
            expected = "AlreadyChallenged"
        elif p.challenge_window == 0 or now >= self._settle_time(
            task, task.revealed, task.ready_at
        ):
            expected = "ChallengeClosed"
        elif task.revealed < p.replicas and now <= p.reveal_deadline:
            expected = "ChallengeNotOpen"
        elif self._replica(task, caller).state != REPLICA_NONE:
            expected = "SelfChallenge"
        eligible = {
            a
            for a in self.net.providers
            if self.active[a]
            and a not in (p.requester, caller)
            and self._replica(task, a).state == REPLICA_NONE
        }
        if expected is None and len(eligible) < PANEL_SIZE:
            expected = "PanelUnavailable"
        receipt = self._attempt(
            expected,
            lambda: self.market.challenge(p, EVIDENCE, sender=caller, value=value),
            sender=caller,
            value=value,
        )
        if receipt is None:
            return
        task.challenge = CHALLENGE_PENDING
        task.challenger = caller
        record = self.market.challenge_of(task.task_id)
        assert record is not None and record.challenger == caller
        assert len(set(record.panel)) == PANEL_SIZE and set(record.panel) <= eligible
        assert record.vote_by == now + DAY and record.reveal_by == now + 2 * DAY
        task.panel = record.panel
        task.votes = (VOTE_NONE,) * PANEL_SIZE
        self.touched = task.task_id

    @rule(data=st.data())
    def resolve(self, data: st.DataObject) -> None:
        """The panel of a pending challenge votes (each panelist commits and reveals, or stays
        silent), then anyone resolves it: majority of revealed votes, else it lapses."""
        task = self._pick_task(data)
        if task is None:
            return
        caller = data.draw(st.sampled_from(self.net.accounts), label="caller")
        if not task.open or task.challenge != CHALLENGE_PENDING:
            expected = "UnknownTask" if not task.open else "NoPendingChallenge"
            self._attempt(
                expected, lambda: self.market.resolve(task.params, sender=caller), sender=caller
            )
            return
        tid = task.task_id
        votes = [
            data.draw(st.sampled_from([VOTE_NONE, VOTE_UPHOLD, VOTE_REJECT]), label="vote")
            for _ in task.panel
        ]
        for member, vote in zip(task.panel, votes, strict=True):
            if vote != VOTE_NONE:
                self._attempt(
                    None,
                    lambda m=member, v=vote: self.market.commit_vote(
                        tid, v == VOTE_UPHOLD, self.net.panel_salt, sender=m
                    ),
                    sender=member,
                )
        record = self.market.challenge_of(tid)
        assert record is not None
        if VOTE_NONE in votes:
            self.net.chain.advance_time(max(0, record.vote_by + 1 - self.net.now()))
        for member, vote in zip(task.panel, votes, strict=True):
            if vote != VOTE_NONE:
                self._attempt(
                    None,
                    lambda m=member, v=vote: self.market.reveal_vote(
                        tid, v == VOTE_UPHOLD, self.net.panel_salt, sender=m
                    ),
                    sender=member,
                )
        if VOTE_NONE in votes:
            self._attempt(
                "ResolveTooEarly",
                lambda: self.market.resolve(task.params, sender=caller),
                sender=caller,
            )
            self.net.chain.advance_time(max(0, record.reveal_by + 1 - self.net.now()))
        receipt = self._attempt(
            None, lambda: self.market.resolve(task.params, sender=caller), sender=caller
        )
        assert receipt is not None
        up, down = votes.count(VOTE_UPHOLD), votes.count(VOTE_REJECT)
        outcome = CHALLENGE_LAPSED
        if up > down:
            outcome = CHALLENGE_UPHELD
        elif down > up:
            outcome = CHALLENGE_REJECTED
        resolved = receipt.event("ChallengeResolved")
        assert int(resolved.args["outcome"]) == outcome
        assert challenge_state(self.market, tid) == outcome
        assert task.challenger is not None
        if outcome == CHALLENGE_LAPSED:
            self._credit_to(task, task.challenger, CHALLENGE_BOND, None)
        for member, vote in zip(task.panel, votes, strict=True):
            if vote == VOTE_NONE:
                take = min(self.stakes[member], CHALLENGE_BOND // PANEL_SIZE)
                self._credit_to(task, task.params.requester, take, None)
                self._take_stake(member, take)
                self._record_outcome(member, OUTCOME_SLASHED)
        task.challenge = outcome
        task.votes = tuple(votes)
        self.touched = tid

    @rule(data=st.data())
    def withdraw(self, data: st.DataObject) -> None:
        """Pull payments: the caller gets exactly its own balance; zero balance reverts."""
        owed = [a for a in self.net.accounts if self.credit[a]]
        to_owed = bool(owed) and data.draw(st.integers(0, 3), label="owed") > 0
        account = data.draw(
            st.sampled_from(owed if to_owed else self.net.accounts), label="account"
        )
        amount = self.credit[account]
        expected = None if amount else "NothingToWithdraw"
        receipt = self._attempt(
            expected, lambda: self.market.withdraw(sender=account), sender=account
        )
        if receipt is None:
            return
        paid = receipt.event("Withdrawn")
        assert paid.args["account"] == account and int(paid.args["amount"]) == amount
        self.credit[account] = 0
        self.wallet[account] += amount
        self.withdrawn_total[account] += amount

    @rule(data=st.data())
    def unstake(self, data: st.DataObject) -> None:
        """A provider leaves the active set (at most one per run, so claims stay possible)."""
        account = data.draw(
            st.sampled_from([*self.net.providers, self.net.unregistered]), label="account"
        )
        if account in self.stakes and account not in self.unstaked and self.unstaked:
            return
        expected: str | None = None
        if account not in self.stakes:
            expected = "NotRegistered"
        elif account in self.unstaked:
            expected = "UnstakeAlreadyRequested"
        receipt = self._attempt(
            expected, lambda: self.registry.request_unstake(sender=account), sender=account
        )
        if receipt is None:
            return
        self.unstaked.add(account)
        self.active[account] = False

    @rule(seconds=st.sampled_from([1, 2, 5, 30, 120, 300]))
    def advance_time(self, seconds: int) -> None:
        """Move the chain clock (deadlines, commit timeouts, challenge windows)."""
        self.net.chain.advance_time(seconds)

    @rule(data=st.data(), offset=st.sampled_from([-1, 0, 1]))
    def travel_to_boundary(self, data: st.DataObject, offset: int) -> None:
        """Make the next transaction see one second around a deadline of an open task."""
        open_tasks = [self.tasks[t] for t in self.task_order if self.tasks[t].open]
        if not open_tasks:
            return
        task = data.draw(st.sampled_from(open_tasks), label="task")
        p = task.params
        boundaries = [
            p.claim_deadline,
            p.commit_phase_end,
            p.reveal_deadline,
            self._settle_time(task, task.revealed, task.ready_at),
        ]
        boundaries += [
            r.commit_by
            for (tid, _), r in self.replicas.items()
            if tid == task.task_id and r.state == REPLICA_CLAIMED
        ]
        target = data.draw(st.sampled_from(boundaries), label="boundary") + offset
        # Travelling ``seconds`` moves the pending block's timestamp by exactly that much.
        seconds = target - self.net.now()
        if seconds >= 1:
            self.net.chain.advance_time(seconds)
            assert self.net.now() == target

    # -------------------------------------------------------------- steering

    @rule(data=st.data())
    def progress(self, data: st.DataObject) -> None:
        """Take one open task one honest step further: claim, commit, reveal, settle.

        Random rules alone rarely line up the phases of a task; this one waits for the right
        time itself (travelling the clock), so runs reach settlements, challenges and
        payouts, while the other rules keep probing every wrong action in between.
        """
        open_tasks = [self.tasks[t] for t in self.task_order if self.tasks[t].open]
        if not open_tasks:
            return
        task = data.draw(st.sampled_from(open_tasks), label="task")
        for _ in range(data.draw(st.integers(1, 8), label="steps")):
            if not task.open:
                break
            self._progress_once(data, task)
            # The invariants hold between the steps too, not only after the rule.
            self.market_holds_exactly_escrow_bonds_and_balances()
            self.withdrawable_balances_match()
            self.wallets_match_and_ether_is_conserved()
            self.touched_task_matches()

    def _progress_once(self, data: st.DataObject, task: TaskModel) -> None:
        p = task.params
        now = self.net.now()
        states = [self._replica(task, who).state for who in self.net.providers]
        free = [
            who
            for who in self.net.providers
            if self._may_claim(task, who) and self._replica(task, who).state == REPLICA_NONE
        ]
        reveal_open = task.committed >= p.replicas or now > p.commit_phase_end
        self.steer, self.honest = task, True
        try:
            late = [
                who
                for who in self.net.providers
                if self._replica(task, who).state == REPLICA_CLAIMED
                and now > self._replica(task, who).commit_by
            ]
            waiting = [
                self._replica(task, who).commit_by
                for who in self.net.providers
                if self._replica(task, who).state == REPLICA_CLAIMED and who not in late
            ]
            # Now and then the step happens on the last second of its deadline, or one after.
            edge = data.draw(st.sampled_from([None] * 6 + [0, 1]), label="edge")
            if now <= p.claim_deadline and self._claimed(task) < p.replicas and free:
                if edge is not None:
                    self._travel(p.claim_deadline + edge)
                if p.single_shot and p.assigned and data.draw(st.booleans(), label="at_once"):
                    # The provider runs the task first, then claims and settles in one go.
                    self.claim_and_finalize(data)
                    return
                self.claim(data)
                # A node claims, runs the model, then (as the last slot) reveals at once.
                last = [w for w in self.net.providers if self._reveals_from_claim(task, w)]
                if last and data.draw(st.integers(0, 3), label="reveal_at_once") < 3:
                    self._reveal_from_claim(data, task)
            elif (
                waiting
                and task.committed + 1 == p.replicas
                and data.draw(st.integers(0, 3), label="from_claim") < 3
            ):
                # The last slot to commit mostly reveals from its claim (settling a lone
                # replica); otherwise it commits first, as the branch below does.
                if edge is not None:
                    self._travel(min(waiting) + edge)
                self._reveal_from_claim(data, task)
            elif waiting and data.draw(st.integers(0, 3), label="commit") > 0:
                if edge is not None:
                    self._travel(min(waiting) + edge)
                self.commit(data)
            elif late:
                self.reopen(data)
            elif not reveal_open:
                self._travel(p.commit_phase_end + 1)
            elif now <= p.reveal_deadline and REPLICA_COMMITTED in states:
                last = (
                    states.count(REPLICA_COMMITTED) == 1
                    and self._claimed(task) == p.replicas
                    and task.revealed == p.replicas - 1
                )
                if edge is not None:
                    self._travel(p.reveal_deadline + edge)
                if last and data.draw(st.booleans(), label="and_finalize"):
                    self.reveal_and_finalize(data)
                else:
                    # Now and then a dishonest reveal (wrong output or salt) comes first.
                    self.honest = data.draw(st.integers(0, 2), label="honest_reveal") > 0
                    self.reveal(data)
            elif task.challenge == CHALLENGE_PENDING:
                self.resolve(data)  # steered to this task: its panel votes and it resolves
            elif now < self._settle_time(task, task.revealed, task.ready_at):
                settle = self._settle_time(task, task.revealed, task.ready_at)
                if (
                    p.challenge_window
                    and task.challenge == CHALLENGE_NONE
                    and data.draw(st.booleans(), label="challenge_first")
                ):
                    if edge is not None:
                        self._travel(settle - 1 + edge)
                    self.challenge(data)
                elif edge is not None:
                    self._travel(settle - 1 + edge)  # the last second before settlement, or it
                    self.finalize(data)
                else:
                    self._travel(settle)
            else:
                self.finalize(data)
        finally:
            self.steer, self.honest, self.direct = None, False, False

    def _reveal_from_claim(self, data: st.DataObject, task: TaskModel) -> None:
        """The last slot to commit reveals from its claim (a lone replica may settle at once)."""
        self.direct = True
        try:
            p = task.params
            settle = data.draw(st.integers(0, 1), label="settle") == 0
            if task.revealed == p.replicas - 1 and settle:
                self.reveal_and_finalize(data)
            else:
                self.reveal(data)
        finally:
            self.direct = False

    def _travel(self, target: int) -> None:
        seconds = target - self.net.now()
        if seconds >= 1:
            self.net.chain.advance_time(seconds)
            assert self.net.now() == target

    @rule(data=st.data())
    def progress_more(self, data: st.DataObject) -> None:
        self.progress(data)

    @rule(data=st.data())
    def progress_even_more(self, data: st.DataObject) -> None:
        self.progress(data)

    # -------------------------------------------------------------- weights
    # Rules are drawn uniformly; the lifecycle steps appear more than once so that random
    # sequences reach reveals, settlements and challenges within a short run.

    @rule(data=st.data())
    def claim_more(self, data: st.DataObject) -> None:
        self.claim(data)

    @rule(data=st.data())
    def claim_even_more(self, data: st.DataObject) -> None:
        self.claim(data)

    @rule(data=st.data())
    def reveal_more(self, data: st.DataObject) -> None:
        self.reveal(data)

    @rule(data=st.data())
    def reveal_even_more(self, data: st.DataObject) -> None:
        self.reveal(data)

    @rule(data=st.data())
    def finalize_more(self, data: st.DataObject) -> None:
        self.finalize(data)

    @rule(data=st.data())
    def claim_and_finalize_more(self, data: st.DataObject) -> None:
        self.claim_and_finalize(data)

    @rule(data=st.data())
    def claim_and_finalize_even_more(self, data: st.DataObject) -> None:
        self.claim_and_finalize(data)

    @rule(data=st.data())
    def reveal_from_claim_more(self, data: st.DataObject) -> None:
        self.reveal_from_claim(data)

    @rule(data=st.data(), offset=st.sampled_from([-1, 0, 1]))
    def travel_more(self, data: st.DataObject, offset: int) -> None:
        self.travel_to_boundary(data, offset)

    # -------------------------------------------------------------- invariants

    @invariant()
    def market_holds_exactly_escrow_bonds_and_balances(self) -> None:
        escrow = sum(self._escrow(t) for t in self.tasks.values())
        owed = sum(self.credit.values())
        held = self.net.wallet(self.market.address)
        assert held - self.market_start == escrow + owed, (
            f"market holds {held - self.market_start}, model says escrow {escrow} + owed {owed}"
        )

    @invariant()
    def withdrawable_balances_match(self) -> None:
        # A reverted call changes no state; the per-account reads follow successful ones only
        # (the market's total is checked after every step).
        if not self.dirty:
            return
        self.dirty = False
        for account in self.net.accounts:
            assert self.market.balance_of(account) == self.credit[account], account
            assert (
                self.withdrawn_total[account] + self.credit[account]
                == (self.credited_total[account])
            )

    @invariant()
    def wallets_match_and_ether_is_conserved(self) -> None:
        total = 0
        for account in self.net.accounts:
            balance = self.net.wallet(account)
            assert balance == self.wallet[account], f"wallet of {account}"
            total += balance
        registry = self.net.wallet(self.registry.address)
        # Stakes stay until withdrawn, except what slashStake sent to the market.
        assert registry - self.registry_start == -self.stake_slashed
        total += self.net.wallet(self.market.address) + registry
        assert total + self.fees == self.total_start

    @invariant()
    def touched_task_matches(self) -> None:
        if self.touched is None:
            return
        task = self.tasks[self.touched]
        state = self.market.task_state(task.task_id)
        if not task.open:
            assert not state.open and state.claimed == 0 and state.revealed == 0
        else:
            assert state.open
            assert state.claimed == self._claimed(task)
            assert state.committed == task.committed
            assert state.revealed == task.revealed
            assert int(state.challenge) == task.challenge
            assert state.ever_claimed == task.ever_claimed
            assert state.ready_at == task.ready_at
        for provider in self.net.providers:
            rep = self.registry.reputation(provider)
            model = self.reputation[provider]
            assert (rep.won, rep.lost, rep.slashed, rep.audits_passed, rep.audits_failed) == (
                model["won"],
                model["lost"],
                model["slashed"],
                model["audits_passed"],
                model["audits_failed"],
            ), provider
        self.touched = None


TaskMarketMachine.TestCase.settings = _stateful_settings()
TestTaskMarketStateful = TaskMarketMachine.TestCase


def test_mismatched_reveals_revert_and_change_nothing() -> None:
    """The machine reaches mismatched reveals at random; this pins every variant down."""
    net = _get_network()
    net.reset()
    market = net.market
    provider = net.providers[0]
    now = net.now()
    params = TaskParams(
        requester=net.requesters[0],
        bundle_hash=keccak(b"mismatch bundle"),
        replicas=1,
        quorum=1,
        bounty_per_replica=10**15,
        bond=10**14,
        claim_deadline=now + 60,
        commit_timeout=30,
        reveal_deadline=now + 200,
        challenge_window=0,
        nonce=next(_nonces),
    )
    market.post_task(params, "bafybundle")
    salt = keccak(b"secret")
    market.claim(params, make_commitment(OUTPUTS[0], salt, provider), sender=provider)
    before = (
        market.task_state(market.task_id(params)),
        market.replica(market.task_id(params), provider),
    )
    wrong = [
        (OUTPUTS[1], salt, provider),  # another output
        (OUTPUTS[0], keccak(salt), provider),  # another salt
    ]
    for output, used_salt, sender in wrong:
        try:
            market.reveal(params, output, "bafyresult", used_salt, sender=sender)
        except TxReverted as exc:
            assert exc.error_name == "CommitmentMismatch"
        else:
            raise AssertionError("a reveal that does not match its commitment was accepted")
        after = (
            market.task_state(market.task_id(params)),
            market.replica(market.task_id(params), provider),
        )
        assert after == before
    market.reveal(params, OUTPUTS[0], "bafyresult", salt, sender=provider)
    assert market.replica(market.task_id(params), provider).state == REPLICA_REVEALED


# ------------------------------------------------------------------ behaviour found by the machine


def test_reposted_terms_reuse_the_task_id_and_keep_reopened_replicas() -> None:
    """Posting the exact terms of a settled task again revives the same task id.

    The replica of a provider that was reopened (missed its commit deadline) is never deleted,
    so in the revived task that provider stays locked out (``AlreadyClaimed``). Replicas listed
    in a settlement are deleted and may claim again. The state machine's ``repost`` rule
    models exactly this; the contract documents "pick a fresh nonce per task".
    """
    net = _get_network()
    net.reset()
    market, chain = net.market, net.chain
    late, first, second = sorted(net.providers[:3], key=lambda a: int(a, 16))
    now = net.now()
    params = TaskParams(
        requester=net.requesters[0],
        bundle_hash=keccak(b"reposted bundle"),
        replicas=2,
        quorum=2,
        bounty_per_replica=10**15,
        bond=10**14,
        claim_deadline=now + 300,
        commit_timeout=3,
        reveal_deadline=now + 600,
        challenge_window=0,
        nonce=next(_nonces),
    )
    market.post_task(params, "bafybundle")
    market.claim(params, sender=late)  # claims, never commits
    chain.advance_time(10)
    market.reopen(params, late)
    salt = keccak(b"salt")
    cid = "bafyresult"
    for provider in (first, second):
        market.claim(params, make_commitment(OUTPUTS[0], salt, provider), sender=provider)
    for provider in (first, second):
        market.reveal(params, OUTPUTS[0], cid, salt, sender=provider)
    reveals = [RevealEntry(p, OUTPUTS[0], result_cid_hash(cid)) for p in (first, second)]
    receipt = market.finalize(params, reveals=reveals, result_cid=cid)
    assert int(market.settlement(receipt).result) == RESULT_ACCEPTED

    again = market.post_task(params, "bafybundle")
    assert again.task_id == market.task_id(params)
    assert market.replica(market.task_id(params), late).state == REPLICA_REOPENED
    try:
        market.claim(params, sender=late)
    except TxReverted as exc:
        assert exc.error_name == "AlreadyClaimed"
    else:
        raise AssertionError("a reopened provider claimed the revived task")
    market.claim(params, sender=first)  # settled replicas were deleted: free to claim again
    # The reveal list is rebuilt from events since the latest TaskPosted only: ``second``
    # claimed the first incarnation, not this one (counting it would revert BadRevealList).
    built, _ = market.settlement_inputs(params)
    assert [e.provider for e in built] == [first]
