"""A provider node's panel duty: vote on the challenges it is drawn for, on its own re-score.

A ``challenge`` draws a panel of registered providers (``PanelDrawn``). Each panelist must
commit a vote before ``voteBy`` and reveal it before ``revealBy``, or lose registry stake. The
:class:`Panelist` does that unattended, one :meth:`~Panelist.tick` at a time (the node daemon
calls it from its own tick)::

    PanelDrawn names me ─ save DRAWN (durably, with the event cursor after it)
      ─ read the task's bundle and revealed results (bounded), the evidence (logged only)
      ─ judge: UPHOLD iff the winning output has no revealed result that passes my re-score
      ─ save COMMITTING (vote + random salt, flushed) ─ commitVote ─ save COMMITTED
      ─ (every panelist committed, or voteBy passed) ─ save REVEALING ─ revealVote
      ─ save REVEALED ─ (every vote revealed, or revealBy passed) ─ resolveChallenge
      ─ save RESOLVED ─ finalize once due (if nobody else did) ─ save DONE

A panelist that cannot judge (another model than the task pins, an unreadable bundle, a store
still unreachable :data:`LAST_CALL_S` before ``voteBy``) still votes, since a silent panelist is
slashed: it votes to *reject*, so the status quo stands unless panelists that can judge find the
winning output forged. The evidence a challenge names is read
and logged but never decides a vote, so garbage evidence cannot stop or sway the panel.

Every vote and salt is written before its transaction is sent, so a restarted panelist reveals
what it committed; every failure is logged and retried on the next tick.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from chefsplan_agents.bundles import DEFAULT_MAX_BUNDLE_BYTES
from chefsplan_agents.chain import Chain, Event, Receipt
from chefsplan_agents.errors import (
    ChainUnavailable,
    ChefsplanError,
    ConfigError,
    LLMServerUnavailable,
    NodeError,
    StorageError,
    StoreUnavailable,
    TxReverted,
    VerificationError,
)
from chefsplan_agents.llm import LLMBackend
from chefsplan_agents.market import ChallengeState, MarketClient, VoteState
from chefsplan_agents.node import (
    RetryPolicy,
    StepTransactions,
    read_cursor_file,
    read_new_events,
    read_state_file,
    write_cursor_file,
    write_state_file,
)
from chefsplan_agents.storage import ContentStore
from chefsplan_agents.verify._evidence import load_evidence
from chefsplan_agents.verify._judge import ChainJudge, TaskOnChain
from chefsplan_agents.verify._rescore import RescoreMode

if TYPE_CHECKING:
    from chefsplan_agents.node import ProviderNode

__all__ = [
    "JUDGEMENTS_PER_TICK",
    "LAST_CALL_S",
    "PANEL_DEFAULT_VOTE",
    "PanelSeat",
    "PanelStage",
    "Panelist",
]

log = logging.getLogger(__name__)

_TASK_ID = re.compile(r"0x[0-9a-f]{64}")

#: The vote of a panelist that cannot judge a task (``upheld=False``): the outcome stands.
PANEL_DEFAULT_VOTE: Final = False
#: Seconds before ``voteBy`` after which a panelist whose store is still unreachable stops
#: retrying its re-score and commits the default vote.
LAST_CALL_S: Final = 3600
#: Re-scores a panelist runs in one tick at most. A node's own tasks wait while its duties
#: tick, so a flood of challenges (each costs its challenger a bond, not the node) must not
#: turn one tick into dozens of re-scores; the nearest vote deadlines are judged first.
JUDGEMENTS_PER_TICK: Final = 2


class PanelStage(StrEnum):
    """Where a panelist stands with one challenge."""

    DRAWN = "drawn"  # seated; not judged yet
    COMMITTING = "committing"  # vote and salt saved; commitVote about to be sent
    COMMITTED = "committed"  # waiting for the reveal phase
    REVEALING = "revealing"  # revealVote about to be sent
    REVEALED = "revealed"  # waiting for the other reveals, then resolving
    RESOLVED = "resolved"  # decided; the task may still need settling
    DONE = "done"  # the task settled (or the seat was lost): nothing left to do
    MISSED = "missed"  # a deadline passed before this panelist could act

    @property
    def active(self) -> bool:
        """Whether the panelist still has work on the challenge."""
        return self not in (PanelStage.DONE, PanelStage.MISSED)


@dataclass(frozen=True)
class PanelSeat(StepTransactions):
    """What a panelist remembers about one challenge it was drawn for.

    Attributes:
        task_id: ``0x`` task id.
        posted_block: The block of the task's ``TaskPosted`` (event scans start there).
        drawn_block: The block of the ``PanelDrawn`` event.
        vote_by: Last second to commit.
        reveal_by: Last second to reveal.
        evidence_cid: The challenge's evidence CID.
        stage: Where it stands.
        upheld: Its vote (set once judged).
        salt: ``0x`` salt of the vote commitment (secret until revealed).
        reason: Why it votes as it does, or why it gave up.
        judged: Whether the vote is its own judgement (``False``: the default vote).
        txs: Transaction hashes by step (``commit``, ``reveal``, ``resolve``, ``finalize``).
        gas: Gas used by step.
    """

    task_id: str
    posted_block: int
    drawn_block: int
    vote_by: int
    reveal_by: int
    evidence_cid: str = ""
    stage: PanelStage = PanelStage.DRAWN
    upheld: bool | None = None
    salt: str | None = None
    reason: str = ""
    judged: bool = False
    txs: dict[str, str] = field(default_factory=dict)
    gas: dict[str, int] = field(default_factory=dict)

    def at(self, stage: PanelStage, **changes: Any) -> PanelSeat:
        """A copy at ``stage`` with ``changes`` applied."""
        return replace(self, stage=stage, **changes)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready values."""
        raw = asdict(self)
        raw["stage"] = str(self.stage)
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> PanelSeat:
        """Read what :meth:`to_json` wrote."""
        values = dict(raw)
        values["stage"] = PanelStage(values["stage"])
        seat = cls(**values)
        # Checked here, not when a tick acts on it: a bad id must not fail every tick.
        if not isinstance(seat.task_id, str) or not _TASK_ID.fullmatch(seat.task_id):
            raise ValueError(f"task id {str(seat.task_id)[:80]!r} is not 0x and 64 hex digits")
        for name in ("posted_block", "drawn_block", "vote_by", "reveal_by"):
            if not isinstance(getattr(seat, name), int):
                raise TypeError(f"{name} is not an integer")
        return seat


class _SeatStore:
    """Panel seats and the ``PanelDrawn`` cursor, one JSON file each, in a folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Open seats, read from disk once: a tick does not re-read every finished one.
        self._active: dict[str, PanelSeat] | None = None
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as err:
            raise NodeError(f"cannot create the panel state folder {path}: {err}") from err

    def save(self, seat: PanelSeat, *, durable: bool = True) -> None:
        write_state_file(self.path / f"{seat.task_id}.json", seat.to_json(), durable=durable)
        if self._active is not None:
            if seat.stage.active:
                self._active[seat.task_id] = seat
            else:
                self._active.pop(seat.task_id, None)

    def load(self, task_id: str) -> PanelSeat | None:
        file = self.path / f"{task_id}.json"
        return self._read(file) if file.exists() else None

    def _read(self, file: Path) -> PanelSeat:
        return read_state_file(
            file, PanelSeat.from_json, owner="panel", remedy="move it away to drop the seat"
        )

    def all(self) -> list[PanelSeat]:
        seats = []
        for file in self.path.glob("0x*.json"):
            try:
                seats.append(self._read(file))
            except NodeError as err:
                # One unreadable record must not stop every other seat (a silent panelist is
                # slashed on each of them): report it and carry on without it.
                log.error("%s", err)
        return sorted(seats, key=lambda s: s.drawn_block)

    def active(self) -> list[PanelSeat]:
        if self._active is None:
            self._active = {s.task_id: s for s in self.all() if s.stage.active}
        return sorted(self._active.values(), key=lambda s: s.drawn_block)

    @property
    def cursor(self) -> int | None:
        return read_cursor_file(self.path, owner="panel")

    @cursor.setter
    def cursor(self, block: int) -> None:
        # Seats are saved (flushed) before the cursor moves past their events: a lost cursor
        # only means reading events again, and a seat already saved is not taken twice.
        write_cursor_file(self.path, block)


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


class Panelist(ChainJudge):
    """Votes on every challenge whose panel seats this provider (see the module docs).

    Args:
        address: The provider's EVM account (a key the chain can sign with).
        chain: The chain.
        market: The ``TaskMarket`` client.
        store: Where bundles, results and evidence are read from.
        llm: The provider's own model backend, used to re-score.
        state_dir: Folder for the panel's records (``<node state>/panel`` for a node).
        mode: The re-score mode (``full`` by default: a panel decides with every token checked).
        max_bundle_bytes: Largest task or result bundle read.
        retry: Backoff for an unreachable chain node or store.
        judgements_per_tick: Most seats judged (re-scored) in one :meth:`tick`.
    """

    def __init__(
        self,
        address: str,
        chain: Chain,
        market: MarketClient,
        store: ContentStore,
        llm: LLMBackend,
        *,
        state_dir: str | Path,
        mode: RescoreMode = "full",
        max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
        retry: RetryPolicy | None = None,
        judgements_per_tick: int = JUDGEMENTS_PER_TICK,
    ) -> None:
        if judgements_per_tick < 1:
            raise ConfigError(f"judgements_per_tick must be at least 1 (got {judgements_per_tick})")
        super().__init__(
            address,
            chain,
            market,
            store,
            llm,
            mode=mode,
            max_bundle_bytes=max_bundle_bytes,
            retry=retry,
        )
        self.seats = _SeatStore(Path(state_dir).expanduser())
        self._evidence_read: set[str] = set()  # seats whose evidence was read (or tried)
        self.judgements_per_tick = judgements_per_tick

    @classmethod
    def for_node(cls, node: ProviderNode) -> Panelist:
        """The panel duty of ``node``: its account, model and store, state in its folder."""
        return cls(
            node.address,
            node.chain,
            node.market,
            node.store,
            node.llm,
            state_dir=node.state.path / "panel",
            max_bundle_bytes=node.policy.max_bundle_bytes,
            retry=node.retry,
        )

    def __repr__(self) -> str:
        return f"<Panelist {self.address}>"

    # ------------------------------------------------------------------ the loop

    def tick(self) -> int:
        """Take new seats, then move every open one on. Never raises for one challenge.

        Returns:
            Steps taken (0: waiting for a deadline or for other panelists).

        Raises:
            ChainUnavailable: The chain stayed unreachable through every retry.
        """
        steps = self._new_seats()
        judgements = self.judgements_per_tick
        waiting = 0
        # The nearest vote deadline first: seats left for the next tick have the most time.
        for seat in sorted(self.seats.active(), key=lambda s: (s.vote_by, s.drawn_block)):
            if seat.stage is PanelStage.DRAWN:
                if judgements == 0:
                    waiting += 1
                    continue
                judgements -= 1
            try:
                steps += self._advance(seat)
            except (ChainUnavailable, StoreUnavailable) as err:
                log.warning("panel %s, task %s: %s; will retry", self.address, seat.task_id, err)
            except ChefsplanError as err:
                log.error(
                    "panel %s, task %s (%s): %s; will retry",
                    self.address,
                    seat.task_id,
                    seat.stage,
                    err,
                )
        if waiting:
            log.info(
                "panel %s: %d seat(s) wait for the next tick (%d re-scores a tick at most)",
                self.address,
                waiting,
                self.judgements_per_tick,
            )
        return steps

    def seat(self, task_id: bytes | str) -> PanelSeat | None:
        """This panelist's record of a challenge of ``task_id``, if it was drawn."""
        key = task_id if isinstance(task_id, str) else _hex(task_id)
        return self.seats.load(key.lower())

    # ------------------------------------------------------------------ internals

    def _new_seats(self) -> int:
        new = read_new_events(
            self.retry,
            self.chain,
            self.market,
            "PanelDrawn",
            after=self.seats.cursor,
            what="read panel events",
        )
        if new is None:
            return 0
        steps = 0
        me = self.address.lower()
        for event in new.events:
            if me not in (str(a).lower() for a in event.args["panel"]):
                continue
            task_id = _hex(bytes(event.args["taskId"]))
            try:
                old = self.seats.load(task_id)
            except NodeError as err:
                # Refusing the seat would stop the cursor, and every later seat with it; the
                # unreadable record is replaced by the seat the chain just announced.
                log.error("%s; replacing it with the new seat", err)
                old = None
            if old is not None and old.drawn_block >= event.block_number:
                continue  # seen before a restart
            seat = self._seat_from(event, task_id)
            self.seats.save(seat)
            log.info(
                "panel %s: drawn for the challenge of task %s (vote by %d)",
                self.address,
                task_id,
                seat.vote_by,
            )
            steps += 1
        self.seats.cursor = new.head
        return steps

    def _seat_from(self, drawn: Event, task_id: str) -> PanelSeat:
        tid = bytes(drawn.args["taskId"])
        challenged = self.retry.run(
            "read challenge event",
            lambda: self.market.contract.get_logs(
                ("TaskChallenged", "TaskPosted"),
                from_block=self.market.from_block,
                to_block=drawn.block_number,
                filters={"taskId": tid},
            ),
        )
        evidence = [str(e.args["evidenceCid"]) for e in challenged if e.name == "TaskChallenged"]
        posted = [e.block_number for e in challenged if e.name == "TaskPosted"]
        return PanelSeat(
            task_id=task_id,
            posted_block=max(posted, default=self.market.from_block),
            drawn_block=drawn.block_number,
            vote_by=int(drawn.args["voteBy"]),
            reveal_by=int(drawn.args["revealBy"]),
            evidence_cid=evidence[-1] if evidence else "",
        )

    def _advance(self, seat: PanelSeat) -> int:
        tid = bytes.fromhex(seat.task_id[2:])
        state = self.retry.run("read task", lambda: self.market.task_state(tid))
        if not state.open:
            self.seats.save(seat.at(PanelStage.DONE), durable=False)
            self._log_done(seat)
            return 0
        if state.challenge is not ChallengeState.PENDING:
            return self._settle(seat.at(PanelStage.RESOLVED))
        challenge = self.retry.run("read challenge", lambda: self.market.challenge_of(tid))
        if challenge is None:
            return 0
        seats = [a.lower() for a in challenge.panel]
        if self.address.lower() not in seats:
            self.seats.save(seat.at(PanelStage.DONE, reason="not on this panel"), durable=False)
            return 0
        mine = challenge.votes[seats.index(self.address.lower())]
        now = self._now()
        steps = 0
        if seat.stage is PanelStage.DRAWN:
            if now > seat.vote_by:
                self._missed(seat, "the vote deadline passed before the task could be judged")
                return 1
            seat = self._judge(seat, tid)
            steps += 1
        if seat.stage is PanelStage.COMMITTING:
            if mine is VoteState.NONE:
                if now > seat.vote_by:
                    self._missed(seat, "the vote deadline passed before the commit landed")
                    return steps + 1
                seat = self._commit(seat, tid)
                steps += 1
                mine = VoteState.COMMITTED
            else:
                seat = seat.at(PanelStage.COMMITTED)
                self.seats.save(seat)
        if seat.stage in (PanelStage.COMMITTED, PanelStage.REVEALING):
            if mine in (VoteState.UPHOLD, VoteState.REJECT):
                seat = seat.at(PanelStage.REVEALED)
                self.seats.save(seat)
            else:
                me = self.address.lower()
                others = [v for i, v in enumerate(challenge.votes) if seats[i] != me]
                all_in = all(v is not VoteState.NONE for v in others)
                if not all_in and now <= seat.vote_by:
                    return steps  # a panelist may still commit: revealing now lets it copy
                if now > seat.reveal_by:
                    self._missed(seat, "the reveal deadline passed")
                    return steps + 1
                seat = self._reveal(seat, tid)
                steps += 1
        if seat.stage is PanelStage.REVEALED:
            challenge = self.retry.run("read challenge", lambda: self.market.challenge_of(tid))
            if challenge is None:
                return steps
            revealed = all(v in (VoteState.UPHOLD, VoteState.REJECT) for v in challenge.votes)
            if not revealed and self._now() <= seat.reveal_by:
                return steps
            steps += self._resolve(seat, tid)
        return steps

    def _judge(self, seat: PanelSeat, tid: bytes) -> PanelSeat:
        """Decide the vote (own re-score, or the default) and save it with a fresh salt."""
        self._read_evidence(seat)
        task = self._read_task(tid, seat.posted_block)
        upheld, judged, reason = PANEL_DEFAULT_VOTE, False, "the task's events are missing"
        if task is not None:
            try:
                upheld, judged, reason = self._opinion(task)
            except (StoreUnavailable, LLMServerUnavailable) as err:
                if self._now() < seat.vote_by - LAST_CALL_S:
                    raise  # judged again next tick
                # Still unreachable at the last call: a default vote beats a slashed silence.
                what = "store" if isinstance(err, StoreUnavailable) else "model server"
                upheld, judged, reason = PANEL_DEFAULT_VOTE, False, f"the {what} is down: {err}"
            except (ChainUnavailable, TxReverted):
                raise
            except Exception as err:  # noqa: BLE001
                # Whatever a hostile bundle or result makes the re-score raise, retrying it
                # every tick would end in a missed vote and a slashed stake: vote the default.
                log.exception("panel %s: re-scoring task %s failed", self.address, seat.task_id)
                upheld, judged, reason = PANEL_DEFAULT_VOTE, False, f"cannot re-score: {err}"
        if not judged:
            log.warning(
                "panel %s cannot judge task %s (%s); voting the default, %s",
                self.address,
                seat.task_id,
                reason,
                "uphold" if PANEL_DEFAULT_VOTE else "reject",
            )
        else:
            log.info(
                "panel %s votes %s on task %s: %s",
                self.address,
                "uphold" if upheld else "reject",
                seat.task_id,
                reason,
            )
        seat = seat.at(
            PanelStage.COMMITTING,
            upheld=upheld,
            judged=judged,
            reason=reason[:500],
            salt=_hex(secrets.token_bytes(32)),
        )
        # Flushed before commitVote is sent: a restart must reveal exactly this vote.
        self.seats.save(seat)
        return seat

    def _opinion(self, task: TaskOnChain) -> tuple[bool, bool, str]:
        try:
            judgement = self._judge_outcome(task)
        except (StoreUnavailable, ChainUnavailable, LLMServerUnavailable):
            raise  # transient: judge again next tick
        except (VerificationError, NodeError, StorageError) as err:
            return PANEL_DEFAULT_VOTE, False, f"cannot re-score: {err}"
        if not judgement.judged:
            return PANEL_DEFAULT_VOTE, False, judgement.reason
        return judgement.overturn, True, judgement.reason

    def _read_evidence(self, seat: PanelSeat) -> None:
        """Log what the challenger claims. It never decides the vote, and a missing or
        malformed document must not stop the panelist from voting."""
        if not seat.evidence_cid:
            log.warning("panel %s: challenge of %s names no evidence", self.address, seat.task_id)
            return
        if seat.task_id in self._evidence_read:
            return  # a judgement retried after an outage: the evidence was logged already
        self._evidence_read.add(seat.task_id)
        try:
            # A missing block costs an IPFS fetch its whole timeout, on every panelist, for a
            # document that never decides a vote: only a short probe is spent on it.
            if not self.store.has(seat.evidence_cid):
                log.warning(
                    "panel %s: the evidence %s of task %s is not in the store; ignoring it",
                    self.address,
                    seat.evidence_cid,
                    seat.task_id,
                )
                return
            evidence = load_evidence(self.store, seat.evidence_cid)
        except StoreUnavailable as err:
            log.warning("panel %s: evidence %s: %s", self.address, seat.evidence_cid, err)
        except (VerificationError, StorageError) as err:
            log.warning(
                "panel %s: ignoring the evidence of task %s: %s", self.address, seat.task_id, err
            )
        else:
            mine = evidence.market.lower() == self.market.address.lower()
            if evidence.task_id != seat.task_id or not mine:
                log.warning(
                    "panel %s: the evidence of task %s is about task %s on market %s; ignoring it",
                    self.address,
                    seat.task_id,
                    evidence.task_id,
                    evidence.market,
                )
                return
            log.info(
                "panel %s: the challenger says %s failed %s: %s",
                self.address,
                evidence.provider or "the outcome",
                evidence.check,
                evidence.reason,
            )

    def _commit(self, seat: PanelSeat, tid: bytes) -> PanelSeat:
        return self._send_vote(seat, tid, "commit", self.market.commit_vote, PanelStage.COMMITTED)

    def _reveal(self, seat: PanelSeat, tid: bytes) -> PanelSeat:
        return self._send_vote(
            seat,
            tid,
            "reveal",
            self.market.reveal_vote,
            PanelStage.REVEALED,
            sending=PanelStage.REVEALING,
        )

    def _send_vote(
        self,
        seat: PanelSeat,
        tid: bytes,
        step: str,
        send: Callable[..., Receipt],
        sent: PanelStage,
        *,
        sending: PanelStage | None = None,
    ) -> PanelSeat:
        """Send the saved vote and salt with ``send`` (``commit_vote`` or ``reveal_vote``), saving
        the seat at ``sending`` first (if given) and at ``sent`` with the transaction after."""
        assert seat.upheld is not None and seat.salt is not None
        upheld, salt = seat.upheld, seat.salt
        if sending is not None:
            seat = seat.at(sending)
            self.seats.save(seat)
        receipt = self.retry.run(
            f"{step} vote", lambda: send(tid, upheld, salt, sender=self.address)
        )
        seat = seat.at(sent).with_tx(step, receipt.tx_hash, receipt.gas_used)
        self.seats.save(seat)
        return seat

    def _resolve(self, seat: PanelSeat, tid: bytes) -> int:
        task = self._read_task(tid, seat.posted_block)
        if task is None:
            return 0
        try:
            receipt = self._send_resolve(task)
        except TxReverted as err:  # another party resolved it first
            log.info("panel %s: resolveChallenge of %s: %s", self.address, seat.task_id, err)
            return self._settle(seat.at(PanelStage.RESOLVED))
        seat = seat.with_tx("resolve", receipt.tx_hash, receipt.gas_used)
        return 1 + self._settle(seat.at(PanelStage.RESOLVED))

    def _settle(self, seat: PanelSeat) -> int:
        """Finalize the decided task once due, unless its providers or requester did."""
        self.seats.save(seat, durable=False)
        tid = bytes.fromhex(seat.task_id[2:])
        task = self._read_task(tid, seat.posted_block)
        if task is None:
            return 0
        try:
            settle_at = self.market.settle_time(task.params)
        except TxReverted:  # settled since
            self.seats.save(seat.at(PanelStage.DONE), durable=False)
            self._log_done(seat)
            return 0
        if self._now() < settle_at:
            return 0
        try:
            receipt = self._send_finalize(task, seat.posted_block)
        except TxReverted as err:
            log.info("panel %s: finalize of %s: %s", self.address, seat.task_id, err)
            return 0
        seat = seat.at(PanelStage.DONE).with_tx("finalize", receipt.tx_hash, receipt.gas_used)
        self.seats.save(seat, durable=False)
        self._log_done(seat)
        return 1

    def _missed(self, seat: PanelSeat, reason: str) -> None:
        log.error("panel %s missed task %s: %s", self.address, seat.task_id, reason)
        self.seats.save(seat.at(PanelStage.MISSED, reason=reason), durable=False)

    def _log_done(self, seat: PanelSeat) -> None:
        log.info("panel %s: the challenge of %s is settled", self.address, seat.task_id)
