"""Typed client for the ``TaskMarket`` contract."""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass

from chefsplan_agents.chain import BoundContract, Chain, Event, Receipt, to_address, to_bytes32
from chefsplan_agents.errors import MarketError
from chefsplan_agents.market._records import (
    MAX_REPLICAS,
    ZERO_ADDRESS,
    ChallengeRecord,
    ReplicaRecord,
    RevealEntry,
    Settlement,
    TaskParams,
    TaskRecord,
    TaskStateRecord,
    check_horizons,
    result_cid_hash,
    task_id_of,
    vote_commitment,
)

__all__ = ["MarketClient", "PostedTask"]

_ZERO32 = b"\x00" * 32


def check_assignment(assignee: str | None, replicas: int) -> None:
    """Raise :class:`MarketError` for an assigned task with more than one replica."""
    if assignee is not None and replicas != 1:
        raise MarketError(
            f"a task assigned to one provider has one replica (got replicas={replicas})"
        )


@dataclass(frozen=True)
class PostedTask:
    """A task just posted: its id, its terms and the receipt of ``postTask``."""

    task_id: bytes
    params: TaskParams
    bundle_cid: str
    receipt: Receipt


class MarketClient:
    """Post tasks, claim, commit, reveal and settle them on the ``TaskMarket``.

    Every call takes the task's :class:`TaskParams` (the contract stores only their hash).
    Reverts surface as the contract's custom errors (``chefsplan_agents.chain.errors``):
    ``ClaimClosed``, ``TaskFull``, ``CommitmentMismatch``, ``TooEarly``, ….

    Args:
        contract: The deployed ``TaskMarket`` (``Deployment.market``).
        from_block: Where event scans start (``Deployment.deployed_at``).
    """

    def __init__(self, contract: BoundContract, *, from_block: int = 0) -> None:
        if contract.name != "TaskMarket":
            raise MarketError(f"MarketClient needs a TaskMarket, not {contract.name}")
        self.contract = contract
        self.from_block = from_block
        self._challenge_bond: int | None = None

    @classmethod
    def at(cls, chain: Chain, address: str, *, from_block: int = 0) -> MarketClient:
        """Bind the market deployed at ``address``."""
        return cls(chain.contract("TaskMarket", address), from_block=from_block)

    @property
    def chain(self) -> Chain:
        """The chain the market lives on."""
        return self.contract.chain

    @property
    def address(self) -> str:
        """The market contract's address."""
        return self.contract.address

    # ------------------------------------------------------------------ requester

    def new_task(
        self,
        bundle_hash: bytes | str,
        *,
        bounty_per_replica: int,
        bond: int,
        replicas: int = 1,
        quorum: int | None = None,
        claim_window: int = 600,
        commit_timeout: int = 300,
        reveal_window: int = 600,
        challenge_window: int = 0,
        requester: str | None = None,
        nonce: int | None = None,
        assignee: str | None = None,
    ) -> TaskParams:
        """Terms for a new task, with deadlines counted from the chain's clock.

        "Now" is :meth:`Chain.pending_timestamp`, the time the posting transaction will see.

        Args:
            bundle_hash: Hash of the canonical TaskBundle bytes.
            bounty_per_replica: Wei paid to each winning replica.
            bond: Wei each claiming provider posts.
            replicas: Providers that run the task (1 to 16).
            quorum: Matching reveals needed to accept (default: a simple majority).
            claim_window: Seconds from now until claims close.
            commit_timeout: Seconds a claimer has to commit.
            reveal_window: Seconds for reveals after the commit phase.
            challenge_window: Seconds between reveals closing and settlement (0: none).
            requester: The posting account (default: the chain's default account).
            nonce: Makes equal terms distinct tasks (default: random).
            assignee: The one provider that may claim the task (default: any active one);
                an assigned task has one replica.

        Raises:
            MarketError: A count or duration is out of range (see :func:`check_horizons`), or
                an assigned task asks for more than one replica.
        """
        if not 1 <= replicas <= MAX_REPLICAS:
            raise MarketError(f"replicas must be 1 to {MAX_REPLICAS} (got {replicas})")
        check_assignment(assignee, replicas)
        quorum = replicas // 2 + 1 if quorum is None else quorum
        for name, value in (
            ("claim_window", claim_window),
            ("commit_timeout", commit_timeout),
            ("reveal_window", reveal_window),
            ("challenge_window", challenge_window),
        ):
            if value < 0:
                raise MarketError(f"{name} must not be negative (got {value})")
        now = self.chain.pending_timestamp()
        claim_deadline = now + claim_window
        params = TaskParams(
            requester=to_address(requester or self.chain.default_account, "requester"),
            bundle_hash=to_bytes32(bundle_hash, "bundle_hash"),
            replicas=replicas,
            quorum=quorum,
            bounty_per_replica=bounty_per_replica,
            bond=bond,
            claim_deadline=claim_deadline,
            commit_timeout=commit_timeout,
            reveal_deadline=claim_deadline + commit_timeout + reveal_window,
            challenge_window=challenge_window,
            nonce=secrets.randbits(64) if nonce is None else nonce,
            assignee=ZERO_ADDRESS if assignee is None else to_address(assignee, "assignee"),
        )
        check_horizons(params, now)
        return params

    def post_task(
        self, params: TaskParams, bundle_cid: str, *, value: int | None = None
    ) -> PostedTask:
        """Post a task, escrowing its whole bounty from ``params.requester``.

        Args:
            params: The terms (:meth:`new_task`).
            bundle_cid: CID of the TaskBundle on IPFS.
            value: Wei to send (default: exactly ``params.escrow``).

        Raises:
            MarketError: The terms break the market's bounds at the chain's current time
                (:func:`check_horizons`); nothing is sent.
        """
        check_horizons(params, self.chain.pending_timestamp())
        receipt = self.contract.transact(
            "postTask",
            params.as_abi(),
            bundle_cid,
            sender=params.requester,
            value=params.escrow if value is None else value,
        )
        task_id = bytes(receipt.event("TaskPosted").args["taskId"])
        return PostedTask(task_id, params, bundle_cid, receipt)

    def cancel(self, params: TaskParams, *, sender: str | None = None) -> Receipt:
        """Cancel a task nobody claimed; the bounty is credited to the requester."""
        return self.contract.transact("cancel", params.as_abi(), sender=sender or params.requester)

    # ------------------------------------------------------------------ provider

    def claim(
        self,
        params: TaskParams,
        commitment: bytes | str | None = None,
        *,
        sender: str | None = None,
        value: int | None = None,
    ) -> Receipt:
        """Claim one replica, posting ``params.bond``; a commitment commits in the same call."""
        commit = _ZERO32 if commitment is None else to_bytes32(commitment, "commitment")
        return self.contract.transact(
            "claim",
            params.as_abi(),
            commit,
            sender=sender,
            value=params.bond if value is None else value,
        )

    def claim_and_finalize(
        self,
        params: TaskParams,
        output_hash: bytes | str,
        result_cid: str,
        *,
        sender: str | None = None,
        value: int | None = None,
    ) -> Receipt:
        """Claim, reveal and settle a one-replica task without a challenge window at once.

        Sent after running the task; the sender is paid bounty + bond in the same transaction.
        This is how an assignee runs a task assigned to it (``TaskParams.assignee``).
        """
        return self.contract.transact(
            "claimAndFinalize",
            params.as_abi(),
            to_bytes32(output_hash, "output_hash"),
            result_cid,
            sender=sender,
            value=params.bond if value is None else value,
        )

    def commit(
        self, params: TaskParams, commitment: bytes | str, *, sender: str | None = None
    ) -> Receipt:
        """Commit to a result (:func:`make_commitment`) before the claim's commit deadline."""
        return self.contract.transact(
            "commit", params.as_abi(), to_bytes32(commitment, "commitment"), sender=sender
        )

    def reveal(
        self,
        params: TaskParams,
        output_hash: bytes | str,
        result_cid: str,
        salt: bytes | str,
        *,
        sender: str | None = None,
    ) -> Receipt:
        """Reveal the committed output hash, the result's CID and the salt."""
        return self.contract.transact(
            "reveal",
            params.as_abi(),
            to_bytes32(output_hash, "output_hash"),
            result_cid,
            to_bytes32(salt, "salt"),
            sender=sender,
        )

    def reveal_and_finalize(
        self,
        params: TaskParams,
        output_hash: bytes | str,
        result_cid: str,
        salt: bytes | str,
        *,
        sender: str | None = None,
        reveals: list[RevealEntry] | None = None,
        winning_cid: str = "",
    ) -> Receipt:
        """Reveal last and settle at once (only when that reveal reaches the settlement time).

        ``reveals`` defaults to the list built from the chain's events plus this reveal.
        """
        who = to_address(sender or self.chain.default_account, "sender")
        out = to_bytes32(output_hash, "output_hash")
        if reveals is None:
            reveals, built_cid = self.settlement_inputs(params, pending=(who, out, result_cid))
            winning_cid = winning_cid or built_cid
        return self.contract.transact(
            "revealAndFinalize",
            params.as_abi(),
            out,
            result_cid,
            to_bytes32(salt, "salt"),
            [r.as_abi() for r in reveals],
            winning_cid,
            sender=who,
        )

    # ------------------------------------------------------------------ anyone

    def finalize(
        self,
        params: TaskParams,
        *,
        reveals: list[RevealEntry] | None = None,
        result_cid: str | None = None,
        sender: str | None = None,
    ) -> Receipt:
        """Settle a task at or after its settlement time.

        ``reveals`` and ``result_cid`` default to what the chain's events say (see
        :meth:`settlement_inputs`); pass them to settle from your own records.
        """
        if reveals is None or result_cid is None:
            built, cid = self.settlement_inputs(params)
            reveals = built if reveals is None else reveals
            result_cid = cid if result_cid is None else result_cid
        return self.contract.transact(
            "finalize", params.as_abi(), [r.as_abi() for r in reveals], result_cid, sender=sender
        )

    def reopen(self, params: TaskParams, provider: str, *, sender: str | None = None) -> Receipt:
        """Free the slot of a replica that missed its commit deadline (its bond is slashed)."""
        return self.contract.transact(
            "reopen", params.as_abi(), to_address(provider, "provider"), sender=sender
        )

    def challenge(
        self,
        params: TaskParams,
        evidence_cid: str,
        *,
        sender: str | None = None,
        value: int | None = None,
    ) -> Receipt:
        """Challenge a task before its settlement time, posting the challenge bond.

        Args:
            params: The task's terms.
            evidence_cid: CID of the evidence the panel is to check (see
                :func:`chefsplan_agents.verify.publish_evidence`); emitted in ``TaskChallenged``.
            sender: The challenger.
            value: Wei sent (default: the challenge bond).
        """
        return self.contract.transact(
            "challenge",
            params.as_abi(),
            evidence_cid,
            sender=sender,
            value=self.challenge_bond if value is None else value,
        )

    def commit_vote(
        self, task_id: bytes | str, upheld: bool, salt: bytes | str, *, sender: str
    ) -> Receipt:
        """Commit a panelist's vote on a pending challenge (before ``voteBy``).

        The commitment is :meth:`vote_commitment` of ``upheld``, ``salt`` and ``sender``; keep
        the salt secret until :meth:`reveal_vote`.
        """
        commitment = vote_commitment(upheld, to_bytes32(salt, "salt"), sender)
        return self.contract.transact(
            "commitVote", to_bytes32(task_id, "task_id"), commitment, sender=sender
        )

    def reveal_vote(
        self, task_id: bytes | str, upheld: bool, salt: bytes | str, *, sender: str
    ) -> Receipt:
        """Reveal a committed vote (once every panelist committed or ``voteBy`` passed)."""
        return self.contract.transact(
            "revealVote",
            to_bytes32(task_id, "task_id"),
            upheld,
            to_bytes32(salt, "salt"),
            sender=sender,
        )

    def resolve(self, params: TaskParams, *, sender: str | None = None) -> Receipt:
        """Decide a pending challenge from its panel's revealed votes (anyone, once every
        panelist revealed or the vote reveal deadline passed; no decision lapses it)."""
        return self.contract.transact("resolveChallenge", params.as_abi(), sender=sender)

    def withdraw(self, *, sender: str | None = None) -> Receipt:
        """Pay the sender's whole market balance out (pull payment)."""
        return self.contract.transact("withdraw", sender=sender)

    # ------------------------------------------------------------------ views

    def task_id(self, params: TaskParams) -> bytes:
        """The id this market gives a task with terms ``params`` (computed locally)."""
        return task_id_of(params, self.chain.chain_id, self.address)

    def task_id_of(self, params: TaskParams) -> bytes:
        """The task id as the contract computes it (a call)."""
        return bytes(self.contract.call("taskIdOf", params.as_abi()))

    def commitment_of(self, output_hash: bytes | str, salt: bytes | str, provider: str) -> bytes:
        """The commitment as the contract computes it (see :func:`make_commitment`)."""
        return bytes(
            self.contract.call(
                "commitmentOf",
                to_bytes32(output_hash, "output_hash"),
                to_bytes32(salt, "salt"),
                to_address(provider, "provider"),
            )
        )

    def task_state(self, task_id: bytes | str) -> TaskStateRecord:
        """The mutable state of a task (closed and zero once settled or cancelled)."""
        raw = self.contract.call("taskState", to_bytes32(task_id, "task_id"))
        return TaskStateRecord.from_abi(raw)

    def replica(self, task_id: bytes | str, provider: str) -> ReplicaRecord:
        """One provider's replica of a task."""
        raw = self.contract.call(
            "replicaOf", to_bytes32(task_id, "task_id"), to_address(provider, "provider")
        )
        return ReplicaRecord.from_abi(raw)

    def settle_time(self, params: TaskParams) -> int:
        """The earliest time :meth:`finalize` may run."""
        return int(self.contract.call("settleTime", params.as_abi()))

    def challenger_of(self, task_id: bytes | str) -> str | None:
        """Who challenged the task, or ``None``."""
        address = str(self.contract.call("challengerOf", to_bytes32(task_id, "task_id")))
        return None if int(address, 16) == 0 else address

    def balance_of(self, account: str) -> int:
        """Wei ``account`` can :meth:`withdraw`."""
        return int(self.contract.call("balanceOf", to_address(account, "account")))

    @property
    def challenge_bond(self) -> int:
        """Wei a challenger posts."""
        if self._challenge_bond is None:
            self._challenge_bond = int(self.contract.call("challengeBond"))
        return self._challenge_bond

    def challenge_of(self, task_id: bytes | str) -> ChallengeRecord | None:
        """A task's challenge and its panel, or ``None`` if it has none."""
        raw = self.contract.call("challengeOf", to_bytes32(task_id, "task_id"))
        record = ChallengeRecord.from_abi(raw)
        return None if int(record.challenger, 16) == 0 else record

    def vote_commitment_of(self, upheld: bool, salt: bytes | str, panelist: str) -> bytes:
        """The vote commitment as the contract computes it (see :func:`vote_commitment`)."""
        return bytes(
            self.contract.call(
                "voteCommitmentOf",
                upheld,
                to_bytes32(salt, "salt"),
                to_address(panelist, "panelist"),
            )
        )

    @property
    def panel_size(self) -> int:
        """Panelists drawn per challenge."""
        return int(self.contract.call("PANEL_SIZE"))

    def get_task(self, task_id: bytes | str) -> TaskRecord | None:
        """A posted task's terms, bundle CID and state, or ``None`` if it was never posted."""
        tid = to_bytes32(task_id, "task_id")
        posted = self.events("TaskPosted", task_id=tid)
        if not posted:
            return None
        event = posted[0]
        return TaskRecord(
            task_id=tid,
            params=TaskParams.from_abi(event.args["params"]),
            bundle_cid=str(event.args["bundleCid"]),
            state=self.task_state(tid),
            posted_block=event.block_number,
        )

    def events(
        self,
        name: str,
        *,
        task_id: bytes | str | None = None,
        provider: str | None = None,
    ) -> list[Event]:
        """Past market events, optionally of one task and one provider."""
        filters: dict[str, object] = {}
        if task_id is not None:
            filters["taskId"] = to_bytes32(task_id, "task_id")
        if provider is not None:
            filters["provider"] = to_address(provider, "provider")
        return self.contract.get_logs(name, from_block=self.from_block, filters=filters or None)

    def settlement_inputs(
        self, params: TaskParams, *, pending: tuple[str, bytes, str] | None = None
    ) -> tuple[list[RevealEntry], str]:
        """The reveal list and winning CID ``finalize`` needs, rebuilt from the chain's events.

        Args:
            params: The task's terms.
            pending: A reveal not yet on chain, ``(provider, output_hash, result_cid)``, counted
                as if it were (for :meth:`reveal_and_finalize`).

        Returns:
            Every currently claimed replica in ascending address order with what it revealed
            (zero hashes if it did not), and the CID one majority replica revealed ("" when no
            output hash reaches the quorum).
        """
        tid = self.task_id(params)
        # The same terms posted again after settlement revive the same id: only events since
        # its latest TaskPosted belong to the task being settled.
        posts = self.events("TaskPosted", task_id=tid)
        since = max(((e.block_number, e.log_index) for e in posts), default=(-1, -1))

        def current_events(name: str) -> list[Event]:
            return [
                e for e in self.events(name, task_id=tid) if (e.block_number, e.log_index) > since
            ]

        claimed = [str(e.args["provider"]) for e in current_events("ReplicaClaimed")]
        reopened = {str(e.args["provider"]) for e in current_events("ReplicaReopened")}
        revealed = {
            str(e.args["provider"]): (bytes(e.args["outputHash"]), str(e.args["resultCid"]))
            for e in current_events("ResultRevealed")
        }
        if pending is not None:
            revealed[to_address(pending[0])] = (pending[1], pending[2])
        current = sorted({p for p in claimed if p not in reopened}, key=lambda a: int(a, 16))
        entries = []
        for provider in current:
            if provider in revealed:
                out, cid = revealed[provider]
                entries.append(RevealEntry(provider, out, result_cid_hash(cid)))
            else:
                entries.append(RevealEntry(provider))
        votes = Counter(out for out, _ in revealed.values())
        winning_cid = ""
        if votes:
            best, count = votes.most_common(1)[0]
            if count >= params.quorum:
                winning_cid = next(cid for out, cid in revealed.values() if out == best)
        return entries, winning_cid

    @staticmethod
    def settlement(receipt: Receipt) -> Settlement:
        """How a task settled, from the receipt of ``finalize`` or ``revealAndFinalize``."""
        return Settlement.from_event(receipt.event("TaskFinalized"))
