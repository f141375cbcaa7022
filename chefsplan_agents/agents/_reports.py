"""What the agents hand each other: delegations, verdicts and their reports (pydantic).

They travel between the agents as ``StructuredMessage``\\ s, so a team's history holds the
whole audit trail: who answered, how many agreed, which result CID, what each check said,
which transactions paid, challenged or logged it.
"""

from __future__ import annotations

from typing import Literal

from autogen_agentchat.messages import StructuredMessage
from pydantic import BaseModel, ConfigDict

from chefsplan_agents.tools import (
    LoggedOutputReceipt,
    PolicyReport,
    RescoreReport,
    SecondOpinion,
    TaskReceipt,
)

__all__ = [
    "ChallengeInfo",
    "ComplianceMessage",
    "ComplianceReport",
    "Delegation",
    "DelegationMessage",
    "DelegationReport",
    "JudgeRuling",
    "Verdict",
]


def _short(value: str, keep: int = 18) -> str:
    return value if len(value) <= keep + 1 else value[:keep] + "…"


class Delegation(BaseModel):
    """One part of a plan as the Matching agent delegated it.

    Attributes:
        part: The part's index.
        prompt: What the provider was asked.
        status: ``settled`` (paid), ``revealed`` (results in, settlement waits out the challenge
            window) or ``failed``.
        task_ids: The on-chain tasks (three for sensitive data checked by three providers).
        trust: The trust level it was delegated with.
        output: The accepted (or, while ``revealed``, the majority's) output.
        output_hash: Its sha256.
        result_cid: CID of the winning ResultBundle.
        provider_did: DID of the provider whose result is cited.
        provider_address: Its EVM address.
        agreed: Providers that returned this output.
        replicas: Providers that ran the part.
        dissenters: DIDs (or addresses) of providers that returned another output.
        verification: The local verifier's re-score, when the trust level asks for one.
        receipt: The settled task's receipt (``None`` until settled).
        escrow_wei: What was escrowed for the part.
        error: Why it failed (``status == "failed"``).
    """

    model_config = ConfigDict(frozen=True)

    part: int
    prompt: str
    status: Literal["settled", "revealed", "failed"]
    task_ids: tuple[str, ...] = ()
    trust: str = "normal"
    output: str = ""
    output_hash: str = ""
    result_cid: str = ""
    provider_did: str | None = None
    provider_address: str | None = None
    agreed: int = 0
    replicas: int = 0
    dissenters: tuple[str, ...] = ()
    verification: RescoreReport | None = None
    receipt: TaskReceipt | None = None
    escrow_wei: int = 0
    error: str | None = None

    def text(self) -> str:
        """One line for a model or a log."""
        if self.status == "failed":
            return f"part {self.part + 1}: failed: {self.error}"
        line = (
            f"part {self.part + 1}: node {self.provider_did} answered, {self.agreed} of "
            f"{self.replicas} agreed, result {self.result_cid} ({self.status})"
        )
        if self.verification is not None:
            line += ", re-score " + ("passed" if self.verification.passed else "FAILED")
        return line


class DelegationReport(BaseModel):
    """Everything the Matching agent delegated for one plan.

    Attributes:
        attempt: The plan's attempt number.
        delegations: One per part, in part order.
        merged: The parts' outputs joined in order (chunks of a document merged).
        providers: Distinct providers cited.
    """

    model_config = ConfigDict(frozen=True)

    attempt: int
    delegations: tuple[Delegation, ...]
    merged: str
    providers: int

    def text(self) -> str:
        return "\n".join(d.text() for d in self.delegations)


class JudgeRuling(BaseModel):
    """A local model's yes/no answer to one fuzzy rule."""

    model_config = ConfigDict(frozen=True)

    rule: str
    complies: bool


class ChallengeInfo(BaseModel):
    """A challenge the Compliance agent raised on chain.

    Attributes:
        task_id: The task challenged.
        tx_hash: The ``challenge`` transaction.
        bond_wei: The challenge bond posted.
        frozen: Settlement is frozen until a panel of staked providers decides (or lapses).
    """

    model_config = ConfigDict(frozen=True)

    task_id: str
    tx_hash: str
    bond_wei: int
    frozen: bool = True


class Verdict(BaseModel):
    """The Compliance agent's decision on one part.

    Attributes:
        part: The part's index.
        decision: ``accepted`` or ``rejected``.
        reasons: Why (one line each; empty when nothing was wrong).
        delegation: The delegation judged (settled now when it was released).
        policy: The policy check.
        judge: The local model's rulings on the fuzzy rules.
        second_opinion: The second opinion, when one ran.
        challenge: The on-chain challenge, when one was raised.
        logged: The verdict's record in the ``OutputLog``.
    """

    model_config = ConfigDict(frozen=True)

    part: int
    decision: Literal["accepted", "rejected"]
    reasons: tuple[str, ...] = ()
    delegation: Delegation
    policy: PolicyReport | None = None
    judge: tuple[JudgeRuling, ...] = ()
    second_opinion: SecondOpinion | None = None
    challenge: ChallengeInfo | None = None
    logged: LoggedOutputReceipt | None = None

    @property
    def accepted(self) -> bool:
        return self.decision == "accepted"

    def provenance(self) -> str:
        """Where the part came from, in one line (what the Copilot's answer cites)."""
        return f"part {self.part + 1}: {self._details()}"

    def _details(self) -> str:
        d = self.delegation
        if d.status == "failed":
            return f"not delegated ({d.error})"
        bits = [f"node {d.provider_did} answered", f"{d.agreed} of {d.replicas} agreed"]
        bits.append(f"result {d.result_cid}")
        if d.verification is not None:
            bits.append("re-score " + ("passed" if d.verification.passed else "failed"))
        if self.second_opinion is not None:
            bits.append(f"second opinion {self.second_opinion.verdict}")
        if self.policy is not None:
            bits.append("policy " + ("passed" if self.policy.allowed else "broken"))
        if self.judge:
            ok = sum(r.complies for r in self.judge)
            bits.append(f"judge {ok} of {len(self.judge)} rules met")
        if self.challenge is not None:
            bits.append(
                f"challenged on chain (tx {_short(self.challenge.tx_hash)}), payment frozen"
            )
        if self.logged is not None:
            bits.append(f"verdict logged (tx {_short(self.logged.tx_hash)})")
        return ", ".join(bits)

    def text(self) -> str:
        line = f"part {self.part + 1} {self.decision.upper()}: {self._details()}"
        if self.reasons:
            line += " — " + "; ".join(self.reasons)
        return line


class ComplianceReport(BaseModel):
    """The Compliance agent's verdicts on one delegation report."""

    model_config = ConfigDict(frozen=True)

    attempt: int
    verdicts: tuple[Verdict, ...]

    @property
    def rejected(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if not v.accepted)

    def text(self) -> str:
        return "\n".join(v.text() for v in self.verdicts)


class DelegationMessage(StructuredMessage[DelegationReport]):
    """Matching's report as a chat message; its text is the report's lines, not JSON."""

    def to_text(self) -> str:
        return self.content.text()

    def to_model_text(self) -> str:
        return self.content.text()


class ComplianceMessage(StructuredMessage[ComplianceReport]):
    """Compliance's verdicts as a chat message; its text is one line per verdict."""

    def to_text(self) -> str:
        return self.content.text()

    def to_model_text(self) -> str:
        return self.content.text()
