"""The Matching agent: finds and ranks providers, picks the checks a trust level needs, posts
or assigns the tasks (every part posted before any is awaited) and merges the results.

Ranking (:func:`rank_providers`) weighs model fit, advertised speed, price, reputation and
stake, each scaled to 0..1 over the candidates. Data marked sensitive goes only to providers
whose signed offer meets the policy's ``sensitive_*`` criteria (:func:`sensitive_refusal`),
and only ever to assigned tasks — an open task could be claimed by anyone.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import cast

from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseChatMessage, StructuredMessage, TextMessage
from autogen_core import CancellationToken
from pydantic import BaseModel, ConfigDict

from chefsplan_agents.agents._plan import Part, Plan, build_plan, parse_request
from chefsplan_agents.agents._reports import Delegation, DelegationMessage, DelegationReport
from chefsplan_agents.agents._workflow import StreamItem, WorkflowAgent, failure, one_line
from chefsplan_agents.bundles import (
    ChatMessage,
    GenerationParams,
    ModelRequirement,
    TaskBundle,
    decode_result_bundle,
    output_hash,
)
from chefsplan_agents.config import PolicySettings
from chefsplan_agents.errors import (
    ChefsplanError,
    DelegationTimeout,
    NoProviderFound,
    PolicyViolation,
    ToolError,
    VerificationError,
)
from chefsplan_agents.market import DelegationReceipt, TaskHandle, Timeouts
from chefsplan_agents.network import Network
from chefsplan_agents.tools import (
    ProviderInfo,
    RescoreReport,
    TaskReceipt,
    ToolFailure,
    ToolResult,
    Trust,
    find_providers,
    sensitive_refusal,
    verify_output,
)

__all__ = [
    "DEFAULT_TASK_CAP_WEI",
    "MatchingAgent",
    "RankWeights",
    "RankedProvider",
    "RankedProviders",
    "rank_providers",
    "sensitive_refusal",
    "task_cap_wei",
]

log = logging.getLogger(__name__)

_REDUNDANT, _QUORUM = 3, 2

DEFAULT_TASK_CAP_WEI = 10**17
"""What the agents put on chain for one part (its escrow, or a challenge bond) when the policy
sets no ``max_spend_per_task_wei``: 0.1 ether. Offers name their own prices; this bounds
what a provider advertising an absurd one can cost."""


def task_cap_wei(policy: PolicySettings) -> int:
    """The most wei the agents spend on chain for one part under ``policy``."""
    cap = policy.max_spend_per_task_wei
    return DEFAULT_TASK_CAP_WEI if cap is None else cap


class RankWeights(BaseModel):
    """How much each criterion counts in a provider's score (all scaled 0..1)."""

    model_config = ConfigDict(frozen=True)

    model_fit: float = 3.0
    speed: float = 1.0
    price: float = 1.0
    reputation: float = 2.0
    stake: float = 1.0


class RankedProvider(BaseModel):
    """A provider with its score and what made it."""

    model_config = ConfigDict(frozen=True)

    provider: ProviderInfo
    score: float
    model_fit: bool


class RankedProviders(ToolResult):
    """The Matching agent's ranking, best first."""

    ranked: tuple[RankedProvider, ...]
    excluded: tuple[str, ...] = ()

    def text(self) -> str:
        rows = "; ".join(
            f"{r.provider.did} ({r.provider.model_name}, {r.provider.generation_tokens_per_s:.0f} "
            f"tok/s, {r.provider.price_per_1k_tokens_wei} wei/1k, score {r.score:.2f})"
            for r in self.ranked
        )
        line = f"{len(self.ranked)} provider(s) ranked, best first: {rows}"
        if self.excluded:
            line += f"; left out: {'; '.join(self.excluded)}"
        return line


def _fits(p: ProviderInfo, model: str | None) -> bool:
    if model is None:
        return True
    wanted = model.lower().removeprefix("0x")
    return wanted in (p.model_name.lower(), p.model_sha256.lower())


def rank_providers(
    providers: Sequence[ProviderInfo],
    *,
    model: str | None = None,
    weights: RankWeights | None = None,
) -> list[RankedProvider]:
    """Score providers, best first (ties keep the registry index's order).

    Args:
        providers: The candidates.
        model: The model wanted (name or sha256): a provider serving it gets ``model_fit``.
        weights: The criteria's weights.
    """
    w = weights or RankWeights()
    if not providers:
        return []

    def scale(values: list[float]) -> list[float]:
        top = max(values)
        return [v / top if top > 0 else 1.0 for v in values]

    speed = scale([p.generation_tokens_per_s for p in providers])
    stake = scale([float(p.stake_wei) for p in providers])
    prices = [float(p.price_per_1k_tokens_wei) for p in providers]
    top_price = max(prices)
    cheap = [1.0 - (v / top_price if top_price > 0 else 0.0) for v in prices]
    ranked = []
    for i, p in enumerate(providers):
        fit = _fits(p, model)
        score = (
            w.model_fit * fit
            + w.speed * speed[i]
            + w.price * cheap[i]
            + w.reputation * p.reputation_score
            + w.stake * stake[i]
        )
        ranked.append(RankedProvider(provider=p, score=round(score, 6), model_fit=fit))
    order = sorted(range(len(ranked)), key=lambda i: (-ranked[i].score, i))
    return [ranked[i] for i in order]


# ---------------------------------------------------------------------------- the engine


@dataclass
class _Posted:
    """A part posted on chain (one task, or three assigned ones for sensitive data)."""

    part: Part
    trust: str
    handles: list[TaskHandle] = field(default_factory=list)
    rescore: bool = False
    escrow: int = 0
    error: str | None = None


def _bounty(providers: Sequence[ProviderInfo], max_tokens: int) -> int:
    price = max((p.price_per_1k_tokens_wei for p in providers), default=0)
    return max(1, -(-price * max_tokens // 1000))


def _task_receipt(handle: TaskHandle, done: DelegationReceipt, trust: str) -> TaskReceipt:
    # The trust level was checked when the part was posted; the tools' receipt types it.
    level: Trust | None = cast(Trust, trust) if trust in ("low", "normal", "high") else None
    return TaskReceipt.from_delegation(handle, done, level)


@dataclass(frozen=True)
class _Reveal:
    task_id: str
    address: str
    did: str | None
    output: str
    output_hash: str
    result_cid: str


def await_reveals(network: Network, handle: TaskHandle, timeout_s: float) -> None:
    """Move the task on until every replica has revealed — not further: a task with a
    challenge window then waits for its settlement, and may still be challenged.

    Raises:
        DelegationTimeout: Not every replica revealed in time.
    """
    deadline = time.monotonic() + timeout_s
    replicas = handle.params.replicas
    while True:
        state = network.market.task_state(handle.task_id)
        if not state.open or state.revealed >= replicas:
            return
        if network.chain.block_timestamp() > handle.params.reveal_deadline:
            return  # no reveal can come any more: collect what there is
        if time.monotonic() > deadline:
            raise DelegationTimeout(
                f"task 0x{handle.task_id.hex()} had {state.revealed} of {replicas} reveals "
                f"after {timeout_s:g} s; are provider nodes running?"
            )
        if network.driver is not None:
            network.driver.step()
        else:
            time.sleep(0.25)


def revealed_results(network: Network, handle: TaskHandle) -> list[_Reveal]:
    """The results revealed for a task, fetched by CID and checked against their hashes."""
    tid = "0x" + handle.task_id.hex()
    out = []
    for event in network.market.events("ResultRevealed", task_id=handle.task_id):
        if event.block_number < handle.posted_block:
            continue
        cid = str(event.args["resultCid"])
        claimed = "0x" + bytes(event.args["outputHash"]).hex()
        address = str(event.args["provider"])
        try:
            result = decode_result_bundle(network.store.get(cid))
        except Exception as err:  # a provider's bad bundle is its problem, not ours
            log.info("revealed result %s of %s is unusable: %s", cid, tid, err)
            continue
        if output_hash(result.output) != claimed:
            continue
        out.append(_Reveal(tid, address, result.node_did, result.output, claimed, cid))
    return out


class _Engine:
    """Ranks, posts and collects for one network and policy (blocking; run in a thread)."""

    def __init__(self, network: Network, weights: RankWeights | None) -> None:
        self.network = network
        self.weights = weights

    @property
    def policy(self) -> PolicySettings:
        return self.network.policy

    def rank(
        self, *, model: str | None, sensitive: bool, exclude: Sequence[str]
    ) -> RankedProviders:
        found = find_providers(self.network, model=model, limit=50).providers
        left_out = []
        kept = []
        banned = {e.lower() for e in exclude}
        for p in found:
            if p.did.lower() in banned or p.address.lower() in banned:
                left_out.append(f"{p.did}: excluded after a rejected answer")
                continue
            why = sensitive_refusal(p, self.policy) if sensitive else None
            if why is not None:
                left_out.append(f"{p.did}: {why}")
                continue
            kept.append(p)
        if not kept:
            if sensitive:
                raise NoProviderFound(
                    "no provider qualifies for sensitive data ("
                    + "; ".join(left_out[:3])
                    + "); set policy.sensitive_providers, sensitive_models or sensitive_tags "
                    "to nodes you trust"
                )
            raise NoProviderFound("every matching provider was excluded; try again later")
        ranked = rank_providers(kept, model=model, weights=self.weights)
        return RankedProviders(ranked=tuple(ranked), excluded=tuple(left_out))

    def post(
        self,
        parts: Sequence[Part],
        ranked: Sequence[RankedProvider],
        *,
        trust: str,
        max_tokens: int,
        window: int,
        sensitive: bool,
        restricted: bool,
    ) -> list[_Posted]:
        """Post every part (assigned round-robin over the chosen providers)."""
        if trust not in ("low", "normal", "high"):
            raise ToolError(f"trust must be low, normal or high (got {trust!r})")
        if not 1 <= max_tokens <= 4096:
            raise ToolError(f"max_tokens must be 1 to 4096 (got {max_tokens})")
        providers = [r.provider for r in ranked]
        verifier = self.network.verifier
        sha = providers[0].model_sha256
        vsha = verifier.info.sha256 if verifier is not None else None
        if trust != "low" and any(p.model_sha256 == vsha for p in providers):
            sha = str(vsha)  # a model the local verifier can re-score
        same = [p for p in providers if p.model_sha256 == sha]
        verifiable = vsha == sha
        single = trust == "low" or (trust == "normal" and verifiable)
        if not single and len(same) < _REDUNDANT:
            raise NoProviderFound(
                f"trust={trust!r} needs {_REDUNDANT} providers of model {sha[:12]}…, found "
                f"{len(same)}; use trust='low', or connect with a verifier for this model"
            )
        bounty = _bounty(same if not single else same[:1], max_tokens)
        per_part = bounty * (1 if single else _REDUNDANT)
        cap = task_cap_wei(self.policy)
        if per_part > cap:
            raise PolicyViolation(
                f"a part escrows {per_part} wei, over the per-task cap of {cap} wei "
                "(policy.max_spend_per_task_wei): lower max_tokens or the trust level, or "
                "raise the cap"
            )
        self.network.check_spend(per_part * len(parts))  # all or nothing
        timeouts = Timeouts(challenge_window=window) if window else None
        posted = []
        for n, part in enumerate(parts):
            bundle = TaskBundle(
                kind="chat",
                messages=(ChatMessage(role="user", content=part.prompt),),
                params=GenerationParams(max_tokens=max_tokens),
                model=ModelRequirement(sha256=sha),
                requester_did=self.network.identity.did,
            )
            job = _Posted(part=part, trust=trust, rescore=verifiable and trust != "low")
            if single or restricted:
                # Sensitive data and excluded providers need assigned tasks: three of them
                # when the trust level asks for three opinions.
                count = 1 if single else _REDUNDANT
                for k in range(count):
                    who = same[(n + k) % len(same)]
                    job.handles.append(
                        self.network.delegate(
                            bundle,
                            model=bundle.model,
                            bounty_per_replica=bounty,
                            timeouts=timeouts,
                            assignee=who.address,
                        )
                    )
            else:
                job.handles.append(
                    self.network.delegate(
                        bundle,
                        model=bundle.model,
                        bounty_per_replica=bounty,
                        replicas=_REDUNDANT,
                        quorum=_QUORUM,
                        timeouts=timeouts,
                    )
                )
            job.escrow = per_part
            posted.append(job)
        return posted

    def collect(self, job: _Posted, *, window: int) -> Delegation:
        """Wait for a posted part (to its reveals when it has a challenge window)."""
        try:
            if window:
                for handle in job.handles:
                    await_reveals(self.network, handle, self.network.timeout_s)
                reveals = [r for h in job.handles for r in revealed_results(self.network, h)]
                return self._from_reveals(job, reveals)
            done = [(h, self.network.wait(h)) for h in job.handles]
            return self._from_receipts(job, done)
        except Exception as err:  # one part's trouble is reported, the others go on
            if not isinstance(err, ChefsplanError):
                log.exception("collecting part %d failed unexpectedly", job.part.index)
            return self._failed(job, failure("delegate_task", err))

    def _failed(self, job: _Posted, why: ToolFailure) -> Delegation:
        return Delegation(
            part=job.part.index,
            prompt=job.part.prompt,
            status="failed",
            task_ids=tuple("0x" + h.task_id.hex() for h in job.handles),
            trust=job.trust,
            escrow_wei=job.escrow,
            error=why.message,
        )

    def _rescore(self, job: _Posted, result_cid: str) -> RescoreReport | None:
        if not job.rescore:
            return None
        try:
            return verify_output(self.network, result_cid)
        except VerificationError as err:
            log.info("re-score of %s failed to run: %s", result_cid, err)
            return None

    def _from_receipts(
        self, job: _Posted, done: list[tuple[TaskHandle, DelegationReceipt]]
    ) -> Delegation:
        receipts = [_task_receipt(h, d, job.trust) for h, d in done]
        votes = Counter(r.output_hash for r in receipts)
        if len(receipts) == 1:
            receipt = receipts[0]
            winners = [c for c in receipt.committers if c.agreed]
            losers = [c.did or c.address for c in receipt.committers if not c.agreed]
            agreed, replicas = receipt.agreed, receipt.replicas
        else:
            best, count = votes.most_common(1)[0]
            if count < _QUORUM:
                return self._failed(
                    job,
                    ToolFailure(
                        tool="delegate_task",
                        error="NoQuorum",
                        message=f"the {len(receipts)} providers gave {len(votes)} different "
                        "outputs; no answer is trustworthy",
                    ),
                )
            receipt = next(r for r in receipts if r.output_hash == best)
            winners = [c for r in receipts if r.output_hash == best for c in r.committers]
            losers = [
                c.did or c.address for r in receipts if r.output_hash != best for c in r.committers
            ]
            agreed, replicas = count, len(receipts)
        verification = self._rescore(job, receipt.result_cid)
        receipt = receipt.model_copy(update={"verification": verification})
        return Delegation(
            part=job.part.index,
            prompt=job.part.prompt,
            status="settled",
            task_ids=tuple(r.task_id for r in receipts),
            trust=job.trust,
            output=receipt.output,
            output_hash=receipt.output_hash,
            result_cid=receipt.result_cid,
            provider_did=winners[0].did if winners else None,
            provider_address=winners[0].address if winners else None,
            agreed=agreed,
            replicas=replicas,
            dissenters=tuple(losers),
            verification=verification,
            receipt=receipt,
            escrow_wei=job.escrow,
        )

    def _from_reveals(self, job: _Posted, reveals: list[_Reveal]) -> Delegation:
        replicas = sum(h.params.replicas for h in job.handles)
        votes = Counter(r.output_hash for r in reveals)
        if not votes:
            return self._failed(
                job,
                ToolFailure(tool="delegate_task", error="NoResult", message="nothing revealed"),
            )
        best, count = votes.most_common(1)[0]
        if replicas > 1 and count < _QUORUM:
            return self._failed(
                job,
                ToolFailure(
                    tool="delegate_task",
                    error="NoQuorum",
                    message=f"{len(votes)} different outputs from {replicas} providers",
                ),
            )
        win = next(r for r in reveals if r.output_hash == best)
        verification = self._rescore(job, win.result_cid)
        return Delegation(
            part=job.part.index,
            prompt=job.part.prompt,
            status="revealed",
            task_ids=tuple("0x" + h.task_id.hex() for h in job.handles),
            trust=job.trust,
            output=win.output,
            output_hash=win.output_hash,
            result_cid=win.result_cid,
            provider_did=win.did,
            provider_address=win.address,
            agreed=count,
            replicas=replicas,
            dissenters=tuple(r.did or r.address for r in reveals if r.output_hash != best),
            verification=verification,
            escrow_wei=job.escrow,
        )


# ---------------------------------------------------------------------------- the agent


class MatchingAgent(WorkflowAgent):
    """Finds providers, ranks them, delegates a plan's parts and reports the results.

    It acts on the latest ``StructuredMessage[Plan]`` it receives (the Copilot's); given plain
    text instead, it treats the text as a request (:func:`parse_request`) and plans it itself.
    Its reply is a ``StructuredMessage[DelegationReport]``, preceded by a tool-call request
    and execution event for each step.

    Args:
        network: The network to delegate on.
        weights: The ranking's weights.
        name: Its name in a team.
    """

    def __init__(
        self,
        network: Network,
        *,
        weights: RankWeights | None = None,
        name: str = "matching",
    ) -> None:
        super().__init__(
            name,
            "Finds and ranks provider nodes, delegates the plan's parts to them (in parallel) "
            "and merges their results.",
            network,
        )
        self._engine = _Engine(network, weights)

    @property
    def policy(self) -> PolicySettings:
        """The app's rules: the network's (``Network.policy``)."""
        return self.network.policy

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (DelegationMessage, TextMessage)

    def _plan_from(self, messages: Sequence[BaseChatMessage]) -> Plan | str | None:
        for message in reversed(messages):
            if isinstance(message, StructuredMessage) and isinstance(message.content, Plan):
                return message.content
        for message in reversed(messages):
            if isinstance(message, TextMessage):
                try:
                    request = parse_request(message.content, self.policy)
                    return build_plan(request, self.policy)
                except ToolError as err:
                    return one_line(str(err))
        return None

    async def _stream(
        self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken
    ) -> AsyncGenerator[StreamItem, None]:
        plan = self._plan_from(messages)
        if not isinstance(plan, Plan):
            text = plan or "no plan or request to delegate; send a Plan or a request"
            yield Response(chat_message=TextMessage(content=text, source=self.name))
            return
        report: DelegationReport | None = None
        async for item in self.delegate(plan):
            if isinstance(item, DelegationReport):
                report = item
            else:
                yield item
        assert report is not None
        yield Response(chat_message=DelegationMessage(content=report, source=self.name))

    async def delegate(self, plan: Plan) -> AsyncGenerator[StreamItem | DelegationReport, None]:
        """Run the plan's Matching steps; yield their events, then the report.

        Ranking and posting run in one worker-thread call (every part is posted before any is
        awaited); each part is then collected in its own.
        """
        request = plan.request
        steps = [s for s in plan.steps if s.agent == "matching"]
        find = next(s for s in steps if s.tool == "find_providers")
        delegate_steps = [s for s in steps if s.tool == "delegate_task"]
        by_part = {p.index: p for p in plan.parts}
        parts = [by_part[s.arguments["part"]] for s in delegate_steps]
        event = self.call_event(find.tool, find.arguments)
        calls = [self.call_event(s.tool, s.arguments) for s in delegate_steps]
        yield event
        for call in calls:
            yield call
        ranked, posted = await asyncio.to_thread(self._rank_and_post, plan, parts)
        yield self.result_event(event, ranked)
        if not isinstance(posted, _PostedResult):
            failed = posted or ranked
            for call in calls:
                yield self.result_event(call, failed)
            why = failed.text() if isinstance(failed, ToolFailure) else "not posted"
            yield self._report(plan, [self._unposted(p, why, request.trust) for p in plan.parts])
            return
        delegations = []
        for call, job in zip(calls, posted.jobs, strict=True):
            got = await self.run_step(
                "delegate_task", functools.partial(self._collect, job, plan.challenge_window_s)
            )
            delegation = (
                got.delegation
                if isinstance(got, _Collected)
                else self._unposted(job.part, got.text(), request.trust)
            )
            delegations.append(delegation)
            yield self.result_event(call, delegation.text())
        yield self._report(plan, delegations)

    def _rank_and_post(self, plan: Plan, parts: list[Part]) -> tuple[ToolResult, ToolResult | None]:
        request = plan.request
        ranked = self.call_safely(
            "find_providers",
            functools.partial(
                self._engine.rank,
                model=request.model,
                sensitive=request.sensitive,
                exclude=plan.exclude,
            ),
        )
        if not isinstance(ranked, RankedProviders):
            return ranked, None

        def post() -> _PostedResult:
            return _PostedResult(
                jobs=self._engine.post(
                    parts,
                    ranked.ranked,
                    trust=request.trust,
                    max_tokens=request.max_tokens,
                    window=plan.challenge_window_s,
                    sensitive=request.sensitive,
                    restricted=request.sensitive or bool(plan.exclude),
                )
            )

        return ranked, self.call_safely("delegate_task", post)

    def _collect(self, job: _Posted, window: int) -> _Collected:
        return _Collected(delegation=self._engine.collect(job, window=window))

    @staticmethod
    def _unposted(part: Part, why: str, trust: str) -> Delegation:
        return Delegation(
            part=part.index, prompt=part.prompt, status="failed", trust=trust, error=why
        )

    @staticmethod
    def _report(plan: Plan, delegations: list[Delegation]) -> DelegationReport:
        good = [d for d in delegations if d.status != "failed"]
        return DelegationReport(
            attempt=plan.attempt,
            delegations=tuple(delegations),
            merged="\n\n".join(d.output for d in good),
            providers=len({d.provider_address for d in good}),
        )


class _PostedResult(ToolResult):
    """Internal: the posted jobs, passed through the safe path."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    jobs: list[_Posted]

    def text(self) -> str:
        return f"{len(self.jobs)} part(s) posted"


class _Collected(ToolResult):
    model_config = ConfigDict(frozen=True)

    delegation: Delegation

    def text(self) -> str:
        return self.delegation.text()
