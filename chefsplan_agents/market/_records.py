"""Typed records of the ``TaskMarket`` contract and the commitment it checks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from chefsplan_agents.chain import Event, to_address, to_bytes32
from chefsplan_agents.errors import MarketError

__all__ = [
    "MAX_CHALLENGE_WINDOW",
    "MAX_COMMIT_TIMEOUT",
    "MAX_REPLICAS",
    "MAX_TASK_HORIZON",
    "TASK_PARAMS_TYPE",
    "ZERO_ADDRESS",
    "ChallengeRecord",
    "ChallengeState",
    "VoteState",
    "ReplicaRecord",
    "ReplicaState",
    "RevealEntry",
    "Settlement",
    "TaskParams",
    "TaskRecord",
    "TaskResult",
    "TaskStateRecord",
    "check_horizons",
    "make_commitment",
    "new_salt",
    "result_cid_hash",
    "task_id_of",
    "vote_commitment",
]

# The ABI tuple of ``TaskMarket.TaskParams``, in field order.
TASK_PARAMS_TYPE = (
    "(address,address,bytes32,uint8,uint8,uint96,uint96,uint64,uint64,uint64,uint64,uint64)"
)

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"

# The contract's bounds on a task's terms (``TaskMarket.MAX_*``; a test keeps them equal).
MAX_REPLICAS = 16
MAX_TASK_HORIZON = 30 * 24 * 3600
"""Latest reveal deadline (and so claim deadline) after the posting block, in seconds."""
MAX_COMMIT_TIMEOUT = 7 * 24 * 3600
"""Longest ``commit_timeout``, in seconds."""
MAX_CHALLENGE_WINDOW = 7 * 24 * 3600
"""Longest ``challenge_window``, in seconds."""


class ReplicaState(IntEnum):
    """Where one provider's replica of a task stands."""

    NONE = 0
    CLAIMED = 1
    COMMITTED = 2
    REVEALED = 3
    REOPENED = 4


class ChallengeState(IntEnum):
    """A task's challenge."""

    NONE = 0
    PENDING = 1
    UPHELD = 2
    REJECTED = 3
    LAPSED = 4  # the panel did not decide: rejected, the challenger's bond refunded


class VoteState(IntEnum):
    """Where one panelist's vote on a challenge stands."""

    NONE = 0
    COMMITTED = 1
    UPHOLD = 2
    REJECT = 3


class TaskResult(IntEnum):
    """How a task settled (``TaskFinalized.result``)."""

    ACCEPTED = 1
    NO_QUORUM = 2
    OVERTURNED = 3


def make_commitment(output_hash: bytes | str, salt: bytes | str, provider: str) -> bytes:
    """The commitment a provider submits: ``keccak256(abi.encode(outputHash, salt, provider))``.

    Computed exactly as ``TaskMarket.commitmentOf`` does, so the provider can commit without a
    call to the chain.
    """
    return keccak(
        abi_encode(
            ["bytes32", "bytes32", "address"],
            [
                to_bytes32(output_hash, "output_hash"),
                to_bytes32(salt, "salt"),
                to_address(provider),
            ],
        )
    )


def vote_commitment(upheld: bool, salt: bytes | str, panelist: str) -> bytes:
    """A panelist's vote commitment: ``keccak256(abi.encode(upheld, salt, panelist))``, as
    ``TaskMarket.voteCommitmentOf`` computes it."""
    return keccak(
        abi_encode(
            ["bool", "bytes32", "address"],
            [upheld, to_bytes32(salt, "salt"), to_address(panelist, "panelist")],
        )
    )


def new_salt() -> bytes:
    """A fresh random 32-byte salt for a commitment (keep it secret until the reveal)."""
    return os.urandom(32)


def result_cid_hash(result_cid: str) -> bytes:
    """``keccak256(bytes(resultCid))``, as the settlement's reveal list carries it."""
    return keccak(result_cid.encode("utf-8"))


def task_id_of(params: TaskParams, chain_id: int, market: str) -> bytes:
    """The id a market gives a task: ``keccak256(abi.encode(chainid, market, params))``.

    The id binds the chain and the market contract, so equal terms posted on another chain
    or market name another task.
    """
    return keccak(
        abi_encode(
            ["uint256", "address", TASK_PARAMS_TYPE],
            [chain_id, to_address(market, "market"), params.as_abi()],
        )
    )


def check_horizons(params: TaskParams, now: int) -> None:
    """Raise :class:`~chefsplan_agents.errors.MarketError` for terms the market refuses.

    Checks, as ``postTask`` does at time ``now``: the deadlines' order, a reveal deadline at
    most :data:`MAX_TASK_HORIZON` away, a commit timeout of 1 s to :data:`MAX_COMMIT_TIMEOUT`
    and a challenge window of at most :data:`MAX_CHALLENGE_WINDOW`.
    """
    day = 24 * 3600
    if not 0 < params.commit_timeout <= MAX_COMMIT_TIMEOUT:
        raise MarketError(
            f"commit_timeout must be 1 s to {MAX_COMMIT_TIMEOUT // day} days "
            f"(got {params.commit_timeout} s)"
        )
    if params.challenge_window > MAX_CHALLENGE_WINDOW:
        raise MarketError(
            f"challenge_window must be at most {MAX_CHALLENGE_WINDOW // day} days "
            f"(got {params.challenge_window} s)"
        )
    if params.claim_deadline <= now:
        raise MarketError(
            f"claim deadline {params.claim_deadline} is not after the chain's time {now}"
        )
    if params.reveal_deadline <= params.claim_deadline + params.commit_timeout:
        raise MarketError(
            f"reveal deadline {params.reveal_deadline} must come after claim deadline + "
            f"commit timeout ({params.claim_deadline + params.commit_timeout})"
        )
    if params.reveal_deadline > now + MAX_TASK_HORIZON:
        raise MarketError(
            f"reveal deadline {params.reveal_deadline} is more than "
            f"{MAX_TASK_HORIZON // day} days after the chain's time {now}; shorten the windows"
        )


@dataclass(frozen=True)
class TaskParams:
    """The immutable terms of a task; their ABI hash, with the chain id and the market's
    address, is the task id (:func:`task_id_of`).

    Build one with :meth:`MarketClient.new_task`. Amounts are wei, deadlines unix seconds.
    ``assignee`` names the one provider that may claim the task (the zero address: any
    active provider); an assigned task has one replica.
    """

    requester: str
    bundle_hash: bytes
    replicas: int
    quorum: int
    bounty_per_replica: int
    bond: int
    claim_deadline: int
    commit_timeout: int
    reveal_deadline: int
    challenge_window: int
    nonce: int
    assignee: str = ZERO_ADDRESS

    @property
    def assigned(self) -> bool:
        """Whether the task names the one provider that may claim it."""
        return self.assignee != ZERO_ADDRESS

    @property
    def single_shot(self) -> bool:
        """Whether ``claimAndFinalize`` can take it: one replica, no challenge window."""
        return self.replicas == 1 and self.challenge_window == 0

    def as_abi(self) -> tuple[Any, ...]:
        """The struct as the contract takes it."""
        return (
            to_address(self.requester, "requester"),
            to_address(self.assignee, "assignee"),
            to_bytes32(self.bundle_hash, "bundle_hash"),
            self.replicas,
            self.quorum,
            self.bounty_per_replica,
            self.bond,
            self.claim_deadline,
            self.commit_timeout,
            self.reveal_deadline,
            self.challenge_window,
            self.nonce,
        )

    @property
    def escrow(self) -> int:
        """Wei the requester escrows when posting: the bounty of every replica."""
        return self.bounty_per_replica * self.replicas

    @property
    def commit_phase_end(self) -> int:
        """After this time every reveal is open even if some replica never committed."""
        return self.claim_deadline + self.commit_timeout

    @classmethod
    def from_abi(cls, raw: Mapping[str, Any]) -> TaskParams:
        """From the struct as decoded from an event or a call (a dict by field name)."""
        return cls(
            requester=to_address(str(raw["requester"])),
            assignee=to_address(str(raw["assignee"])),
            bundle_hash=bytes(raw["bundleHash"]),
            replicas=int(raw["replicas"]),
            quorum=int(raw["quorum"]),
            bounty_per_replica=int(raw["bountyPerReplica"]),
            bond=int(raw["bond"]),
            claim_deadline=int(raw["claimDeadline"]),
            commit_timeout=int(raw["commitTimeout"]),
            reveal_deadline=int(raw["revealDeadline"]),
            challenge_window=int(raw["challengeWindow"]),
            nonce=int(raw["nonce"]),
        )


@dataclass(frozen=True)
class RevealEntry:
    """One claimed replica as the settlement lists it."""

    provider: str
    output_hash: bytes = b"\x00" * 32
    result_cid_hash: bytes = b"\x00" * 32

    def as_abi(self) -> tuple[str, bytes, bytes]:
        """The ``Reveal`` struct as the contract takes it."""
        return (to_address(self.provider), self.output_hash, self.result_cid_hash)


@dataclass(frozen=True)
class TaskStateRecord:
    """The mutable state of an open task (all zero once settled or cancelled)."""

    open: bool
    claimed: int
    committed: int
    revealed: int
    challenge: ChallengeState
    ever_claimed: bool
    ready_at: int

    @classmethod
    def from_abi(cls, raw: Mapping[str, Any]) -> TaskStateRecord:
        """From ``taskState``'s struct."""
        return cls(
            open=int(raw["status"]) == 1,
            claimed=int(raw["claimed"]),
            committed=int(raw["committed"]),
            revealed=int(raw["revealed"]),
            challenge=ChallengeState(int(raw["challenge"])),
            ever_claimed=bool(raw["everClaimed"]),
            ready_at=int(raw["readyAt"]),
        )


@dataclass(frozen=True)
class ReplicaRecord:
    """One provider's replica of a task."""

    state: ReplicaState
    commit_by: int
    tag: bytes

    @classmethod
    def from_abi(cls, raw: Mapping[str, Any]) -> ReplicaRecord:
        """From ``replicaOf``'s struct."""
        return cls(
            state=ReplicaState(int(raw["state"])),
            commit_by=int(raw["commitBy"]),
            tag=bytes(raw["tag"]),
        )


@dataclass(frozen=True)
class ChallengeRecord:
    """A task's challenge: who challenged, the vote deadlines and the drawn panel."""

    challenger: str
    vote_by: int
    reveal_by: int
    panel: tuple[str, ...]
    commitments: tuple[bytes, ...]
    votes: tuple[VoteState, ...]

    @classmethod
    def from_abi(cls, raw: Mapping[str, Any]) -> ChallengeRecord:
        """From ``challengeOf``'s struct."""
        return cls(
            challenger=str(raw["challenger"]),
            vote_by=int(raw["voteBy"]),
            reveal_by=int(raw["revealBy"]),
            panel=tuple(str(a) for a in raw["panel"]),
            commitments=tuple(bytes(c) for c in raw["commits"]),
            votes=tuple(VoteState(int(v)) for v in raw["votes"]),
        )


@dataclass(frozen=True)
class TaskRecord:
    """A posted task: its terms, its bundle and its current state."""

    task_id: bytes
    params: TaskParams
    bundle_cid: str
    state: TaskStateRecord
    posted_block: int


@dataclass(frozen=True)
class Settlement:
    """How a task settled (the ``TaskFinalized`` event).

    Attributes:
        task_id: The task.
        result: Accepted, no quorum, or overturned by a challenge.
        output_hash: The accepted output hash (zero unless accepted).
        result_cid: The CID a winner revealed ("" unless accepted).
        winners: Replicas paid ``payout_per_winner`` (bounty + bond).
        payout_per_winner: Wei credited to each winner.
        refund: Wei credited to the requester (unearned bounty and slashed bonds).
    """

    task_id: bytes
    result: TaskResult
    output_hash: bytes
    result_cid: str
    winners: int
    payout_per_winner: int
    refund: int

    @classmethod
    def from_event(cls, event: Event) -> Settlement:
        """From a ``TaskFinalized`` event."""
        args = event.args
        return cls(
            task_id=bytes(args["taskId"]),
            result=TaskResult(int(args["result"])),
            output_hash=bytes(args["outputHash"]),
            result_cid=str(args["resultCid"]),
            winners=int(args["winners"]),
            payout_per_winner=int(args["payoutPerWinner"]),
            refund=int(args["refund"]),
        )
