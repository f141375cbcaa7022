"""A provider node's durable memory: one JSON file per task, written atomically.

The node writes a task's record *before* each on-chain step (claim, commit, reveal), so a node
restarted at any point knows which tasks it claimed, the secret salt of its commitment and the
result it committed to, and resumes them instead of being slashed for a no-show.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from chefsplan_agents import _json
from chefsplan_agents._json import JsonTooDeep
from chefsplan_agents.errors import NodeError
from chefsplan_agents.market import TaskParams

__all__ = [
    "NodeStateStore",
    "StepTransactions",
    "TaskRecordState",
    "TaskStage",
    "read_cursor_file",
    "read_state_file",
    "write_cursor_file",
    "write_state_file",
]

_T = TypeVar("_T")


class TaskStage(StrEnum):
    """Where a node stands with one task.

    ``VETTING`` is written (durably) before a task's bundle is fetched. A record still at
    ``VETTING`` after a restart means vetting never finished: the bundle crashed or hung the
    node. It is final, like ``REFUSED``, so no bundle can make a node fetch it again after every
    restart while its claimed tasks miss their deadlines.
    """

    VETTING = "vetting"  # seen; its bundle is being fetched and checked (see below)
    REFUSED = "refused"  # policy or bundle check failed; never claimed
    RUNNING = "running"  # assigned to this node: the model runs before any transaction
    SETTLING = "settling"  # assigned: result stored, claimAndFinalize about to be sent
    CLAIMING = "claiming"  # salt chosen, claim transaction about to be sent
    CLAIMED = "claimed"  # claim mined; result not committed yet
    COMMITTING = "committing"  # result stored, commit transaction about to be sent
    COMMITTED = "committed"  # waiting for the reveal phase
    REVEALING = "revealing"  # reveal transaction about to be sent
    REVEALED = "revealed"  # waiting for settlement
    SETTLED = "settled"  # finalized; earnings withdrawn or nothing owed
    LOST = "lost"  # the claim did not go through (task full, closed); nothing at stake
    FAILED = "failed"  # gave up on a claimed task (its bond may be slashed)

    @property
    def active(self) -> bool:
        """Whether the node still has work to do on the task."""
        return self in _ACTIVE


_ACTIVE = frozenset(
    {
        TaskStage.RUNNING,
        TaskStage.SETTLING,
        TaskStage.CLAIMING,
        TaskStage.CLAIMED,
        TaskStage.COMMITTING,
        TaskStage.COMMITTED,
        TaskStage.REVEALING,
        TaskStage.REVEALED,
    }
)


# An assigned task's stages: the node has nothing at stake in them (see NodeStateStore.save).
_SINGLE_SHOT = frozenset({TaskStage.RUNNING, TaskStage.SETTLING})


def _params_to_json(params: TaskParams) -> dict[str, Any]:
    raw = asdict(params)
    raw["bundle_hash"] = "0x" + params.bundle_hash.hex()
    return raw


def _params_from_json(raw: dict[str, Any]) -> TaskParams:
    values = dict(raw)
    values["bundle_hash"] = bytes.fromhex(str(values["bundle_hash"]).removeprefix("0x"))
    return TaskParams(**values)


class StepTransactions:
    """For a frozen dataclass record that keeps the transaction hash and gas of each step it
    took on chain, in fields ``txs`` and ``gas``."""

    __dataclass_fields__: ClassVar[dict[str, Any]]
    txs: dict[str, str]
    gas: dict[str, int]

    def with_tx(self, step: str, tx_hash: str, gas_used: int) -> Self:
        """A copy that remembers the transaction of ``step``."""
        return replace(self, txs={**self.txs, step: tx_hash}, gas={**self.gas, step: gas_used})


@dataclass(frozen=True)
class TaskRecordState(StepTransactions):
    """What a node remembers about one task.

    Attributes:
        task_id: ``0x``-hex task id.
        params: The task's on-chain terms.
        bundle_cid: CID of its TaskBundle.
        stage: Where the node stands.
        salt: ``0x``-hex commitment salt (secret until the reveal).
        result_cid: CID of the node's ResultBundle.
        output_hash: ``0x``-hex output hash committed to.
        reason: Why the task was refused or failed.
        txs: Transaction hashes by step (``claim``, ``commit``, ``reveal``, ``finalize``).
        gas: Gas used by step.
        updated_at: Unix time of the last write.
        posted_block: The block of the task's ``TaskPosted`` event (event scans start there).
        runs: Model runs started for the task (counted before each run, so a run that
            crashes the node still counts).
    """

    task_id: str
    params: TaskParams
    bundle_cid: str
    stage: TaskStage
    salt: str | None = None
    result_cid: str | None = None
    output_hash: str | None = None
    reason: str | None = None
    txs: dict[str, str] = field(default_factory=dict)
    gas: dict[str, int] = field(default_factory=dict)
    updated_at: float = 0.0
    posted_block: int = 0
    runs: int = 0

    def advance(self, stage: TaskStage, **changes: Any) -> TaskRecordState:
        """A copy at ``stage`` with ``changes`` applied."""
        return replace(self, stage=stage, updated_at=time.time(), **changes)

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-ready values."""
        raw = asdict(self)
        raw["params"] = _params_to_json(self.params)
        raw["stage"] = str(self.stage)
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TaskRecordState:
        """Read a record written by :meth:`to_json`."""
        values = dict(raw)
        values["params"] = _params_from_json(values["params"])
        values["stage"] = TaskStage(values["stage"])
        return cls(**values)


#: Largest state file read (a record is a few kB; anything larger is not one of ours).
MAX_STATE_FILE_BYTES = 1 << 20


def write_state_file(file: Path, value: dict[str, Any], *, durable: bool) -> None:
    """Write ``value`` as JSON to ``file`` atomically: a crash leaves the old or the new file.

    With ``durable`` the file and its folder entry are flushed to the disk before this returns
    (power failures included): use it for anything a restart must find, like a secret salt
    about to be committed to on chain.

    Raises:
        NodeError: The file cannot be written.
    """
    data = json.dumps(value, sort_keys=True, indent=1).encode("utf-8")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=file.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, file)
        if durable:
            # The rename itself reaches the disk only with its folder.
            dir_fd = os.open(file.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except OSError as err:
        raise NodeError(f"cannot write node state {file}: {err}") from err


def read_state_file(file: Path, parse: Callable[[Any], _T], *, owner: str, remedy: str) -> _T:
    """Read what :func:`write_state_file` wrote, turned into a value by ``parse``.

    Args:
        file: The file.
        parse: Builds the value from the decoded JSON (may raise ``KeyError``, ``TypeError`` or
            ``ValueError`` on a file it does not recognise).
        owner: Whose state it is, for the message (``node``, ``panel``, ``watcher``).
        remedy: What the user should do with an unreadable file.

    Raises:
        NodeError: The file cannot be read, is not JSON or ``parse`` rejects it.
    """
    try:
        with file.open("rb") as fh:
            data = fh.read(MAX_STATE_FILE_BYTES + 1)
    except OSError as err:
        raise NodeError(f"{owner} state {file} is unreadable ({err}); {remedy}") from err
    if len(data) > MAX_STATE_FILE_BYTES:
        raise NodeError(
            f"{owner} state {file} is over {MAX_STATE_FILE_BYTES} bytes, not a state file; {remedy}"
        )
    try:
        # Bounded nesting: a deep enough document overflows the C stack of a plain json.loads.
        return parse(_json.loads(data))
    except JsonTooDeep as err:
        raise NodeError(f"{owner} state {file} nests too deep ({err}); {remedy}") from err
    except (ValueError, KeyError, TypeError) as err:
        raise NodeError(f"{owner} state {file} is unreadable ({err}); {remedy}") from err


def read_cursor_file(folder: Path, *, owner: str) -> int | None:
    """The last block whose events were processed, from ``folder/cursor.json`` (``None``: none).

    Raises:
        NodeError: The file is unreadable (the message says to delete it).
    """
    file = folder / "cursor.json"
    if not file.exists():
        return None
    return read_state_file(file, lambda raw: int(raw["block"]), owner=owner, remedy="delete it")


def write_cursor_file(folder: Path, block: int) -> None:
    """Record ``block`` in ``folder/cursor.json``, not flushed: a cursor lost to a power failure
    only means reading events again, so a cursor must move only past events already recorded.

    Raises:
        NodeError: The file cannot be written.
    """
    write_state_file(folder / "cursor.json", {"block": int(block)}, durable=False)


class NodeStateStore:
    """Task records and the event cursor of one node, in a folder.

    Args:
        path: The state folder (created mode 0700; files are 0600 since they hold salts).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._tasks = self.path / "tasks"
        # Unfinished tasks, kept in memory so a tick does not re-read every finished one.
        self._active: dict[str, TaskRecordState] | None = None
        try:
            self._tasks.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as err:
            raise NodeError(f"cannot create the node state folder {self.path}: {err}") from err

    def _write(self, file: Path, value: dict[str, Any], *, durable: bool) -> None:
        write_state_file(file, value, durable=durable)

    def save(self, record: TaskRecordState, *, sync: bool = False) -> None:
        """Write a task's record (atomically: a crash leaves the old or the new one).

        Records of tasks the node still has work on (a salt, a bond at stake) reach the disk
        before this returns, power failures included. Final records (refused, lost, settled,
        failed) skip the flush: losing one costs at most a second look at the task. So do the
        two of an assigned task (RUNNING, SETTLING): nothing is at stake in them, since its one
        transaction puts up the bond and pays it back. After a power failure the node finds its
        own settlement among the task's events, or runs the task again while it is open.
        ``sync`` flushes any record.
        """
        durable = sync or (record.stage.active and record.stage not in _SINGLE_SHOT)
        self._write(self._tasks / f"{record.task_id}.json", record.to_json(), durable=durable)
        if self._active is not None:
            if record.stage.active:
                self._active[record.task_id] = record
            else:
                self._active.pop(record.task_id, None)

    def record_seen(self, record: TaskRecordState) -> TaskRecordState:
        """Remember a task, durably, before its bundle is fetched: the record at ``VETTING``.

        Whatever the bundle does to the process (a parser crash, a hang killed by a
        supervisor), the restarted node finds this record and never looks at the task again.

        Returns:
            The record written.
        """
        seen = record.advance(
            TaskStage.VETTING,
            reason="vetting never finished: the task's bundle stopped the node",
        )
        self.save(seen, sync=True)
        return seen

    def load(self, task_id: str) -> TaskRecordState | None:
        """One task's record, or ``None``."""
        file = self._tasks / f"{task_id}.json"
        if not file.exists():
            return None
        return self._read(file)

    def _read(self, file: Path) -> TaskRecordState:
        return read_state_file(
            file, TaskRecordState.from_json, owner="node", remedy="move it away to drop the task"
        )

    def all(self) -> list[TaskRecordState]:
        """Every task record, oldest write first."""
        records = [self._read(f) for f in self._tasks.glob("0x*.json")]
        return sorted(records, key=lambda r: r.updated_at)

    def active(self) -> list[TaskRecordState]:
        """The tasks the node still has work on, oldest write first (read from disk once)."""
        if self._active is None:
            self._active = {r.task_id: r for r in self.all() if r.stage.active}
        return sorted(self._active.values(), key=lambda r: r.updated_at)

    @property
    def cursor(self) -> int | None:
        """The last chain block whose events the node processed, if any."""
        return read_cursor_file(self.path, owner="node")

    @cursor.setter
    def cursor(self, block: int) -> None:
        # Not flushed: a cursor lost to a power failure only makes the node read events again,
        # and every task it acted on has a record of its own.
        write_cursor_file(self.path, block)
