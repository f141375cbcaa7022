"""The Compliance agent: the watchdog over every delegated output.

For each part it checks the app's declarative policy (``check_policy``), asks a local model
the policy's fuzzy ``judge_rules`` as yes/no questions under a grammar, gets a second opinion
when the trust level asks for one, and decides. A task posted with a challenge window
(``policy.challenge_window_s``) is still open when its results are revealed: a rejected
result is challenged on chain inside the window — settlement, and so the provider's payment,
is frozen until a drawn panel of staked providers decides — and an accepted one is released to
settle.
Every verdict is written to the on-chain ``OutputLog`` (``log_output``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseChatMessage, StructuredMessage, TextMessage
from autogen_core import CancellationToken
from autogen_core.models import ChatCompletionClient, LLMMessage, SystemMessage, UserMessage
from pydantic import BaseModel

from chefsplan_agents import _json
from chefsplan_agents.agents._matching import (
    _Reveal,
    _task_receipt,
    revealed_results,
    task_cap_wei,
)
from chefsplan_agents.agents._plan import Plan, Step
from chefsplan_agents.agents._reports import (
    ChallengeInfo,
    ComplianceMessage,
    ComplianceReport,
    Delegation,
    DelegationReport,
    JudgeRuling,
    Verdict,
)
from chefsplan_agents.agents._workflow import StreamItem, WorkflowAgent, one_line
from chefsplan_agents.config import PolicySettings
from chefsplan_agents.errors import InsufficientFunds, PolicyViolation, ToolError
from chefsplan_agents.network import Network
from chefsplan_agents.tools import (
    LoggedOutputReceipt,
    PolicyReport,
    SecondOpinion,
    ToolFailure,
    ToolResult,
    check_policy,
    log_output,
    second_opinion,
)
from chefsplan_agents.verify import ChallengeEvidence, publish_evidence

__all__ = ["ComplianceAgent", "Released", "Rulings", "challenge_task"]

log = logging.getLogger(__name__)

_JUDGE_OUTPUT_CHARS = 2000


class _YesNo(BaseModel):
    answer: Literal["yes", "no"]


class Rulings(ToolResult):
    """The local model's answers to the fuzzy rules."""

    rulings: tuple[JudgeRuling, ...]

    def text(self) -> str:
        return (
            "; ".join(f"{r.rule!r}: {'yes' if r.complies else 'NO'}" for r in self.rulings)
            or "no fuzzy rules"
        )


@dataclass
class _PartState:
    """What the Compliance agent has found out about one part so far."""

    delegation: Delegation
    reasons: list[str] = field(default_factory=list)
    policy: PolicyReport | None = None
    rulings: tuple[JudgeRuling, ...] = ()
    opinion: SecondOpinion | None = None
    challenge: ChallengeInfo | None = None
    logged: LoggedOutputReceipt | None = None


class _Skipped(ToolResult):
    reason: str

    def text(self) -> str:
        return f"skipped: {self.reason}"


class Released(ToolResult):
    """What ``challenge_or_release`` did to a part's tasks."""

    delegation: Delegation
    challenges: tuple[ChallengeInfo, ...] = ()
    released: tuple[str, ...] = ()

    def text(self) -> str:
        bits = [
            f"challenged task {c.task_id} (tx {c.tx_hash}, bond {c.bond_wei} wei): settlement "
            "frozen until a drawn panel decides"
            for c in self.challenges
        ]
        bits += [f"released task {t}: settled" for t in self.released]
        return "; ".join(bits) or "nothing to challenge or release"


def challenge_task(
    network: Network,
    task_id: str,
    policy: PolicySettings,
    *,
    reason: str = "the result breaks the requester's policy",
    check: str = "policy",
    offender: _Reveal | None = None,
) -> ChallengeInfo:
    """Challenge a task inside its challenge window, posting the market's challenge bond.

    The challenge names an evidence document (:class:`~chefsplan_agents.verify.ChallengeEvidence`,
    stored first) with ``check``, ``reason`` and, when given, the offending revealed result; the
    drawn panel re-scores the revealed results itself.

    Raises:
        PolicyViolation: The bond is over the per-task cap (:func:`task_cap_wei`).
        InsufficientFunds: The requester cannot pay the bond.
        MarketError: No such task.
        TxReverted: The window has closed (``ChallengeClosed``) or it was challenged already.
    """
    handle = network.handle_of(task_id)
    bond = network.market.challenge_bond
    cap = task_cap_wei(policy)
    if bond > cap:
        raise PolicyViolation(
            f"a challenge bonds {bond} wei, over the per-task cap of {cap} wei "
            "(policy.max_spend_per_task_wei): raise the cap to let the agents challenge"
        )
    balance = network.balance_wei()
    if balance < bond:
        raise InsufficientFunds(
            f"requester {network.address} holds {balance} wei, the challenge bond is {bond}"
        )
    evidence = ChallengeEvidence.about(
        chain_id=network.chain.chain_id,
        market=network.market.address,
        task_id="0x" + handle.task_id.hex(),
        bundle_cid=handle.bundle_cid,
        provider=offender.address if offender else None,
        result_cid=offender.result_cid if offender else None,
        output_hash=offender.output_hash if offender else None,
        check=check,
        reason=reason,
        model_sha256=handle.bundle.model.sha256,
    )
    evidence_cid = publish_evidence(network.store, evidence)
    receipt = network.market.challenge(
        handle.params, evidence_cid, sender=network.address, value=bond
    )
    log.info("challenged task %s (tx %s)", task_id, receipt.tx_hash)
    return ChallengeInfo(task_id=task_id, tx_hash=receipt.tx_hash, bond_wei=bond)


def _check_of(reasons: Sequence[str]) -> str:
    """The evidence's ``check`` for the first reason that names one."""
    for reason in reasons:
        if reason.startswith("re-score failed"):
            return "rescore"
        if reason.startswith("policy"):
            return "policy"
    return "compliance"


def _challenge_or_release(
    network: Network,
    policy: PolicySettings,
    delegation: Delegation,
    accept: bool,
    reasons: Sequence[str] = (),
) -> Released:
    """Challenge the tasks whose revealed output is not the accepted one; settle the rest."""
    challenges: list[ChallengeInfo] = []
    released: list[str] = []
    settled = delegation
    for task_id in delegation.task_ids:
        handle = network.handle_of(task_id)
        reveals = revealed_results(network, handle)
        outputs = {r.output_hash for r in reveals}
        good = accept and outputs <= {delegation.output_hash}
        if not good:
            offender = next(
                (r for r in reveals if not accept or r.output_hash != delegation.output_hash),
                None,
            )
            challenges.append(
                challenge_task(
                    network,
                    task_id,
                    policy,
                    reason="; ".join(reasons) or "a replica's output is not the accepted one",
                    check=_check_of(reasons),
                    offender=offender,
                )
            )
            continue
        done = network.wait(handle)
        released.append(task_id)
        receipt = _task_receipt(handle, done, delegation.trust)
        if receipt.output_hash == delegation.output_hash:
            receipt = receipt.model_copy(update={"verification": delegation.verification})
            settled = settled.model_copy(update={"status": "settled", "receipt": receipt})
    return Released(delegation=settled, challenges=tuple(challenges), released=tuple(released))


class ComplianceAgent(WorkflowAgent):
    """Checks every delegated part, challenges bad ones, releases good ones, logs verdicts.

    It acts on the latest ``StructuredMessage[DelegationReport]`` it receives (following the
    Copilot's plan when one is in the conversation); given plain text, it checks that text
    against the policy and logs the verdict. Its reply is a
    ``StructuredMessage[ComplianceReport]``.

    Args:
        network: The network (its verifier re-scores; its account challenges and logs).
        judge: A model that answers the policy's ``judge_rules`` yes or no (optional; a
            ``LocalModelClient`` does it under a grammar). Without one the fuzzy rules are
            not checked, and each verdict says so.
        name: Its name in a team.
    """

    def __init__(
        self,
        network: Network,
        *,
        judge: ChatCompletionClient | None = None,
        name: str = "compliance",
    ) -> None:
        super().__init__(
            name,
            "Checks delegated outputs against the app's policy, gets second opinions, "
            "challenges bad results on chain and logs every verdict.",
            network,
        )
        self.judge = judge

    @property
    def policy(self) -> PolicySettings:
        """The app's rules: the network's (``Network.policy``)."""
        return self.network.policy

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (ComplianceMessage, TextMessage)

    async def _stream(
        self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken
    ) -> AsyncGenerator[StreamItem, None]:
        report: DelegationReport | None = None
        plan: Plan | None = None
        text: str | None = None
        for message in reversed(messages):
            if isinstance(message, StructuredMessage):
                if report is None and isinstance(message.content, DelegationReport):
                    report = message.content
                if plan is None and isinstance(message.content, Plan):
                    plan = message.content
            elif text is None and isinstance(message, TextMessage):
                text = message.content
        if report is None and text is not None:
            report = DelegationReport(
                attempt=1,
                delegations=(
                    Delegation(part=0, prompt="", status="settled", output=text, replicas=0),
                ),
                merged=text,
                providers=0,
            )
        if report is None:
            yield Response(
                chat_message=TextMessage(
                    content="nothing to check: no delegation report or text", source=self.name
                )
            )
            return
        result: ComplianceReport | None = None
        async for item in self.review(report, plan):
            if isinstance(item, ComplianceReport):
                result = item
            else:
                yield item
        assert result is not None
        yield Response(chat_message=ComplianceMessage(content=result, source=self.name))

    def _steps(self, delegation: Delegation, plan: Plan | None) -> list[Step]:
        if plan is not None:
            mine = [
                s
                for s in plan.steps
                if s.agent == "compliance" and s.arguments.get("part") == delegation.part
            ]
            if mine:
                return mine
        p = {"part": delegation.part}
        steps = [Step(agent="compliance", tool="check_policy", arguments=p, why="app rules")]
        if self.policy.judge_rules:
            steps.append(Step(agent="compliance", tool="judge", arguments=p, why="fuzzy rules"))
        if delegation.trust != "low" and delegation.result_cid:
            steps.append(
                Step(
                    agent="compliance",
                    tool="second_opinion",
                    arguments=p | {"method": "auto"},
                    why="re-score or peer re-run",
                )
            )
        if delegation.status == "revealed":
            steps.append(
                Step(agent="compliance", tool="challenge_or_release", arguments=p, why="window")
            )
        steps.append(Step(agent="compliance", tool="log_output", arguments=p, why="on chain"))
        return steps

    async def review(
        self, report: DelegationReport, plan: Plan | None = None
    ) -> AsyncGenerator[StreamItem | ComplianceReport, None]:
        """Judge every delegation of ``report``; yield the steps' events, then the report."""
        verdicts = []
        for delegation in report.delegations:
            verdict: Verdict | None = None
            async for item in self._judge_part(delegation, plan):
                if isinstance(item, Verdict):
                    verdict = item
                else:
                    yield item
            assert verdict is not None
            verdicts.append(verdict)
        yield ComplianceReport(attempt=report.attempt, verdicts=tuple(verdicts))

    async def _judge_part(
        self, delegation: Delegation, plan: Plan | None
    ) -> AsyncGenerator[StreamItem | Verdict, None]:
        state = _PartState(delegation=delegation)
        if delegation.status == "failed":
            state.reasons.append(f"not delegated: {delegation.error}")
        elif delegation.verification is not None and not delegation.verification.passed:
            state.reasons.append(f"re-score failed: {delegation.verification.reason}")
        steps = [
            s
            for s in self._steps(delegation, plan)
            if (delegation.status != "failed" or s.tool == "log_output")
            # nothing delegated, nothing to account for on chain
            and (s.tool != "log_output" or delegation.task_ids)
        ]
        i = 0
        while i < len(steps):
            # The blocking steps in a row run in one worker-thread call, their events around it.
            j = i + 1
            if steps[i].tool not in ("judge", "check_policy"):
                while j < len(steps) and steps[j].tool not in ("judge", "check_policy"):
                    j += 1
            batch = steps[i:j]
            events = [self.call_event(s.tool, self._shown(s, delegation)) for s in batch]
            for event in events:
                yield event
            if batch[0].tool == "judge":
                results: list[ToolResult] = [await self._judge(delegation.output)]
                self._take(batch[0], results[0], state)
            elif batch[0].tool == "check_policy":
                results = [self._run(batch[0], state)]  # a few regular expressions: no thread
            else:
                results = await asyncio.to_thread(self._run_all, batch, state)
            for event, result in zip(events, results, strict=True):
                yield self.result_event(event, result)
            i = j
        yield Verdict(
            part=delegation.part,
            decision="rejected" if state.reasons else "accepted",
            reasons=tuple(state.reasons),
            delegation=state.delegation,
            policy=state.policy,
            judge=state.rulings,
            second_opinion=state.opinion,
            challenge=state.challenge,
            logged=state.logged,
        )

    @staticmethod
    def _shown(step: Step, delegation: Delegation) -> dict[str, object]:
        arguments = dict(step.arguments)
        if step.tool == "check_policy":
            arguments["text"] = one_line(delegation.output, 80)
        elif step.tool in ("second_opinion", "challenge_or_release"):
            arguments["result_cid"] = delegation.result_cid
        return arguments

    def _run_all(self, steps: list[Step], state: _PartState) -> list[ToolResult]:
        return [self._run(step, state) for step in steps]

    def _run(self, step: Step, state: _PartState) -> ToolResult:
        """Run one blocking step on the safe path and fold its result into ``state``."""
        delegation = state.delegation
        func: Callable[[], ToolResult]
        if step.tool == "check_policy":
            func = functools.partial(check_policy, self.network, delegation.output)
        elif step.tool == "second_opinion":
            method = str(step.arguments.get("method", "auto"))
            func = functools.partial(self._second_opinion, delegation, method)
        elif step.tool == "challenge_or_release":
            accept = not state.reasons
            func = functools.partial(
                _challenge_or_release,
                self.network,
                self.policy,
                delegation,
                accept,
                tuple(state.reasons),
            )
        elif step.tool == "log_output":
            record = json.dumps(
                {
                    "verdict": "rejected" if state.reasons else "accepted",
                    "part": delegation.part,
                    "tasks": list(delegation.task_ids),
                    "result_cid": delegation.result_cid,
                    "output_hash": delegation.output_hash,
                    "provider": delegation.provider_did,
                    "reasons": state.reasons,
                },
                sort_keys=True,
            )
            subject = delegation.task_ids[0] if delegation.task_ids else "verdict"
            func = functools.partial(log_output, self.network, record, subject)
        else:
            return ToolFailure(tool=step.tool, error="UnknownStep", message="not a Compliance step")
        result = self.call_safely(step.tool, func)
        self._take(step, result, state)
        return result

    def _take(self, step: Step, result: ToolResult, state: _PartState) -> None:
        """What a step's result means for the verdict."""
        if step.tool == "check_policy":
            if isinstance(result, PolicyReport):
                state.policy = result
                state.reasons += [f"policy: output {v}" for v in result.violations]
            else:
                state.reasons.append(f"policy check failed: {result.text()}")
        elif step.tool == "judge":
            if isinstance(result, Rulings):
                state.rulings = result.rulings
                state.reasons += [
                    f"judge: rule not met: {r.rule}" for r in result.rulings if not r.complies
                ]
            else:
                state.reasons.append(f"judge unavailable: {result.text()}")
        elif step.tool == "second_opinion":
            if isinstance(result, SecondOpinion):
                state.opinion = result
                if result.verdict == "disputed":
                    state.reasons.append("second opinion disputed the result")
            else:
                log.info("second opinion unavailable: %s", result.text())
        elif step.tool == "challenge_or_release":
            if isinstance(result, Released):
                rejected = bool(state.reasons)
                state.delegation = result.delegation
                if rejected and result.challenges:
                    state.challenge = result.challenges[0]
            else:
                state.reasons.append(f"challenge or release failed: {result.text()}")
        elif step.tool == "log_output" and isinstance(result, LoggedOutputReceipt):
            state.logged = result

    def _second_opinion(self, delegation: Delegation, method: str) -> ToolResult:
        """A second opinion — but no peer re-run when several providers already agreed: the
        vote was the second opinion, and the one peer asked could be the outvoted one."""
        if delegation.agreed >= 2 and method in ("auto", "peer"):
            verifier = self.network.verifier
            model = delegation.receipt.model_sha256 if delegation.receipt else None
            if verifier is None or (model is not None and verifier.info.sha256 != model):
                return _Skipped(
                    reason=f"{delegation.agreed} of {delegation.replicas} providers already "
                    "agreed, and no local verifier runs the model"
                )
            method = "rescore"
        if method not in ("auto", "rescore", "peer", "both"):
            raise ToolError(f"method must be auto, rescore, peer or both (got {method!r})")
        return second_opinion(
            self.network,
            delegation.result_cid,
            cast(Literal["auto", "rescore", "peer", "both"], method),
        )

    async def _judge(self, output: str) -> ToolResult:
        if self.judge is None:
            return ToolFailure(
                tool="judge",
                error="NoJudge",
                message="no judge model: the fuzzy rules were not checked",
            )
        rulings = []
        for rule in self.policy.judge_rules:
            messages: list[LLMMessage] = [
                SystemMessage(content="You check texts against a rule. Answer only yes or no."),
                UserMessage(
                    content=f"Rule: {rule}\n\nText: {output[:_JUDGE_OUTPUT_CHARS]}\n\n"
                    "Does the text follow the rule?",
                    source=self.name,
                ),
            ]
            try:
                made = await self.judge.create(
                    messages, json_output=_YesNo, extra_create_args={"max_tokens": 16}
                )
                content = made.content if isinstance(made.content, str) else ""
                try:
                    answer = _YesNo.model_validate(_json.loads(content)).answer
                except ValueError:
                    word = content.strip().lower()
                    answer = "yes" if word.startswith("yes") else "no"
            except Exception as err:  # the judge's trouble is a verdict, never a crash
                log.info("judge failed on rule %r: %s", rule, err)
                return ToolFailure(
                    tool="judge", error=type(err).__name__, message=one_line(str(err))
                )
            rulings.append(JudgeRuling(rule=rule, complies=answer == "yes"))
        return Rulings(rulings=tuple(rulings))
