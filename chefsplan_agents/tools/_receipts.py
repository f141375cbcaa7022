"""What the tools return: pydantic receipts, short text for a model and JSON for code.

Every receipt has :meth:`ToolResult.text` (one or two short lines a model can act on) and
``model_dump()``/``model_dump_json()`` (everything, for code). A refused or failed call is a
:class:`ToolFailure`, never an exception, on the adapters' safe path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from chefsplan_agents.market import DelegationReceipt, TaskHandle

__all__ = [
    "LoggedOutputReceipt",
    "PolicyReport",
    "ProviderInfo",
    "ProvidersFound",
    "ReplicaInfo",
    "RescoreReport",
    "SecondOpinion",
    "SplitReceipt",
    "TaskReceipt",
    "ToolFailure",
    "ToolResult",
    "Trust",
]

Trust = Literal["low", "normal", "high"]

#: Most characters of an output quoted in a receipt's text.
TEXT_OUTPUT_CHARS = 2000


def quote(text: str, limit: int = TEXT_OUTPUT_CHARS) -> str:
    """``text`` quoted on one line, cut at ``limit`` characters with a note of what was cut."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text) - limit} more characters)"


def short(value: str, keep: int = 10) -> str:
    """A hash or address shortened for text: ``0x1234abcd…``."""
    return value if len(value) <= keep + 2 else value[:keep] + "…"


class ToolResult(BaseModel):
    """Base of every tool's result."""

    model_config = ConfigDict(frozen=True)

    ok: bool = True

    def text(self) -> str:
        """A short rendering for a model."""
        raise NotImplementedError


class ToolFailure(ToolResult):
    """A tool call that did not happen or did not succeed, as a message a model can act on.

    Attributes:
        tool: The tool's name.
        error: The error's class name (``InsufficientFunds``, ``ValidationError``, …).
        message: One line: what was wrong and what to do.
    """

    ok: bool = False
    tool: str
    error: str
    message: str

    def text(self) -> str:
        return f"{self.tool} failed ({self.error}): {self.message}"


class ProviderInfo(BaseModel):
    """One provider as ``find_providers`` reports it."""

    model_config = ConfigDict(frozen=True)

    address: str
    did: str
    model_name: str
    model_sha256: str
    quantization: str
    context_length: int
    generation_tokens_per_s: float
    prefill_tokens_per_s: float
    price_per_1k_tokens_wei: int
    stake_wei: int
    reputation_score: float
    tasks_won: int
    tasks_slashed: int
    endpoint: str | None
    tags: dict[str, str] = Field(
        default_factory=dict, description="What the provider's signed offer states about it."
    )

    def text(self) -> str:
        return (
            f"{self.address} {self.model_name} {self.generation_tokens_per_s:.0f} tok/s "
            f"{self.price_per_1k_tokens_wei} wei/1k tokens reputation "
            f"{self.reputation_score:.2f}"
            + "".join(f" {k}={v}" for k, v in sorted(self.tags.items()))
        )


class ProvidersFound(ToolResult):
    """Providers matching a query, best ranked first."""

    providers: tuple[ProviderInfo, ...]

    def text(self) -> str:
        lines = "; ".join(p.text() for p in self.providers)
        n = len(self.providers)
        return f"{n} provider{'s' if n != 1 else ''}, best first: {lines}"


class ReplicaInfo(BaseModel):
    """One provider's part in a task."""

    model_config = ConfigDict(frozen=True)

    address: str
    did: str | None
    output_hash: str | None
    agreed: bool
    claim_tx: str
    commit_tx: str | None
    reveal_tx: str | None


class RescoreReport(ToolResult):
    """A local verifier's re-score of a result (``verify.rescore_result``).

    Attributes:
        result_cid: The result re-scored.
        passed: Both measures reached their thresholds.
        top1_fraction: Share of claimed tokens the verifier ranks first.
        fingerprint_agreement: Agreement with the result's committed top-k fingerprint.
        tokens: Claimed tokens re-scored.
        rescore_ms: What the re-score cost.
        claimed_generation_ms: What generating the result cost its node.
        reason: Why it failed ("" when it passed).
    """

    result_cid: str
    passed: bool
    top1_fraction: float
    fingerprint_agreement: float
    tokens: int
    rescore_ms: float
    claimed_generation_ms: float
    reason: str = ""

    def text(self) -> str:
        if self.passed:
            return (
                f"re-score of {self.result_cid} passed: {self.top1_fraction:.0%} of "
                f"{self.tokens} tokens are the verifier's first choice, fingerprint agreement "
                f"{self.fingerprint_agreement:.2f}"
            )
        return f"re-score of {self.result_cid} FAILED: {self.reason}; do not rely on this output"


class TaskReceipt(ToolResult):
    """A delegated task, settled on chain and verified as the requester verifies.

    Attributes:
        task_id: ``0x`` task id.
        trust: The trust level it was delegated with (``None`` when fetched by id).
        output: The accepted output.
        output_hash: Its sha256, as settled on chain.
        bundle_cid: CID of the TaskBundle.
        result_cid: CID of the winning ResultBundle.
        model_sha256: The model that produced it.
        replicas: Replicas the task asked for.
        quorum: Matching outputs it needed.
        agreed: Replicas that revealed the accepted output.
        bounty_per_replica_wei: Wei offered per winning replica.
        payout_per_winner_wei: Wei each winner was paid.
        post_tx: The ``postTask`` transaction.
        finalize_tx: The settling transaction.
        gas_used: Gas of every transaction of the task.
        committers: Every provider that claimed, in claim order.
        verification: The local verifier's re-score, if one was run.
        prompt_tokens: Prompt tokens the winning node reports (its ResultBundle's timings).
        completion_tokens: Tokens of the accepted output (the winning result's token ids).
    """

    task_id: str
    trust: Trust | None
    output: str
    output_hash: str
    bundle_cid: str
    result_cid: str
    model_sha256: str
    replicas: int
    quorum: int
    agreed: int
    bounty_per_replica_wei: int
    payout_per_winner_wei: int
    post_tx: str
    finalize_tx: str
    gas_used: int
    committers: tuple[ReplicaInfo, ...]
    verification: RescoreReport | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @classmethod
    def from_delegation(
        cls,
        handle: TaskHandle,
        done: DelegationReceipt,
        trust: Trust | None,
        verification: RescoreReport | None = None,
    ) -> TaskReceipt:
        """The receipt of a settled delegation, as every tool and agent reports it.

        Args:
            handle: The posted task.
            done: What its settlement returned.
            trust: The trust level it was delegated with (``None`` when fetched by id).
            verification: The local verifier's re-score, if one was run.
        """
        return cls(
            task_id=done.task_id,
            trust=trust,
            output=done.output,
            output_hash=done.output_hash,
            bundle_cid=done.bundle_cid,
            result_cid=done.result_cid,
            model_sha256=done.result.model_sha256,
            replicas=handle.params.replicas,
            quorum=handle.params.quorum,
            agreed=sum(r.output_hash == done.output_hash for r in done.replicas),
            bounty_per_replica_wei=handle.params.bounty_per_replica,
            payout_per_winner_wei=done.settlement.payout_per_winner,
            post_tx=done.post_tx,
            finalize_tx=done.finalize_tx,
            gas_used=done.gas_used,
            committers=tuple(
                ReplicaInfo(
                    address=r.address,
                    did=r.did,
                    output_hash=r.output_hash,
                    agreed=r.output_hash == done.output_hash,
                    claim_tx=r.claim_tx,
                    commit_tx=r.commit_tx,
                    reveal_tx=r.reveal_tx,
                )
                for r in done.replicas
            ),
            verification=verification,
            prompt_tokens=done.result.timings.prompt_tokens,
            completion_tokens=len(done.result.token_ids) or done.result.timings.generated_tokens,
        )

    def text(self) -> str:
        line = (
            f"task {self.task_id} settled: {self.agreed} of {self.replicas} agreed on output "
            f"{quote(self.output)} (result {self.result_cid}, tx {self.finalize_tx})"
        )
        if self.verification is not None:
            line += "; " + self.verification.text()
        return line


class SecondOpinion(ToolResult):
    """A second opinion on a result: a local re-score and/or a peer's re-run.

    Attributes:
        result_cid: The result examined.
        task_cid: The task it answers.
        output_hash: The output hash it claims.
        verdict: ``confirmed`` when every check run agrees, else ``disputed``.
        rescore: The local re-score, if run.
        peer: The peer's re-run of the same task, if run.
        peer_agrees: Whether the peer's output hash is the claimed one.
    """

    result_cid: str
    task_cid: str
    output_hash: str
    verdict: Literal["confirmed", "disputed"]
    rescore: RescoreReport | None = None
    peer: TaskReceipt | None = None
    peer_agrees: bool | None = None

    def text(self) -> str:
        parts = []
        if self.rescore is not None:
            parts.append(self.rescore.text())
        if self.peer is not None:
            same = "the same output"
            if not self.peer_agrees:
                same = f"another output {quote(self.peer.output, 200)}"
            parts.append(f"peer task {self.peer.task_id} gave {same}")
        return f"second opinion on {self.result_cid}: {self.verdict} ({'; '.join(parts)})"


class LoggedOutputReceipt(ToolResult):
    """An output hash recorded in the on-chain ``OutputLog``."""

    subject: str
    output_hash: str
    result_cid: str
    sender: str
    tx_hash: str
    gas_used: int
    block_number: int

    def text(self) -> str:
        return (
            f"logged output {self.output_hash} for subject {short(self.subject, 18)} "
            f"(content {self.result_cid}, tx {self.tx_hash})"
        )


class PolicyReport(ToolResult):
    """What the app's policy says about an output (and a planned spend).

    Attributes:
        allowed: No rule is broken.
        violations: One line per broken rule.
        spent_wei: Wei this network handle has escrowed so far.
        spending_cap_wei: The cap, if any.
    """

    allowed: bool
    violations: tuple[str, ...]
    spent_wei: int
    spending_cap_wei: int | None

    def text(self) -> str:
        if self.allowed:
            return "policy check passed: no rule is broken"
        n = len(self.violations)
        return f"policy check failed, {n} rule{'s' if n != 1 else ''} broken: " + "; ".join(
            self.violations
        )


class SplitReceipt(ToolResult):
    """A long text delegated in chunks; outputs merged in order.

    Attributes:
        output: The chunks' outputs joined by blank lines, in the text's order.
        chunks: One receipt per chunk, in order.
        providers: Distinct providers that won a chunk.
        gas_used: Gas of every chunk's transactions.
    """

    output: str
    chunks: tuple[TaskReceipt, ...]
    providers: int
    gas_used: int

    def text(self) -> str:
        tasks = ", ".join(f"{c.task_id} ({c.result_cid})" for c in self.chunks)
        return (
            f"{len(self.chunks)} chunks settled by {self.providers} providers: {tasks}; merged "
            f"output {quote(self.output)}"
        )
