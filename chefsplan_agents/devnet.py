"""A whole network in one process: chain, contracts, content store, provider nodes, requester.

::

    with Devnet.create(nodes=3, model="tiny") as net:
        receipt = net.run_task("Say hello", replicas=3, quorum=2)
        print(receipt.output, receipt.result_cid)

Everything is real except the distance: the in-process EVM runs the compiled contracts, the
content store computes the same CIDs an IPFS daemon would, every node has its own DID, EVM
account, stake, state folder and (by default) its own copy of the model, and the requester's
bundle and the winning result travel by CID. Nodes are driven by :meth:`Devnet.step` (one
``tick`` each, in order) instead of threads, so a run is deterministic; when no node has
anything to do the devnet moves the chain clock to the next deadline. Every node sits on the
challenge panels it is drawn for (a :class:`~chefsplan_agents.verify.Panelist` duty), and
watchers added with :meth:`Devnet.add_watcher` step with the nodes, so stepping alone drives a
challenge from ``challenge`` to settlement.

With ``share_model=True`` the nodes share one loaded model: faster to start, but then the
replicas are not independent executions of independent copies of the weights.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Self

from chefsplan_agents.bundles import GenerationParams, ModelRequirement, TaskBundle, check_tags
from chefsplan_agents.chain import Deployment, EmbeddedChain, deploy_contracts, open_chain
from chefsplan_agents.config import ChainSettings, LLMSettings, StorageSettings
from chefsplan_agents.errors import ChefsplanError, ConfigError
from chefsplan_agents.identity import Identity
from chefsplan_agents.llm import LLMBackend, is_stub_spec, open_backend
from chefsplan_agents.market import ChallengeState, MarketClient
from chefsplan_agents.market._requester import (
    DelegationProgress,
    DelegationReceipt,
    Requester,
    TaskHandle,
    Timeouts,
)
from chefsplan_agents.network import InProcessDriver, Network
from chefsplan_agents.node import NodeDuty, NodePolicy, ProviderNode
from chefsplan_agents.registry import RegistryClient
from chefsplan_agents.storage import ContentStore, open_store
from chefsplan_agents.verify import LAST_CALL_S, Panelist

if TYPE_CHECKING:
    from chefsplan_agents.testing import Cheat

__all__ = ["DEVNET_MODELS", "Devnet", "StageCallback"]

log = logging.getLogger(__name__)

#: Model names the devnet accepts (``smollm2`` is short for ``smollm2-135m``); a ``.gguf`` path
#: works too.
DEVNET_MODELS: dict[str, str] = {
    "tiny": "tiny",
    "smollm2": "smollm2-135m",
    "smollm2-135m": "smollm2-135m",
}

#: ``callback(stage, detail)`` for live status while a devnet starts: ``model``, ``chain``,
#: ``register``.
StageCallback = Callable[[str, str], None]

_ETHER = 10**18
_NODE_FUNDS = 100 * _ETHER
_MAX_NODES = 16


def _model_spec(model: str) -> str:
    if model in DEVNET_MODELS:
        return DEVNET_MODELS[model]
    if is_stub_spec(model):
        return model
    if model.endswith(".gguf") or "/" in model:
        return model
    known = ", ".join(sorted(DEVNET_MODELS))
    raise ConfigError(
        f"unknown devnet model {model!r}; use one of: {known}, a .gguf path or stub:SECONDS"
    )


def _node_threads(n_threads: int | Sequence[int], nodes: int) -> list[int]:
    counts = [n_threads] * nodes if isinstance(n_threads, int) else list(n_threads)
    if len(counts) != nodes:
        raise ConfigError(
            f"n_threads lists {len(counts)} thread counts for {nodes} nodes; give one per node, "
            "or one count for all"
        )
    if any(c < 1 for c in counts):
        raise ConfigError(f"thread counts must be at least 1 (got {counts})")
    return counts


class Devnet:
    """A running in-process network; build one with :meth:`create`.

    Attributes:
        chain: The in-process EVM.
        deployment: The deployed contracts.
        registry: The ``AgentRegistry`` client.
        market: The ``TaskMarket`` client.
        store: The content store every party shares (the devnet's "IPFS").
        nodes: The provider nodes, registered and staked.
        requester: A funded requester.
        model_sha256: sha256 of the model every node runs.
    """

    def __init__(
        self,
        *,
        chain: EmbeddedChain,
        deployment: Deployment,
        registry: RegistryClient,
        market: MarketClient,
        store: ContentStore,
        nodes: list[ProviderNode],
        requester: Requester,
        llms: list[LLMBackend],
        workdir: Path,
        own_workdir: bool,
    ) -> None:
        self.chain = chain
        self.deployment = deployment
        self.registry = registry
        self.market = market
        self.store = store
        self.nodes = nodes
        self.requester = requester
        self._llms = llms
        self.workdir = workdir
        self._own_workdir = own_workdir
        self.model_sha256 = llms[0].info.sha256
        self._open: dict[bytes, TaskHandle] = {}
        # Pending challenges seen so far (task id -> voteBy, revealBy) and the block read to.
        self._challenges: dict[bytes, tuple[int, int]] = {}
        self._panel_cursor = deployment.deployed_at - 1
        self.watchers: list[NodeDuty] = []
        self._closed = False

    @classmethod
    def create(
        cls,
        nodes: int = 3,
        model: str = "tiny",
        *,
        store: Literal["memory", "local"] = "memory",
        share_model: bool = False,
        n_threads: int | Sequence[int] = 2,
        n_ctx: int = 2048,
        policy: NodePolicy | None = None,
        workdir: str | Path | None = None,
        on_stage: StageCallback | None = None,
        cheaters: Mapping[int, Cheat] | None = None,
        node_tags: Mapping[str, str] | Sequence[Mapping[str, str]] | None = None,
    ) -> Devnet:
        """Build a network: chain + contracts + store + ``nodes`` registered provider nodes.

        Args:
            nodes: Provider nodes to start (1 to 16).
            model: ``tiny`` (the scripted test model, built on demand), ``smollm2``, a
                ``.gguf`` path, or ``stub:SECONDS`` (a fake model that sleeps per task).
            store: ``memory`` or ``local`` (a blockstore folder in ``workdir``).
            share_model: Load the model once for every node (see the module docs).
            n_threads: llama.cpp threads per node: one count for all, or one per node (honest
                nodes at other thread counts drift a little; verification must tolerate it).
            n_ctx: Context length.
            policy: Every node's policy (default :class:`NodePolicy`).
            workdir: Where node state (and a local store) live; default a temporary folder
                removed by :meth:`close`.
            on_stage: Called as each start-up stage begins.
            cheaters: TESTING ONLY: node index → a dishonest way to answer
                (``chefsplan_agents.testing``). That node registers and offers the devnet's
                model like the others but forges every result (e.g. :class:`WrongModel`: a
                cheaper model's output claimed as the pinned one's). Its backends are the
                caller's to close.
            node_tags: Tags every node states in its signed offer (one mapping), or one
                mapping per node (a sequence of ``nodes`` mappings).

        Raises:
            ConfigError: Bad node count, unknown model, a cheater index out of range, or not
                one tag mapping (or thread count) per node.
            InvalidOfferTags: A tag breaks the rules.
            ModelNotFound: The model is not installed.
        """
        if not 1 <= nodes <= _MAX_NODES:
            raise ConfigError(f"a devnet has 1 to {_MAX_NODES} nodes (got {nodes})")
        cheats = dict(cheaters or {})
        if any(not 0 <= i < nodes for i in cheats):
            raise ConfigError(f"cheater indexes must be 0 to {nodes - 1} (got {sorted(cheats)})")
        spec = _model_spec(model)
        if node_tags is None or isinstance(node_tags, Mapping):
            tags_of = [check_tags(node_tags or {})] * nodes
        else:
            tags_of = [check_tags(t) for t in node_tags]
            if len(tags_of) != nodes:
                raise ConfigError(
                    f"node_tags lists {len(tags_of)} tag sets for {nodes} nodes; give one per "
                    "node, or one mapping for all"
                )
        threads = _node_threads(n_threads, nodes)
        stage = on_stage or (lambda _stage, _detail: None)
        own = workdir is None
        root = Path(tempfile.mkdtemp(prefix="chefsplan-devnet-")) if own else Path(str(workdir))
        root.mkdir(parents=True, exist_ok=True)
        llms: list[LLMBackend] = []
        chain: EmbeddedChain | None = None
        content: ContentStore | None = None
        try:
            stage("model", f"loading {spec}")
            settings = LLMSettings(model=spec, n_threads=threads[0], n_ctx=n_ctx)
            llms.append(open_backend(settings))
            # Every node runs the same file: pin its path and hash so the rest skip resolving.
            if llms[0].info.path is not None:
                settings = settings.model_copy(
                    update={"model": llms[0].info.path, "sha256": llms[0].info.sha256}
                )
            # Shared: one backend per thread count; else one per node.
            by_threads: dict[int, LLMBackend] = {threads[0]: llms[0]}
            node_llms = [llms[0]]
            for count in threads[1:]:
                llm = by_threads.get(count) if share_model else None
                if llm is None:
                    llm = open_backend(settings.model_copy(update={"n_threads": count}))
                    llms.append(llm)
                    by_threads[count] = llm
                node_llms.append(llm)
            stage("chain", "deploying contracts on the in-process EVM")
            opened = open_chain(ChainSettings(backend="embedded"))
            if not isinstance(opened, EmbeddedChain):  # the devnet moves the chain's clock
                opened.close()
                raise ConfigError("the devnet needs the embedded chain backend")
            chain = opened
            deployment = deploy_contracts(chain)
            registry = RegistryClient(deployment.registry)
            market = MarketClient(deployment.market, from_block=deployment.deployed_at)
            content = open_store(StorageSettings(backend=store), root / "blocks")
            requester_id = Identity.generate()
            chain.transfer(requester_id.address, _NODE_FUNDS)
            requester = Requester(requester_id, chain, market, content, registry=registry)
            providers = []
            for i in range(nodes):
                identity = Identity.generate()
                chain.transfer(identity.address, _NODE_FUNDS)
                node = ProviderNode(
                    identity,
                    chain,
                    registry,
                    market,
                    content,
                    node_llms[i],
                    state_dir=str(root / f"node{i}"),
                    policy=policy,
                    cheat=cheats.get(i),
                    tags=tags_of[i],
                )
                node.add_duty(Panelist.for_node(node))
                stage("register", f"node {i + 1}/{nodes}: measuring and registering")
                node.start()
                providers.append(node)
        except BaseException:
            for llm in llms:
                llm.close()
            if content is not None:
                content.close()
            if chain is not None:
                chain.close()
            if own:
                shutil.rmtree(root, ignore_errors=True)
            raise
        return cls(
            chain=chain,
            deployment=deployment,
            registry=registry,
            market=market,
            store=content,
            nodes=providers,
            requester=requester,
            llms=llms,
            workdir=root,
            own_workdir=own,
        )

    # ------------------------------------------------------------------ driving

    def step(self) -> int:
        """Tick every node (then every watcher) once; if none had work, move the chain clock to
        the next deadline (of an open task, or of a pending challenge's vote).

        Returns:
            Steps the nodes took.
        """
        steps = 0
        for node in self.nodes:
            try:
                steps += node.tick()
            except ChefsplanError as err:  # one node's trouble must not stop the others
                log.error("node %s: %s", node.address, err)
        for watcher in self.watchers:
            try:
                steps += watcher.tick()
            except ChefsplanError as err:
                log.error("watcher %r: %s", watcher, err)
        if steps == 0:
            self._advance_clock()
        return steps

    def _advance_clock(self) -> None:
        now = self.chain.block_timestamp()
        marks = []
        for handle in self._open.values():
            p = handle.params
            marks += [p.commit_phase_end + 1, p.reveal_deadline + 1]
            marks.append(p.reveal_deadline + 1 + p.challenge_window)
        marks += self._challenge_marks()
        later = [m for m in marks if m > now]
        self.chain.advance_time(min(later) - now if later else 60)

    def add_watcher(self, watcher: NodeDuty) -> None:
        """Tick ``watcher`` (e.g. a :class:`~chefsplan_agents.verify.Watcher` on this devnet's
        chain) in every :meth:`step`, after the nodes."""
        self.watchers.append(watcher)

    def _challenge_marks(self) -> list[int]:
        """The next deadlines of pending challenges: the panel's last call, the end of vote
        commits, then of vote reveals (a panel waits for them when a panelist is silent)."""
        head = self.chain.block_number()
        if head > self._panel_cursor:
            drawn = self.market.contract.get_logs(
                "PanelDrawn", from_block=self._panel_cursor + 1, to_block=head
            )
            for event in drawn:
                self._challenges[bytes(event.args["taskId"])] = (
                    int(event.args["voteBy"]),
                    int(event.args["revealBy"]),
                )
            self._panel_cursor = head
        marks = []
        for task_id, (vote_by, reveal_by) in list(self._challenges.items()):
            if self.market.task_state(task_id).challenge is not ChallengeState.PENDING:
                del self._challenges[task_id]
                continue
            # The last call comes first: a panelist that cannot re-score then votes the default.
            marks += [vote_by - LAST_CALL_S, vote_by + 1, reveal_by + 1]
        return marks

    def delegate(
        self,
        task: TaskBundle | str,
        *,
        replicas: int = 1,
        quorum: int | None = None,
        bounty_per_replica: int = 10**15,
        bond: int = 10**15,
        params: GenerationParams | None = None,
        timeouts: Timeouts | None = None,
        assignee: str | None = None,
    ) -> TaskHandle:
        """Post a task from the devnet's requester (a prompt runs on the devnet's model).

        A prompt without ``params`` asks for as many tokens as the nodes' policy allows, up to
        256. ``assignee`` (a node's address) assigns a one-replica task to that node.
        """
        if params is None and isinstance(task, str):
            params = GenerationParams(max_tokens=min(256, self.nodes[0].policy.max_tokens))
        handle = self.requester.delegate(
            task,
            replicas=replicas,
            quorum=quorum,
            bounty_per_replica=bounty_per_replica,
            bond=bond,
            timeouts=timeouts,
            model=ModelRequirement(sha256=self.model_sha256),
            params=params,
            assignee=assignee,
        )
        self._open[handle.task_id] = handle
        return handle

    def wait(
        self,
        handle: TaskHandle,
        *,
        timeout: float = 600.0,
        on_progress: Callable[[DelegationProgress], None] | None = None,
    ) -> DelegationReceipt:
        """Drive the nodes until the task settles; return the verified receipt.

        After settlement the nodes get to finish (withdraw their earnings) before it returns.
        """
        try:
            receipt = self.requester.wait_result(
                handle, timeout, on_progress, step=self.step, poll_interval=0.0
            )
        finally:
            self._open.pop(handle.task_id, None)
        self.drain()
        return receipt

    def drain(self, max_rounds: int = 8) -> None:
        """Tick the nodes until none has work left now (the clock stays where it is)."""
        for _ in range(max_rounds):
            if sum(node.tick() for node in self.nodes) == 0:
                return

    def run_task(
        self,
        task: TaskBundle | str,
        *,
        replicas: int = 1,
        quorum: int | None = None,
        bounty_per_replica: int = 10**15,
        bond: int = 10**15,
        params: GenerationParams | None = None,
        timeouts: Timeouts | None = None,
        timeout: float = 600.0,
        on_progress: Callable[[DelegationProgress], None] | None = None,
        assignee: str | None = None,
    ) -> DelegationReceipt:
        """Delegate one task and drive the network until it is settled and verified.

        Args:
            task: A prompt (a chat task on the devnet's model) or a TaskBundle.
            replicas: Providers that run it.
            quorum: Matching outputs needed (default: a simple majority).
            bounty_per_replica: Wei per winning replica.
            bond: Wei each provider posts.
            params: Generation settings for a prompt.
            timeouts: The task's windows (chain seconds; the devnet fast-forwards its clock).
            timeout: Wall-clock seconds to wait.
            on_progress: Live status callback.
            assignee: A node's address: the task is assigned to that node (one replica; with
                no challenge window it settles in one transaction after the run).

        Returns:
            The receipt: the output, CIDs, per-replica transactions, gas.

        Raises:
            MarketError: Bad replica or quorum counts (``NoQuorum`` when outputs disagree).
            DelegationTimeout: The network did not settle it in ``timeout``.
            VerificationError: The winning result failed its checks.
        """
        handle = self.delegate(
            task,
            replicas=replicas,
            quorum=quorum,
            bounty_per_replica=bounty_per_replica,
            bond=bond,
            params=params,
            timeouts=timeouts,
            assignee=assignee,
        )
        return self.wait(handle, timeout=timeout, on_progress=on_progress)

    def restart_node(self, index: int) -> ProviderNode:
        """Replace node ``index`` by a fresh process-equivalent: same key, model and state
        folder, nothing kept in memory. Returns the new node (already in :attr:`nodes`)."""
        old = self.nodes[index]
        old.close()
        node = ProviderNode(
            old.identity,
            self.chain,
            old.registry,
            old.market,
            self.store,
            old.llm,
            state_dir=str(old.state.path),
            policy=old.policy,
            stake=old.stake,
            cheat=old.cheat,
        )
        node.add_duty(Panelist.for_node(node))
        self.nodes[index] = node
        return node

    # ------------------------------------------------------------------ the app's handle

    @cached_property
    def network(self) -> Network:
        """The devnet as an app sees it: the handle ``chefsplan_agents.connect`` returns, over
        this devnet's requester, with waiting stepping the nodes. Closed with the devnet."""
        return Network(
            chain=self.chain,
            deployment=self.deployment,
            store=self.store,
            requester=self.requester,
            registry=self.registry,
            market=self.market,
            driver=InProcessDriver(step=self.step, posted=self._track, settled=self._untrack),
        )

    def _track(self, handle: TaskHandle) -> None:
        self._open[handle.task_id] = handle

    def _untrack(self, handle: TaskHandle) -> None:
        self._open.pop(handle.task_id, None)
        self.drain()

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop the nodes, free the models, the store and the chain (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if "network" in self.__dict__:
            self.network.close()
        for node in self.nodes:
            node.close()
        for llm in self._llms:
            llm.close()
        self.store.close()
        self.chain.close()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
