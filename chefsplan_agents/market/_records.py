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

__all__ = [
    "TASK_PARAMS_TYPE",
    "ZERO_ADDRESS",
    "ChallengeState",
    "ReplicaRecord",
    "ReplicaState",
    "RevealEntry",
    "Settlement",
    "TaskParams",
    "TaskRecord",
    "TaskResult",
    "TaskStateRecord",
    "make_commitment",
    "new_salt",
    "result_cid_hash",
]

# The ABI tuple of ``TaskMarket.TaskParams``, in field order.
TASK_PARAMS_TYPE = (
    "(address,address,bytes32,uint8,uint8,uint96,uint96,uint64,uint64,uint64,uint64,uint64)"
)

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


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


def new_salt() -> bytes:
    """A fresh random 32-byte salt for a commitment (keep it secret until the reveal)."""
    return os.urandom(32)


def result_cid_hash(result_cid: str) -> bytes:
    """``keccak256(bytes(resultCid))``, as the settlement's reveal list carries it."""
    return keccak(result_cid.encode("utf-8"))


@dataclass(frozen=True)
class TaskParams:
    """The immutable terms of a task; their ABI hash is the task id.

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
    def task_id(self) -> bytes:
        """``keccak256(abi.encode(params))``, the id the contract gives the task."""
        return keccak(abi_encode([TASK_PARAMS_TYPE], [self.as_abi()]))

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
