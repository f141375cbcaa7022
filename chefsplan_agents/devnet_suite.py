"""The devnet adversarial suite: honest and cheating provider nodes on one devnet, a requester
that verifies as the network's policy says, challenges decided by the nodes' own panels.

::

    with open_backend(LLMSettings(model="tiny-random", n_threads=1)) as cheaper:
        report = run_devnet_suite(model="tiny", wrong_model=cheaper)
    assert not report.false_positives and report.undetected_modes() == []

Where :func:`~chefsplan_agents.verify.run_adversarial_suite` judges forged results off chain,
this suite runs the whole protocol: every node registers and stakes, every task is posted
through :meth:`Network.delegate <chefsplan_agents.network.Network.delegate>` with a challenge
window, claimed, committed and revealed on chain. The requester checks each revealed result as
:attr:`Network.verification <chefsplan_agents.network.Network.verification>` plans it (new or
slashed providers re-scored in full, established ones by a secret draw, redundant tasks in
full); a failed check publishes :class:`~chefsplan_agents.verify.ChallengeEvidence` and
challenges the task. Nothing else is driven by hand: :meth:`Devnet.step` ticks the nodes, and
three of them, drawn by the market, re-score the task and vote. An upheld challenge slashes the
cheaters' bonds and registry stake (they drop out, inactive); an outvoted minority loses its
bond; a claimed replica never revealed is slashed as a no-show.

The tasks come in batches: one task assigned to each active provider (the tools' round robin,
at least ``singles_per_batch``), and one redundant task (three replicas, quorum two) whose
claimants the suite picks by the order the devnet ticks its nodes (the quickest to claim): the
colluding pair with one honest node first, then each cheater in turn against two honest
nodes, then honest nodes only (one at another thread count).

Everything reported comes from the chain's events: which node claimed which task, the
registry's reputation updates (a bond slashed) and stake slashes, tied to the task whose
settlement or challenge caused them.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from chefsplan_agents.bundles import (
    DEFAULT_MAX_BUNDLE_BYTES,
    ChatMessage,
    GenerationParams,
    ModelRequirement,
    ResultBundle,
    TaskBundle,
    decode_result_bundle,
    encode_bundle,
    sign_bundle,
)
from chefsplan_agents.config import LLMSettings
from chefsplan_agents.devnet import DEVNET_MODELS, Devnet
from chefsplan_agents.errors import (
    ChefsplanError,
    ConfigError,
    MarketError,
    TxReverted,
    VerificationError,
)
from chefsplan_agents.identity import Identity
from chefsplan_agents.llm import LLMBackend, open_backend
from chefsplan_agents.market import ChallengeState, TaskHandle, TaskResult, Timeouts
from chefsplan_agents.network import Network
from chefsplan_agents.node import ProviderNode
from chefsplan_agents.storage import compute_cid
from chefsplan_agents.testing import (
    Adaptive,
    ChangeToken,
    Cheat,
    Copycat,
    Lazy,
    Pad,
    SampledWhenGreedy,
    Silent,
    Tamper,
    TextSwap,
    Truncate,
    WrongModel,
    honest_result,
)
from chefsplan_agents.verify import (
    ChallengeEvidence,
    Checks,
    ProviderStats,
    RescoreVerdict,
    RevealedResult,
    VerificationPolicy,
    judge_outcome,
    publish_evidence,
    read_task,
)

__all__ = [
    "HONEST",
    "DevnetSuiteReport",
    "ModeStats",
    "NodeReport",
    "SuiteRole",
    "default_roles",
    "run_devnet_suite",
]

log = logging.getLogger(__name__)

#: The mode of an honest node.
HONEST = "honest"

_PROMPTS = (
    "Plan a vegetarian dinner for four",
    "List three soups for winter",
    "Suggest a dessert without nuts",
    "Write a shopping list for pancakes",
    "Name a quick lunch for a picnic",
    "Describe a menu for a child's party",
    "Give a gluten free breakfast idea",
    "Pair a wine with roast chicken",
)
_REPLICAS, _QUORUM = 3, 2
# A step loop that runs this long without the awaited change is stuck, not slow.
_MAX_STEPS = 400


@dataclass(frozen=True)
class SuiteRole:
    """One node of the suite.

    Attributes:
        name: Its name in the report (``honest-1-thread``, ``lazy``, ``colluder-a``, ...).
        cheat: How it cheats (``None``: honest).
        n_threads: llama.cpp threads it runs at.
        colluder: One of the colluding pair: the first redundant task seats them together.
    """

    name: str
    cheat: Cheat | None = None
    n_threads: int = 1
    colluder: bool = False

    @property
    def mode(self) -> str:
        """``honest``, ``colluding``, or its cheat's name."""
        if self.cheat is None:
            return HONEST
        return "colluding" if self.colluder else self.cheat.name

    def cheats_on(self, bundle_cid: str) -> bool:
        """Whether this node cheats on the task with this bundle CID."""
        if self.cheat is None:
            return False
        if isinstance(self.cheat, Adaptive):
            return self.cheat.cheats_on(bundle_cid)
        return True


def default_roles(
    wrong_model: LLMBackend, copied: ResultBundle, *, hot_temperature: float = 1.0
) -> list[SuiteRole]:
    """Sixteen nodes: three honest (one at two threads) and every cheating mode.

    Args:
        wrong_model: The cheaper model the ``wrong-model`` node runs instead of the pinned one.
        copied: Another task's honest result the ``copycat`` node re-signs as its own.
        hot_temperature: The ``sampled-when-greedy`` node's temperature (a scripted model
            needs more than 1 to leave its one answer).
    """
    collude = "The answer is no."
    return [
        SuiteRole("honest-1-thread"),
        SuiteRole("honest-2-threads", n_threads=2),
        SuiteRole("honest-1-thread-b"),
        SuiteRole("lazy", Lazy()),
        SuiteRole("wrong-model", WrongModel(wrong_model)),
        SuiteRole("copycat", Copycat(copied)),
        SuiteRole("tamper", Tamper(edit=lambda prompt: prompt + "C")),
        SuiteRole("text-swap", TextSwap()),
        SuiteRole("truncate", Truncate()),
        SuiteRole("pad", Pad()),
        SuiteRole("sampled-when-greedy", SampledWhenGreedy(temperature=hot_temperature)),
        SuiteRole("change-token", ChangeToken()),
        SuiteRole("adaptive-50%", Adaptive(TextSwap(), 0.5, salt=b"devnet-suite")),
        SuiteRole("silent", Silent()),
        SuiteRole("colluder-a", TextSwap(collude), colluder=True),
        SuiteRole("colluder-b", TextSwap(collude), colluder=True),
    ]


@dataclass
class NodeReport:
    """One node's record over the run, from the chain's events.

    Attributes:
        name: Its role's name.
        mode: ``honest`` or how it cheats.
        address: Its account.
        n_threads: Its llama.cpp threads.
        tasks: Replicas it claimed.
        cheating: Of those, the ones it cheated on.
        detected: Cheating tasks caught: a failed check of its result, or a slash on the task.
        failed_checks: Requester checks its results failed (on honest nodes: false positives).
        bond_slashes: Tasks whose settlement slashed its bond (outvoted, no-show, overturned).
        stake_slashed_wei: Registry stake taken from it (upheld challenges, missed votes).
        panel_slashes: Challenges it sat on and did not vote in (slashed as a panelist).
        outvoted: Redundant tasks whose accepted majority it was not part of (outvoted, or a
            no-show): its bond slashed by the quorum alone.
        first_slash: Cheating tasks it got through up to and including the first one that
            cost it a slash (``None``: never slashed).
        active: Whether it may still take tasks at the end.
        slashed_tasks: Its tasks that cost it a slash, by ``0x`` task id.
    """

    name: str
    mode: str
    address: str
    n_threads: int
    tasks: int = 0
    cheating: int = 0
    detected: int = 0
    failed_checks: int = 0
    bond_slashes: int = 0
    stake_slashed_wei: int = 0
    panel_slashes: int = 0
    outvoted: int = 0
    first_slash: int | None = None
    active: bool = True
    slashed_tasks: set[str] = field(default_factory=set)

    @property
    def honest(self) -> bool:
        """Whether it answers honestly."""
        return self.mode == HONEST

    @property
    def slashed(self) -> bool:
        """Whether it lost a bond or stake."""
        return bool(self.bond_slashes or self.stake_slashed_wei or self.panel_slashes)


@dataclass
class ModeStats:
    """One cheating mode over its nodes.

    Attributes:
        nodes: Nodes in this mode.
        tasks: Replicas they claimed.
        cheating: Cheating tasks.
        detected: Cheating tasks caught.
        slashed_nodes: Nodes of this mode that were slashed.
        worst_first_slash: The most cheating tasks any of them got through up to its first
            slash (``None``: one was never slashed).
    """

    nodes: int = 0
    tasks: int = 0
    cheating: int = 0
    detected: int = 0
    slashed_nodes: int = 0
    worst_first_slash: int | None = 0


@dataclass
class DevnetSuiteReport:
    """What the devnet suite measured.

    Attributes:
        model: The devnet's model.
        nodes: Per node, in devnet order.
        tasks: Tasks posted.
        redundant_tasks: Of which redundant (three replicas).
        checks: Re-scores the requester ran (its policy's draws).
        challenges: Challenges sent.
        upheld: Challenges the panels upheld.
        rejected: Challenges the panels rejected or let lapse.
        overturned_redundant: Redundant tasks whose majority a panel overturned (colluders).
        challenge_failures: Challenges that could not be sent, one line each.
        market_held_wei: Ether the market contract holds at the end.
        market_owed_wei: What the market owes (every account's balance there).
        registry_held_wei: Ether the registry holds at the end.
        registry_staked_wei: The stakes of every registered provider.
        registry_staked_at_start_wei: The nodes' stakes when they registered.
        stake_slashed_wei: Registry stake slashed over the run.
        wall_s: Wall-clock seconds, devnet start-up included.
    """

    model: str
    nodes: list[NodeReport]
    tasks: int = 0
    redundant_tasks: int = 0
    checks: int = 0
    challenges: int = 0
    upheld: int = 0
    rejected: int = 0
    overturned_redundant: int = 0
    challenge_failures: list[str] = field(default_factory=list)
    market_held_wei: int = 0
    market_owed_wei: int = 0
    registry_held_wei: int = 0
    registry_staked_wei: int = 0
    registry_staked_at_start_wei: int = 0
    stake_slashed_wei: int = 0
    wall_s: float = 0.0

    @property
    def honest(self) -> list[NodeReport]:
        """The honest nodes."""
        return [n for n in self.nodes if n.honest]

    @property
    def cheaters(self) -> list[NodeReport]:
        """The cheating nodes."""
        return [n for n in self.nodes if not n.honest]

    @property
    def false_positives(self) -> list[str]:
        """One line per honest node that failed a check or was slashed (should be empty)."""
        out = []
        for n in self.honest:
            if n.failed_checks or n.slashed:
                out.append(
                    f"{n.name}: {n.failed_checks} failed checks, {n.bond_slashes} bonds, "
                    f"{n.stake_slashed_wei} wei of stake, {n.panel_slashes} panel slashes"
                )
        return out

    @property
    def money_accounted(self) -> bool:
        """Every wei the contracts hold is owed to someone: market balances, registry stakes."""
        return (
            self.market_held_wei == self.market_owed_wei
            and self.registry_held_wei == self.registry_staked_wei
        )

    def modes(self) -> dict[str, ModeStats]:
        """Per cheating mode, its nodes summed."""
        out: dict[str, ModeStats] = {}
        for n in self.cheaters:
            m = out.setdefault(n.mode, ModeStats())
            m.nodes += 1
            m.tasks += n.tasks
            m.cheating += n.cheating
            m.detected += n.detected
            m.slashed_nodes += n.slashed
            if n.first_slash is None or m.worst_first_slash is None:
                m.worst_first_slash = None
            else:
                m.worst_first_slash = max(m.worst_first_slash, n.first_slash)
        return out

    def undetected_modes(self) -> list[str]:
        """Cheating modes never detected (or that never got to cheat)."""
        return [name for name, m in self.modes().items() if m.detected == 0]

    def table(self) -> str:
        """The per-node numbers as a Markdown table."""
        rows = [
            "| node | mode | threads | tasks | cheating | detected | slashed | "
            "cheating tasks to first slash | active at end |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for n in self.nodes:
            how = []
            if n.bond_slashes:
                how.append(f"{n.bond_slashes} bond")
            if n.stake_slashed_wei:
                how.append("stake")
            if n.panel_slashes:
                how.append(f"{n.panel_slashes} panel")
            rows.append(
                f"| {n.name} | {n.mode} | {n.n_threads} | {n.tasks} | {n.cheating} | "
                f"{n.detected} | {', '.join(how) or 'no'} | "
                f"{'-' if n.first_slash is None else n.first_slash} | "
                f"{'yes' if n.active else 'no'} |"
            )
        return "\n".join(rows)


@dataclass
class _Posted:
    """A task the suite posted, and what the requester did about it."""

    index: int
    handle: TaskHandle
    checks: Checks
    redundant: bool
    checked: bool = False  # its reveals closed and the requester decided
    failed: set[str] = field(default_factory=set)  # providers whose result failed the check
    challenged: bool = False

    @property
    def task_id(self) -> str:
        return "0x" + self.handle.task_id.hex()


def _copied_result(verifier: LLMBackend) -> ResultBundle:
    """An honest result of a task nobody posts: what the copycat re-signs."""
    requester, node = Identity.generate(), Identity.generate()
    task = sign_bundle(
        TaskBundle(
            kind="chat",
            messages=(ChatMessage(role="user", content="An earlier question"),),
            params=GenerationParams(max_tokens=24),
            model=ModelRequirement(sha256=verifier.info.sha256),
            requester_did=requester.did,
        ),
        requester,
    )
    return honest_result(task, compute_cid(encode_bundle(task)), verifier, node)


class _Run:
    """One run of the suite over a started devnet."""

    def __init__(
        self,
        devnet: Devnet,
        roles: Sequence[SuiteRole],
        verifier: LLMBackend,
        *,
        max_tokens: int,
        challenge_window: int,
    ) -> None:
        self.devnet = devnet
        self.network: Network = devnet.network
        self.network.verifier = verifier
        self.roles = {node.address: role for node, role in zip(devnet.nodes, roles, strict=True)}
        self.order = list(devnet.nodes)
        self.verifier = verifier
        self.max_tokens = max_tokens
        self.timeouts = Timeouts(challenge_window=challenge_window)
        self.posted: list[_Posted] = []
        self.checks = 0
        self.challenges = 0
        self.challenge_failures: list[str] = []
        self._redundant_round = 0
        self._claims_close = 0
        self.staked_at_start = sum(devnet.registry.stake_of(n.address) for n in devnet.nodes)

    # ------------------------------------------------------------------ posting

    def _bundle(self) -> TaskBundle:
        i = len(self.posted)
        return TaskBundle(
            kind="chat",
            messages=(
                ChatMessage(role="user", content=f"{_PROMPTS[i % len(_PROMPTS)]} (request {i})"),
            ),
            params=GenerationParams(max_tokens=self.max_tokens),
            model=ModelRequirement(sha256=self.devnet.model_sha256),
            requester_did=self.network.identity.did,
        )

    def _post(self, checks: Checks, *, replicas: int = 1, assignee: str | None = None) -> None:
        bundle = self._bundle()
        # Every task of a batch closes its claims at the same time, so all its deadlines
        # fall together: the devnet moves its clock once per deadline, not once per task.
        left = self._claims_close - self.network.chain.pending_timestamp()
        handle = self.network.delegate(
            bundle,
            model=bundle.model,
            # What the tools pay: the offers' price (0 on a devnet) for max_tokens, 1 wei least.
            bounty_per_replica=1,
            replicas=replicas,
            quorum=_QUORUM if replicas > 1 else 1,
            assignee=assignee,
            timeouts=replace(self.timeouts, claim_window=left),
        )
        self.posted.append(_Posted(len(self.posted), handle, checks, replicas > 1))

    def _redundant_seats(self, active: set[str]) -> list[list[ProviderNode]]:
        """Who claims each of this batch's redundant tasks, quickest first.

        The first batch seats the colluding pair with an honest node, and every other cheater
        against two honest nodes; later batches alternate one cheater still active against two
        honest nodes with honest nodes only (the one at another thread count among them).
        """
        nodes = self.devnet.nodes
        honest = [n for n in nodes if self.roles[n.address].cheat is None]
        batch = self._redundant_round
        self._redundant_round += 1
        if len(honest) < _REPLICAS:
            return []
        # Two honest nodes at one thread count vote together against a cheater; outputs at
        # another thread count may drift on a real model, and a minority of one honest node
        # would be outvoted by its peers. The third sits with the colluders (outvoted, then
        # vindicated by the challenge) and in the honest-only tasks.
        threads = Counter(self.roles[n.address].n_threads for n in honest)
        common = threads.most_common(1)[0][0]
        pair = [n for n in honest if self.roles[n.address].n_threads == common][:2]
        if len(pair) < 2:
            pair = honest[:2]
        third = next(n for n in honest if n not in pair)
        colluders = [n for n in nodes if self.roles[n.address].colluder and n.address in active]
        # A copycat of another task's result would answer like the honest nodes where the
        # model says the same to every chat (the scripted one): it would sit in the majority.
        minority = [
            n
            for n in nodes
            if n.address in active
            and self.roles[n.address].cheat is not None
            and not self.roles[n.address].colluder
            and not isinstance(self.roles[n.address].cheat, Copycat)
        ]
        if batch == 0:
            seats = [[*colluders[:2], third]] if len(colluders) >= 2 else []
            return seats + [[*pair, x] for x in minority]
        if batch % 2 and minority:
            return [[*pair, minority[(batch // 2) % len(minority)]]]
        return [[pair[0], third, pair[1]]]

    def post_batch(self, singles: int) -> None:
        """One task assigned to each active provider (round robin, at least ``singles``), then
        the batch's redundant tasks, each claimed in the devnet step after it is posted by
        the nodes that tick first."""
        self._claims_close = self.network.chain.pending_timestamp() + self.timeouts.claim_window
        found = self.network.providers(model_sha256=self.devnet.model_sha256, limit=50)
        policy = self.network.verification
        mine = {n.address for n in self.devnet.nodes}
        ranked = [p for p in found if p.address in mine]
        if not ranked:
            raise ConfigError("no active provider left on the devnet")
        offset = len(self.posted)
        for k in range(max(singles, len(ranked))):
            provider = ranked[(offset + k) % len(ranked)]
            checks = policy.plan(ProviderStats.of(provider), "normal", 1)
            self._post(checks, assignee=provider.address)
        high = Checks("full", 1.0, _REPLICAS, _QUORUM, "trust=high: re-scored in full")
        for seats in self._redundant_seats({p.address for p in ranked}):
            self._post(high, replicas=_REPLICAS)
            rest = [n for n in self.order if n not in seats]
            self.devnet.nodes[:] = [*seats, *rest]
            self.devnet.step()
        self.devnet.nodes[:] = self.order

    # ------------------------------------------------------------------ checking

    def _reveals_closed(self, task: _Posted) -> bool:
        state = self.network.market.task_state(task.handle.task_id)
        if not state.open:
            return True
        p = task.handle.params
        return state.revealed >= p.replicas or self.network.chain.block_timestamp() > (
            p.reveal_deadline
        )

    def _result(self, cid: str) -> ResultBundle | None:
        try:
            data = self.network.store.get(cid, max_bytes=DEFAULT_MAX_BUNDLE_BYTES)
            return decode_result_bundle(data, max_bytes=DEFAULT_MAX_BUNDLE_BYTES)
        except ChefsplanError:
            return None

    def check(self, task: _Posted) -> None:
        """The requester's check of a task whose reveals closed; a failure is challenged."""
        task.checked = True
        market = self.network.market
        on_chain = read_task(market, task.handle.task_id, from_block=task.handle.posted_block)
        if on_chain is None or on_chain.winning_hash is None:
            return  # nothing won (a silent node's task): nothing to accept or challenge
        winner = next(r for r in on_chain.reveals if r.output_hash == on_chain.winning_hash)
        result = self._result(winner.result_cid)
        mode = "full" if result is None else self.network.verification.selects(task.checks, result)
        if mode is None:
            return  # not drawn this time
        self.checks += 1
        judgement = judge_outcome(self.verifier, self.network.store, on_chain, mode=mode)
        task.failed = {a for a, v in judgement.verdicts.items() if not v.passed}
        if not judgement.overturn:
            return
        if judgement.failed is not None:
            task.failed.add(judgement.failed[0].provider)
        self._challenge(task, judgement.reason, judgement.failed)

    def _challenge(
        self,
        task: _Posted,
        reason: str,
        failed: tuple[RevealedResult, RescoreVerdict | None] | None,
    ) -> None:
        network = self.network
        handle = task.handle
        offender, verdict = failed if failed is not None else (None, None)
        evidence = ChallengeEvidence.about(
            chain_id=network.chain.chain_id,
            market=network.market.address,
            task_id=task.task_id,
            bundle_cid=handle.bundle_cid,
            provider=offender.provider if offender else None,
            result_cid=offender.result_cid if offender else None,
            output_hash="0x" + offender.output_hash.hex() if offender else None,
            # An unreadable result fails before any re-score check runs.
            check=verdict.check if verdict and verdict.check else "result",
            reason=reason,
            model_sha256=handle.bundle.model.sha256,
            mode=verdict.mode if verdict else "",
            max_gap=verdict.max_gap if verdict else 0.0,
            max_drift=verdict.max_drift if verdict else 0.0,
        )
        try:
            cid = publish_evidence(network.store, evidence)
            network.market.challenge(handle.params, cid, sender=network.address)
        except (TxReverted, VerificationError) as err:
            self.challenge_failures.append(f"{task.task_id}: {err}")
            log.warning("could not challenge task %s: %s", task.task_id, err)
            return
        task.challenged = True
        self.challenges += 1

    # ------------------------------------------------------------------ driving

    def run_batch(self, start: int) -> None:
        """Drive the batch posted from ``start``: check each task as its reveals close (inside
        its challenge window), then let every task settle."""
        batch = self.posted[start:]
        for _ in range(_MAX_STEPS):
            waiting = [t for t in batch if not t.checked]
            if not waiting:
                break
            for task in waiting:
                if self._reveals_closed(task):
                    self.check(task)
            if any(not t.checked for t in batch):
                self.devnet.step()
        else:
            raise MarketError(f"tasks {start}..{len(self.posted)} never closed their reveals")
        for task in batch:
            if not self.network.market.task_state(task.handle.task_id).open:
                assert self.network.driver is not None  # a devnet's network
                self.network.driver.settled(task.handle)  # the nodes settled it already
                continue
            try:
                self.network.wait(task.handle)
            except (MarketError, VerificationError) as err:
                # Overturned, no quorum, or a forged result that was not drawn for a check.
                log.info("task %s: %s", task.task_id, err)


def _hex_id(raw: object) -> str:
    return "0x" + bytes(raw).hex() if isinstance(raw, bytes) else str(raw)


def _report(run: _Run, roles: Sequence[SuiteRole], model: str) -> DevnetSuiteReport:
    devnet, market, registry = run.devnet, run.network.market, run.devnet.registry
    reports = {
        node.address: NodeReport(
            name=role.name,
            mode=role.mode,
            address=node.address,
            n_threads=role.n_threads,
            active=registry.is_active(node.address),
        )
        for node, role in zip(devnet.nodes, roles, strict=True)
    }
    ours = {t.task_id: t for t in run.posted}
    # Which transaction settled or decided which task.
    settled_by: dict[str, str] = {}
    results: dict[str, TaskResult] = {}
    for event in market.events("TaskFinalized"):
        settled_by[event.tx_hash] = _hex_id(event.args["taskId"])
        results[_hex_id(event.args["taskId"])] = TaskResult(int(event.args["result"]))
    resolved_by: dict[str, str] = {}
    for event in market.events("ChallengeResolved"):
        resolved_by[event.tx_hash] = _hex_id(event.args["taskId"])
    claims: dict[str, list[str]] = {}
    for event in market.events("ReplicaClaimed"):
        claims.setdefault(_hex_id(event.args["taskId"]), []).append(str(event.args["provider"]))
    upheld = rejected = 0
    for event in market.events("ChallengeResolved"):
        if _hex_id(event.args["taskId"]) in ours:
            if int(event.args["outcome"]) == ChallengeState.UPHELD:
                upheld += 1
            else:
                rejected += 1
    # A bond slashed: the registry's ``slashed`` counter went up in a settlement.
    last_slashed: dict[str, int] = {}
    for event in registry.events("ReputationUpdated", from_block=devnet.deployment.deployed_at):
        who = str(event.args["provider"])
        count = int(event.args["slashed"])
        grew = count > last_slashed.get(who, 0)
        last_slashed[who] = count
        if not grew or who not in reports:
            continue
        if event.tx_hash in settled_by:
            reports[who].bond_slashes += 1
            reports[who].slashed_tasks.add(settled_by[event.tx_hash])
        elif event.tx_hash in resolved_by:
            reports[who].panel_slashes += 1
    stake_slashed = 0
    for event in registry.events("StakeSlashed", from_block=devnet.deployment.deployed_at):
        who = str(event.args["provider"])
        amount = int(event.args["amount"])
        stake_slashed += amount
        if who in reports:
            reports[who].stake_slashed_wei += amount
            task_id = settled_by.get(event.tx_hash) or resolved_by.get(event.tx_hash)
            if task_id is not None and event.tx_hash in settled_by:
                reports[who].slashed_tasks.add(task_id)
    for event in market.events("ReplicaReopened"):
        who = str(event.args["provider"])
        if who in reports:
            reports[who].bond_slashes += 1
            reports[who].slashed_tasks.add(_hex_id(event.args["taskId"]))
    for task in run.posted:
        for who in claims.get(task.task_id, []):
            node = reports.get(who)
            if node is None:
                continue
            role = run.roles[who]
            node.tasks += 1
            cheated = role.cheats_on(task.handle.bundle_cid)
            node.failed_checks += who in task.failed
            if cheated:
                node.cheating += 1
                if who in task.failed or task.task_id in node.slashed_tasks:
                    node.detected += 1
            if (
                task.redundant
                and task.task_id in node.slashed_tasks
                and results.get(task.task_id) is TaskResult.ACCEPTED
            ):
                node.outvoted += 1
            if node.first_slash is None and task.task_id in node.slashed_tasks:
                node.first_slash = node.cheating
    accounts = {run.network.address, *reports}
    accounts |= {str(e.args["challenger"]) for e in market.events("TaskChallenged")}
    return DevnetSuiteReport(
        model=model,
        nodes=list(reports.values()),
        tasks=len(run.posted),
        redundant_tasks=sum(t.redundant for t in run.posted),
        checks=run.checks,
        challenges=run.challenges,
        upheld=upheld,
        rejected=rejected,
        overturned_redundant=sum(
            t.redundant and results.get(t.task_id) is TaskResult.OVERTURNED for t in run.posted
        ),
        challenge_failures=run.challenge_failures,
        market_held_wei=devnet.chain.balance(market.address),
        market_owed_wei=sum(market.balance_of(a) for a in accounts),
        registry_held_wei=devnet.chain.balance(registry.address),
        registry_staked_wei=sum(p.stake for p in registry.providers()),
        registry_staked_at_start_wei=run.staked_at_start,
        stake_slashed_wei=stake_slashed,
    )


def run_devnet_suite(
    model: str = "tiny",
    *,
    wrong_model: LLMBackend,
    tasks: int = 200,
    singles_per_batch: int = 12,
    roles: Sequence[SuiteRole] | None = None,
    policy: VerificationPolicy | None = None,
    max_tokens: int = 24,
    challenge_window: int = 600,
    hot_temperature: float = 1.0,
    n_ctx: int = 512,
) -> DevnetSuiteReport:
    """Run honest and cheating nodes on one devnet until ``tasks`` tasks have settled.

    Args:
        model: The devnet's model (``tiny``, ``smollm2`` or a ``.gguf`` path).
        wrong_model: The cheaper model the ``wrong-model`` node runs (the caller closes it).
        tasks: Tasks to post at least (whole batches).
        singles_per_batch: One-replica tasks per batch at least (one per active provider
            when more are active).
        roles: The nodes (default :func:`default_roles`; at most 16).
        policy: The requester's verification policy (default: the network's, with a secret
            salt).
        max_tokens: Tokens per task.
        challenge_window: Seconds each task stays open for a challenge after its reveals.
        hot_temperature: The ``sampled-when-greedy`` node's temperature (default roles).
        n_ctx: Context length of every model.

    Returns:
        The report, read from the chain's events once every task has settled.

    Raises:
        ConfigError: Bad roles or model; every provider dropped out.
        MarketError: A batch never closed its reveals (the devnet is stuck).
    """
    started = time.monotonic()
    spec = DEVNET_MODELS.get(model, model)
    # The nodes flush their task records to disk before every transaction: on a memory-backed
    # folder that costs nothing, and the suite measures verification, not the disk.
    shm = Path("/dev/shm")
    with (
        tempfile.TemporaryDirectory(
            prefix="chefsplan-suite-", dir=shm if shm.is_dir() else None
        ) as workdir,
        open_backend(LLMSettings(model=spec, n_threads=1, n_ctx=n_ctx)) as verifier,
    ):
        if roles is None:
            roles = default_roles(
                wrong_model, _copied_result(verifier), hot_temperature=hot_temperature
            )
        cheaters = {i: r.cheat for i, r in enumerate(roles) if r.cheat is not None}
        with Devnet.create(
            nodes=len(roles),
            model=model,
            share_model=True,
            n_threads=[r.n_threads for r in roles],
            n_ctx=n_ctx,
            cheaters=cheaters,
            workdir=workdir,
        ) as devnet:
            if devnet.model_sha256 != verifier.info.sha256:
                raise ConfigError("the verifier does not run the devnet's model")
            run = _Run(
                devnet,
                roles,
                verifier,
                max_tokens=max_tokens,
                challenge_window=challenge_window,
            )
            if policy is not None:
                run.network.verification = policy
            while len(run.posted) < tasks:
                start = len(run.posted)
                run.post_batch(singles_per_batch)
                run.run_batch(start)
            devnet.drain()
            report = _report(run, roles, model)
    report.wall_s = time.monotonic() - started
    return report
