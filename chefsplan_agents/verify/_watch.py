"""A watcher: follow the market, re-score sampled results inside their challenge window, and
challenge the ones whose winning output no result backs.

Optimistic settlement is only as good as the chance that someone checks. A :class:`Watcher`
is that someone: it needs no role on chain, only an account for the challenge bond and its own
copy of the model a task pins. Per task::

    TaskPosted (challengeWindow > 0) ─ save WATCHING
      ─ (reveals closed, still before settleTime, nobody challenged) sampled at `rate`?
      ── no: SAMPLED_OUT          ── its model is not the pinned one: SKIPPED
      └─ judge_outcome (own re-score of the winning output's results)
         ── a winning result passes: PASSED
         └─ none does: publish evidence ─ save CHALLENGING (bond counted against the cap)
            ─ challenge ─ save CHALLENGED ─ (votes in, or revealBy passed) resolveChallenge
            ─ save RESOLVED ─ finalize once due ─ withdraw ─ DONE

Everything is persisted in ``state_dir`` before the transaction it prepares, so a restarted
watcher neither challenges a task twice nor forgets the challenges it must follow to the end.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from chefsplan_agents.bundles import DEFAULT_MAX_BUNDLE_BYTES
from chefsplan_agents.chain import Chain
from chefsplan_agents.errors import (
    ChainUnavailable,
    ChefsplanError,
    ConfigError,
    NodeError,
    StoreUnavailable,
    TxReverted,
    VerificationError,
)
from chefsplan_agents.llm import LLMBackend
from chefsplan_agents.market import ChallengeState, MarketClient, VoteState
from chefsplan_agents.node import (
    RetryPolicy,
    StepTransactions,
    read_new_events,
    read_state_file,
    write_state_file,
)
from chefsplan_agents.storage import ContentStore
from chefsplan_agents.verify._evidence import (
    ChallengeEvidence,
    publish_evidence,
)
from chefsplan_agents.verify._judge import ChainJudge, OutcomeJudgement, TaskOnChain
from chefsplan_agents.verify._rescore import RescoreMode

__all__ = ["WatchEvent", "WatchStage", "WatchedTask", "Watcher"]

log = logging.getLogger(__name__)


class WatchStage(StrEnum):
    """Where a watcher stands with one task."""

    WATCHING = "watching"  # waiting for its reveals to close
    SAMPLED_OUT = "sampled-out"  # not drawn for a check
    SKIPPED = "skipped"  # not checkable by this watcher (model, window, cap); reason says
    PASSED = "passed"  # its winning output passed the re-score
    CHALLENGING = "challenging"  # evidence published, challenge about to be sent
    CHALLENGED = "challenged"  # waiting for the panel
    RESOLVED = "resolved"  # the panel decided; settling and withdrawing
    DONE = "done"  # a challenge of ours is settled and paid out
    FAILED = "failed"  # the challenge could not be sent (reason says why)

    @property
    def active(self) -> bool:
        """Whether the watcher still has work on the task."""
        return self in (
            WatchStage.WATCHING,
            WatchStage.CHALLENGING,
            WatchStage.CHALLENGED,
            WatchStage.RESOLVED,
        )

    @property
    def decided(self) -> bool:
        """Whether the watcher's part is over (counted by ``Watcher.finished``)."""
        return not self.active


@dataclass(frozen=True)
class WatchedTask(StepTransactions):
    """What a watcher remembers about one task.

    Attributes:
        task_id: ``0x`` task id.
        posted_block: Block of its ``TaskPosted``.
        stage: Where it stands.
        reason: Why (the verdict, or why it was skipped).
        evidence_cid: The evidence published for a challenge.
        upheld: The panel's decision, once resolved.
        txs: Transaction hashes by step (``challenge``, ``resolve``, ``finalize``).
        gas: Gas used by step.
    """

    task_id: str
    posted_block: int
    stage: WatchStage = WatchStage.WATCHING
    reason: str = ""
    evidence_cid: str = ""
    upheld: bool | None = None
    txs: dict[str, str] = field(default_factory=dict)
    gas: dict[str, int] = field(default_factory=dict)

    def at(self, stage: WatchStage, **changes: Any) -> WatchedTask:
        """A copy at ``stage`` with ``changes`` applied."""
        return replace(self, stage=stage, **changes)


@dataclass(frozen=True)
class WatchEvent:
    """Something a watcher did or found, for live status and ``--json`` lines.

    Attributes:
        kind: ``watching``, ``sampled-out``, ``skipped``, ``passed``, ``challenged``,
            ``failed``, ``resolved``, ``settled`` or ``withdrawn``.
        task_id: The task (``""`` for ``withdrawn``).
        detail: One line for a person.
        data: Extra fields (evidence CID, transaction, wei, the panel's decision).
    """

    kind: str
    task_id: str
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The event as one JSON object."""
        return {"event": self.kind, "task_id": self.task_id, "detail": self.detail, **self.data}


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _parse_meta(value: Any) -> dict[str, Any]:
    return {
        "market": str(value["market"]),
        "cursor": None if value["cursor"] is None else int(value["cursor"]),
        "spent_wei": int(value["spent_wei"]),
        "posted_wei": int(value.get("posted_wei", 0)),
        "seed": str(value["seed"]),
    }


_TASK_ID = re.compile(r"0x[0-9a-f]{64}")


def _parse_record(raw: Any) -> WatchedTask:
    raw["stage"] = WatchStage(raw["stage"])
    record = WatchedTask(**raw)
    # Checked here, not when a tick acts on it: a bad id must not fail every tick.
    if not isinstance(record.task_id, str) or not _TASK_ID.fullmatch(record.task_id):
        raise ValueError(f"task id {str(record.task_id)[:80]!r} is not 0x and 64 hex digits")
    if not isinstance(record.posted_block, int):
        raise TypeError(f"posted_block {str(record.posted_block)[:40]!r} is not a block number")
    return record


class Watcher(ChainJudge):
    """Follows a market and challenges forged winning outputs (see the module docs).

    Args:
        address: The watcher's EVM account (the chain can sign for it); it posts the bonds.
        chain: The chain.
        market: The ``TaskMarket`` client.
        store: Where bundles and results are read and evidence is published.
        llm: The watcher's own model; tasks that pin another are skipped.
        state_dir: Where its records live.
        rate: Share of checkable tasks re-scored, 0 to 1 (drawn per task from a secret seed
            kept in ``state_dir``, so providers cannot tell which tasks are checked).
        max_spend_wei: Most wei of challenge bonds it may have at stake or lost at once
            (``None``: no cap); a bond an upheld or lapsed challenge returned no longer counts.
        mode: The re-score mode.
        max_bundle_bytes: Largest task or result bundle read.
        retry: Backoff for an unreachable chain node or store.
        on_event: Called with each :class:`WatchEvent`.

    Raises:
        ConfigError: ``rate`` outside 0 to 1, a negative cap, or ``state_dir`` holds the
            state of a watcher of another market.
        NodeError: The state folder cannot be created or read.
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
        rate: float = 1.0,
        max_spend_wei: int | None = None,
        mode: RescoreMode = "full",
        max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
        retry: RetryPolicy | None = None,
        on_event: Callable[[WatchEvent], None] | None = None,
    ) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"the sampling rate must be 0 to 1 (got {rate})")
        if max_spend_wei is not None and max_spend_wei < 0:
            raise ConfigError(f"the spending cap must not be negative (got {max_spend_wei})")
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
        self.rate = rate
        self.max_spend_wei = max_spend_wei
        self.on_event = on_event or (lambda _event: None)
        self.withdrawn_wei = 0
        self.path = Path(state_dir).expanduser()
        self._tasks = self.path / "tasks"
        try:
            self._tasks.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as err:
            raise NodeError(f"cannot create the watcher state folder {self.path}: {err}") from err
        self._meta = self._read_meta()
        self._records: dict[str, WatchedTask] = {
            r.task_id: r for r in (self._read(f) for f in self._tasks.glob("0x*.json"))
        }

    def __repr__(self) -> str:
        return f"<Watcher {self.address}>"

    # ------------------------------------------------------------------ state

    def _read_meta(self) -> dict[str, Any]:
        file = self.path / "watch.json"
        market = f"{self.chain.chain_id}:{self.market.address}"
        if not file.exists():
            meta: dict[str, Any] = {
                "market": market,
                "cursor": None,
                "spent_wei": 0,
                "posted_wei": 0,
                "seed": secrets.token_hex(32),
            }
            write_state_file(file, meta, durable=True)
            return meta
        meta = read_state_file(file, _parse_meta, owner="watcher", remedy="move it away")
        if meta["market"] != market:
            raise ConfigError(
                f"the watcher state in {self.path} follows market {meta['market']}, not "
                f"{market}: pass another --state-dir"
            )
        return meta

    def _save_meta(self) -> None:
        write_state_file(self.path / "watch.json", self._meta, durable=True)

    def _read(self, file: Path) -> WatchedTask:
        return read_state_file(file, _parse_record, owner="watcher", remedy="move it away")

    def _save(self, record: WatchedTask) -> None:
        raw = asdict(record)
        raw["stage"] = str(record.stage)
        write_state_file(self._tasks / f"{record.task_id}.json", raw, durable=True)
        self._records[record.task_id] = record

    @property
    def spent_wei(self) -> int:
        """Wei of challenge bonds at stake (challenges not decided yet) or lost (rejected)."""
        return int(self._meta["spent_wei"])

    @property
    def posted_wei(self) -> int:
        """Wei of challenge bonds posted so far, returned ones included."""
        return int(self._meta["posted_wei"])

    @property
    def records(self) -> list[WatchedTask]:
        """Every task the watcher follows or followed."""
        return sorted(self._records.values(), key=lambda r: r.posted_block)

    def record(self, task_id: bytes | str) -> WatchedTask | None:
        """The watcher's record of a task, if it saw it."""
        key = task_id if isinstance(task_id, str) else _hex(task_id)
        return self._records.get(key.lower())

    @property
    def finished(self) -> int:
        """Tasks whose check is over (passed, skipped, sampled out, or challenged and settled)."""
        return sum(1 for r in self._records.values() if r.stage.decided)

    @property
    def busy(self) -> bool:
        """Whether a challenge of this watcher is still open."""
        open_stages = (WatchStage.CHALLENGING, WatchStage.CHALLENGED, WatchStage.RESOLVED)
        return any(r.stage in open_stages for r in self._records.values())

    # ------------------------------------------------------------------ the loop

    def tick(self) -> int:
        """Read new tasks, then move every open one on. Never raises for one task.

        Returns:
            Steps taken (0: waiting).

        Raises:
            ChainUnavailable: The chain stayed unreachable through every retry.
        """
        steps = self._new_tasks()
        for record in self.records:
            if not record.stage.active:
                continue
            try:
                steps += self._advance(record)
            except (ChainUnavailable, StoreUnavailable) as err:
                log.warning("watcher, task %s: %s; will retry", record.task_id, err)
            except ChefsplanError as err:
                log.error("watcher, task %s (%s): %s", record.task_id, record.stage, err)
        return steps

    def _emit(self, kind: str, task_id: str, detail: str, **data: Any) -> None:
        self.on_event(WatchEvent(kind, task_id, detail, data))

    def _new_tasks(self) -> int:
        cursor = self._meta["cursor"]
        new = read_new_events(
            self.retry,
            self.chain,
            self.market,
            "TaskPosted",
            after=None if cursor is None else int(cursor),
            what="read market events",
        )
        if new is None:
            return 0
        steps = 0
        for event in new.events:
            task_id = _hex(bytes(event.args["taskId"]))
            if int(event.args["params"]["challengeWindow"]) == 0:
                continue  # settles on its last reveal: nothing a watcher can challenge
            known = self._records.get(task_id)
            if known is not None and known.posted_block >= event.block_number:
                continue
            self._save(WatchedTask(task_id, event.block_number))
            self._emit("watching", task_id, "posted with a challenge window")
            steps += 1
        self._meta["cursor"] = new.head
        self._save_meta()
        return steps

    def _sampled(self, task_id: str) -> bool:
        if self.rate >= 1.0:
            return True
        digest = hashlib.sha256(bytes.fromhex(self._meta["seed"]) + task_id.encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.rate

    def _task(self, record: WatchedTask) -> TaskOnChain | None:
        return self._read_task(bytes.fromhex(record.task_id[2:]), record.posted_block)

    def _advance(self, record: WatchedTask) -> int:
        if record.stage is WatchStage.WATCHING:
            return self._check(record)
        if record.stage is WatchStage.CHALLENGING:
            return self._challenge_again(record)
        if record.stage is WatchStage.CHALLENGED:
            return self._follow(record)
        return self._settle(record)

    def _finish(self, record: WatchedTask, stage: WatchStage, reason: str) -> int:
        self._save(record.at(stage, reason=reason))
        self._emit(str(stage), record.task_id, reason)
        return 1

    def _check(self, record: WatchedTask) -> int:
        tid = bytes.fromhex(record.task_id[2:])
        state = self.retry.run("read task", lambda: self.market.task_state(tid))
        if not state.open:
            return self._finish(record, WatchStage.SKIPPED, "settled before it could be checked")
        if state.challenge is not ChallengeState.NONE:
            return self._finish(record, WatchStage.SKIPPED, "already challenged by someone else")
        task = self._task(record)
        if task is None:
            return 0
        p = task.params
        now = self._now()
        if state.revealed < p.replicas and now <= p.reveal_deadline:
            return 0  # reveals still open: the outcome is not known yet
        try:
            settle_at = self.market.settle_time(p)
        except TxReverted:
            return self._finish(record, WatchStage.SKIPPED, "settled before it could be checked")
        if now >= settle_at:
            return self._finish(record, WatchStage.SKIPPED, "its challenge window closed")
        if not self._sampled(record.task_id):
            return self._finish(record, WatchStage.SAMPLED_OUT, f"not sampled (rate {self.rate})")
        try:
            judgement = self._judge_outcome(task)
        except (VerificationError, NodeError) as err:
            return self._finish(record, WatchStage.SKIPPED, f"cannot re-score: {err}")
        if not judgement.judged:
            return self._finish(record, WatchStage.SKIPPED, judgement.reason)
        if not judgement.overturn:
            return self._finish(record, WatchStage.PASSED, judgement.reason)
        return self._challenge(record, task, judgement)

    def _challenge(
        self, record: WatchedTask, task: TaskOnChain, judgement: OutcomeJudgement
    ) -> int:
        bond = self.market.challenge_bond
        if self.max_spend_wei is not None and self.spent_wei + bond > self.max_spend_wei:
            return self._finish(
                record,
                WatchStage.SKIPPED,
                f"would challenge ({judgement.reason[:120]}), but the bond of {bond} wei "
                f"passes the spending cap of {self.max_spend_wei} wei",
            )
        try:
            evidence = self._evidence(task, judgement)
        except ValidationError as err:  # a field from the chain no evidence may hold
            first = err.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "document"
            return self._finish(
                record,
                WatchStage.SKIPPED,
                f"would challenge, but the evidence cannot name its {where}: {first['msg']}",
            )
        cid = publish_evidence(self.store, evidence)
        # Counted and saved before the transaction: a restart never posts a second bond.
        self._meta["spent_wei"] = self.spent_wei + bond
        self._meta["posted_wei"] = self.posted_wei + bond
        self._save_meta()
        record = record.at(WatchStage.CHALLENGING, evidence_cid=cid, reason=judgement.reason[:500])
        self._save(record)
        return self._send_challenge(record, task)

    def _send_challenge(self, record: WatchedTask, task: TaskOnChain) -> int:
        try:
            receipt = self.retry.run(
                "challenge",
                lambda: self.market.challenge(
                    task.params, record.evidence_cid, sender=self.address
                ),
            )
        except TxReverted as err:
            self._meta["spent_wei"] = self.spent_wei - self.market.challenge_bond
            self._meta["posted_wei"] = self.posted_wei - self.market.challenge_bond
            self._save_meta()
            self._save(record.at(WatchStage.FAILED, reason=f"the challenge reverted: {err}"))
            self._emit("failed", record.task_id, f"the challenge reverted: {err}")
            return 1
        record = record.at(WatchStage.CHALLENGED).with_tx(
            "challenge", receipt.tx_hash, receipt.gas_used
        )
        self._save(record)
        self._emit(
            "challenged",
            record.task_id,
            record.reason,
            evidence_cid=record.evidence_cid,
            tx=receipt.tx_hash,
            bond_wei=self.market.challenge_bond,
        )
        return 1

    def _challenge_again(self, record: WatchedTask) -> int:
        """A restart found a challenge about to be sent: learn whether it landed."""
        tid = bytes.fromhex(record.task_id[2:])
        challenger = self.retry.run("read challenger", lambda: self.market.challenger_of(tid))
        if challenger is not None and challenger.lower() == self.address.lower():
            self._save(record.at(WatchStage.CHALLENGED))
            return 1
        task = self._task(record)
        if task is None:
            return 0
        return self._send_challenge(record, task)

    def _evidence(self, task: TaskOnChain, judgement: OutcomeJudgement) -> ChallengeEvidence:
        reveal, verdict = judgement.failed if judgement.failed else (None, None)
        return ChallengeEvidence.about(
            chain_id=self.chain.chain_id,
            market=self.market.address,
            task_id=_hex(task.task_id),
            bundle_cid=task.bundle_cid,
            provider=reveal.provider if reveal else None,
            result_cid=reveal.result_cid if reveal else None,
            output_hash=_hex(reveal.output_hash) if reveal else None,
            check=(verdict.check or "rescore") if verdict else "unavailable",
            reason=(verdict.reason if verdict else judgement.reason) or "re-score failed",
            model_sha256=self.llm.info.sha256,
            mode=self.mode,
            max_gap=verdict.max_gap if verdict else 0.0,
            max_drift=verdict.max_drift if verdict else 0.0,
        )

    def _follow(self, record: WatchedTask) -> int:
        tid = bytes.fromhex(record.task_id[2:])
        state = self.retry.run("read task", lambda: self.market.task_state(tid))
        if state.open and state.challenge is ChallengeState.PENDING:
            challenge = self.retry.run("read challenge", lambda: self.market.challenge_of(tid))
            if challenge is None:
                return 0
            revealed = all(v in (VoteState.UPHOLD, VoteState.REJECT) for v in challenge.votes)
            if not revealed and self._now() <= challenge.reveal_by:
                return 0
            task = self._task(record)
            if task is None:
                return 0
            try:
                receipt = self._send_resolve(task)
                record = record.with_tx("resolve", receipt.tx_hash, receipt.gas_used)
            except TxReverted as err:  # a panelist resolved it first
                log.info("watcher: resolveChallenge of %s: %s", record.task_id, err)
        resolved = self.retry.run(
            "read resolution",
            lambda: self.market.contract.get_logs(
                "ChallengeResolved", from_block=record.posted_block, filters={"taskId": tid}
            ),
        )
        if not resolved:
            return 0
        event = resolved[-1]
        upheld = bool(event.args["upheld"])
        outcome = ChallengeState(int(event.args["outcome"])).name.lower()
        record = record.at(WatchStage.RESOLVED, upheld=upheld)
        self._save(record)
        if upheld or outcome == "lapsed":
            # The bond comes back (upheld: at settlement; lapsed: at once). Saved after the
            # record, so a crash in between forgets a refund rather than counting one twice.
            self._meta["spent_wei"] = max(0, self.spent_wei - self.market.challenge_bond)
            self._save_meta()
        self._emit(
            "resolved",
            record.task_id,
            f"the panel {outcome} the challenge ({int(event.args['upholdVotes'])} uphold, "
            f"{int(event.args['rejectVotes'])} reject)",
            upheld=upheld,
            outcome=outcome,
        )
        return 1 + self._settle(record)

    def _settle(self, record: WatchedTask) -> int:
        tid = bytes.fromhex(record.task_id[2:])
        state = self.retry.run("read task", lambda: self.market.task_state(tid))
        steps = 0
        if state.open:
            task = self._task(record)
            if task is None:
                return 0
            try:
                settle_at = self.market.settle_time(task.params)
            except TxReverted:
                return 0
            if self._now() < settle_at:
                return 0
            try:
                receipt = self._send_finalize(task, record.posted_block)
            except TxReverted as err:  # someone else settled it first
                log.info("watcher: finalize of %s: %s", record.task_id, err)
                return 0
            record = record.with_tx("finalize", receipt.tx_hash, receipt.gas_used)
            for paid in receipt.events_named("Withdrawn"):
                self.withdrawn_wei += int(paid.args["amount"])
            steps += 1
        self._save(record.at(WatchStage.DONE))
        self._emit("settled", record.task_id, "the challenged task is settled")
        return steps + 1 + self._withdraw()

    def _withdraw(self) -> int:
        owed = self.retry.run("read balance", lambda: self.market.balance_of(self.address))
        if owed == 0:
            return 0
        receipt = self.retry.run("withdraw", lambda: self.market.withdraw(sender=self.address))
        self.withdrawn_wei += owed
        self._emit("withdrawn", "", f"withdrew {owed} wei", wei=owed, tx=receipt.tx_hash)
        return 1
