"""Judge a task's outcome from what is public: its bundle and its revealed results.

What a panelist votes on and what a watcher challenges is one question: does the output that
wins the task (the output hash revealed by a quorum of replicas) have a revealed result that
passes a re-score with the verifier's own copy of the pinned model? :func:`judge_outcome`
answers it from the chain's events and the content store, every byte bounded before it is
parsed; :func:`read_task` gathers the events it needs.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from chefsplan_agents.bundles import (
    DEFAULT_MAX_BUNDLE_BYTES,
    ResultBundle,
    decode_result_bundle,
    decode_task_bundle,
)
from chefsplan_agents.chain import Chain, Event, Receipt
from chefsplan_agents.errors import (
    BundleError,
    LLMError,
    LLMServerUnavailable,
    NodeError,
    StorageError,
    StoreUnavailable,
    VerificationError,
)
from chefsplan_agents.llm import LLMBackend
from chefsplan_agents.market import MarketClient, TaskParams
from chefsplan_agents.node import RetryPolicy
from chefsplan_agents.storage import ContentStore
from chefsplan_agents.verify._rescore import RescoreMode, RescoreVerdict, rescore_result

__all__ = ["OutcomeJudgement", "RevealedResult", "TaskOnChain", "judge_outcome", "read_task"]

log = logging.getLogger(__name__)


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


@dataclass(frozen=True)
class RevealedResult:
    """One replica's reveal: who, the output hash and the result bundle's CID."""

    provider: str
    output_hash: bytes
    result_cid: str


@dataclass(frozen=True)
class TaskOnChain:
    """A task as its events tell it.

    Attributes:
        task_id: The task id.
        params: Its terms (from ``TaskPosted``).
        bundle_cid: Its bundle's CID.
        posted_block: The block of its latest ``TaskPosted``.
        reveals: Its revealed results since then, in order.
    """

    task_id: bytes
    params: TaskParams
    bundle_cid: str
    posted_block: int
    reveals: tuple[RevealedResult, ...]

    @property
    def winning_hash(self) -> bytes | None:
        """The output hash revealed by at least a quorum of replicas (``None``: no quorum)."""
        votes = Counter(r.output_hash for r in self.reveals)
        if not votes:
            return None
        best, count = votes.most_common(1)[0]
        return best if count >= self.params.quorum else None


def read_task(market: MarketClient, task_id: bytes, *, from_block: int = 0) -> TaskOnChain | None:
    """The task's terms, bundle CID and reveals from the market's events (``None``: unknown).

    Args:
        market: The market.
        task_id: The task.
        from_block: Where to start the scan (a block at or before the task's posting).
    """
    logs: list[Event] = market.contract.get_logs(
        ("TaskPosted", "ResultRevealed"),
        from_block=max(from_block, market.from_block),
        filters={"taskId": task_id},
    )
    posted = [e for e in logs if e.name == "TaskPosted"]
    if not posted:
        return None
    # The same terms posted again after settlement revive the same id: the latest posting.
    last = max(posted, key=lambda e: (e.block_number, e.log_index))
    since = (last.block_number, last.log_index)
    reveals = tuple(
        RevealedResult(
            str(e.args["provider"]), bytes(e.args["outputHash"]), str(e.args["resultCid"])
        )
        for e in logs
        if e.name == "ResultRevealed" and (e.block_number, e.log_index) > since
    )
    return TaskOnChain(
        task_id=task_id,
        params=TaskParams.from_abi(last.args["params"]),
        bundle_cid=str(last.args["bundleCid"]),
        posted_block=last.block_number,
        reveals=reveals,
    )


@dataclass(frozen=True)
class OutcomeJudgement:
    """A verifier's opinion of a task's winning output.

    Attributes:
        judged: Whether the verifier could judge at all (``False``: it runs another model
            than the task pins, or the bundle is unreadable; ``reason`` says which).
        overturn: The winning output has no revealed result that passes the re-score (the
            outcome should be overturned). ``False`` when it could not judge or nothing won.
        reason: One line: why.
        winning_hash: The output hash that wins the task, if any.
        failed: The first winning result that failed, and its verdict (``None`` when the
            result could not even be read): what evidence names.
        verdicts: Every re-score run, by provider address.
    """

    judged: bool
    overturn: bool
    reason: str
    winning_hash: bytes | None = None
    failed: tuple[RevealedResult, RescoreVerdict | None] | None = None
    verdicts: dict[str, RescoreVerdict] = field(default_factory=dict)


def judge_outcome(
    llm: LLMBackend,
    store: ContentStore,
    task: TaskOnChain,
    *,
    mode: RescoreMode = "full",
    max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
) -> OutcomeJudgement:
    """Re-score the results behind the task's winning output with ``llm``.

    The outcome should be overturned iff no replica that revealed the winning output hash
    has a result that passes: a result that cannot be fetched, does not decode, is badly
    signed, is not what was revealed or fails the re-score counts as failing (the provider
    revealed its CID and answers for it).

    Args:
        llm: The verifier's own model backend.
        store: Where the bundle and the results are read from (bounded).
        task: The task (:func:`read_task`).
        mode: The re-score mode.
        max_bundle_bytes: Largest task or result bundle read.

    Returns:
        The judgement; never raises for hostile content.

    Raises:
        StoreUnavailable: The store did not answer (try again later).
        LLMServerUnavailable: The verifier's own model server did not answer (try again).
    """
    winning = task.winning_hash
    if winning is None:
        return OutcomeJudgement(
            judged=True,
            overturn=False,
            reason=f"no output reached the quorum of {task.params.quorum}: nothing to overturn",
        )
    try:
        bundle = decode_task_bundle(
            store.get(task.bundle_cid, max_bytes=max_bundle_bytes), max_bytes=max_bundle_bytes
        )
    except StoreUnavailable:
        raise
    except (StorageError, BundleError) as err:
        return _unjudged(f"the task bundle {task.bundle_cid} is unreadable: {err}", winning)
    pinned = bundle.model.sha256
    own = llm.info.sha256
    if pinned is not None and pinned != own:
        return _unjudged(
            f"the task pins model {pinned[:12]}…, this verifier runs {own[:12]}…", winning
        )
    verdicts: dict[str, RescoreVerdict] = {}
    first_failure: tuple[RevealedResult, RescoreVerdict | None] | None = None
    reasons: list[str] = []
    for reveal in (r for r in task.reveals if r.output_hash == winning):
        try:
            result = _read_result(store, reveal, max_bundle_bytes)
            verdict = rescore_result(llm, bundle, result, task_cid=task.bundle_cid, mode=mode)
        except (StoreUnavailable, LLMServerUnavailable):
            raise
        except _Unusable as err:
            reasons.append(f"{reveal.provider}: {err}")
            first_failure = first_failure or (reveal, None)
            continue
        except (VerificationError, NodeError, LLMError) as err:
            # LLMError: e.g. a prompt over the verifier's context, or a chat template that
            # fails on hostile messages; the provider's claim cannot be checked here.
            return _unjudged(f"cannot re-score the task: {err}", winning, verdicts)
        verdicts[reveal.provider] = verdict
        if verdict.passed:
            return OutcomeJudgement(
                judged=True,
                overturn=False,
                reason=f"{reveal.provider}'s winning result passes the {mode} re-score",
                winning_hash=winning,
                verdicts=verdicts,
            )
        reasons.append(f"{reveal.provider}: {verdict.check}: {verdict.reason}")
        first_failure = first_failure or (reveal, verdict)
    return OutcomeJudgement(
        judged=True,
        overturn=True,
        reason="no winning result passes the re-score (" + "; ".join(reasons)[:400] + ")",
        winning_hash=winning,
        failed=first_failure,
        verdicts=verdicts,
    )


class ChainJudge:
    """What a panelist and a watcher share: an account on the market, the store, the
    verifier's own model with its re-score settings, and the reads and transactions both make
    about a task (every chain call retried by ``retry``)."""

    def __init__(
        self,
        address: str,
        chain: Chain,
        market: MarketClient,
        store: ContentStore,
        llm: LLMBackend,
        *,
        mode: RescoreMode,
        max_bundle_bytes: int,
        retry: RetryPolicy | None,
    ) -> None:
        self.address = address
        self.chain = chain
        self.market = market
        self.store = store
        self.llm = llm
        self.mode: RescoreMode = mode
        self.max_bundle_bytes = max_bundle_bytes
        self.retry = retry or RetryPolicy()

    def _now(self) -> int:
        return self.retry.run("read chain time", self.chain.block_timestamp)

    def _read_task(self, task_id: bytes, posted_block: int) -> TaskOnChain | None:
        # Scanning from the task's posting keeps the read cheap however long the chain is.
        scoped = MarketClient(self.market.contract, from_block=posted_block)
        return self.retry.run("read task events", lambda: read_task(scoped, task_id))

    def _judge_outcome(self, task: TaskOnChain) -> OutcomeJudgement:
        return judge_outcome(
            self.llm, self.store, task, mode=self.mode, max_bundle_bytes=self.max_bundle_bytes
        )

    def _send_resolve(self, task: TaskOnChain) -> Receipt:
        return self.retry.run(
            "resolve challenge", lambda: self.market.resolve(task.params, sender=self.address)
        )

    def _send_finalize(self, task: TaskOnChain, posted_block: int) -> Receipt:
        scoped = MarketClient(self.market.contract, from_block=posted_block)
        return self.retry.run("finalize", lambda: scoped.finalize(task.params, sender=self.address))


def _unjudged(
    reason: str, winning: bytes, verdicts: dict[str, RescoreVerdict] | None = None
) -> OutcomeJudgement:
    """The judgement of a verifier that cannot judge (it never overturns): ``reason`` says why."""
    return OutcomeJudgement(
        judged=False,
        overturn=False,
        reason=reason,
        winning_hash=winning,
        verdicts={} if verdicts is None else verdicts,
    )


class _Unusable(Exception):
    """A revealed result that cannot be re-scored: missing, malformed or not what was revealed."""


def _read_result(store: ContentStore, reveal: RevealedResult, max_bytes: int) -> ResultBundle:
    try:
        data = store.get(reveal.result_cid, max_bytes=max_bytes)
    except StoreUnavailable:
        raise
    except StorageError as err:
        raise _Unusable(f"result {reveal.result_cid} cannot be read: {err}") from err
    try:
        result = decode_result_bundle(data, max_bytes=max_bytes)
    except BundleError as err:  # a bad signature included
        raise _Unusable(f"result {reveal.result_cid} is not a valid result bundle: {err}") from err
    if result.output_hash != _hex(reveal.output_hash):
        raise _Unusable(
            f"result {reveal.result_cid} has output hash {result.output_hash}, "
            f"not the revealed {_hex(reveal.output_hash)}"
        )
    return result
