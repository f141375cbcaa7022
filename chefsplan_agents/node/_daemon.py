"""The provider node: register, watch the market, claim, run, store, commit, reveal, withdraw.

:class:`ProviderNode` is driven by :meth:`~ProviderNode.tick` — one pass over new market events
and the node's open tasks — so a devnet can step several nodes deterministically in one
process; :meth:`~ProviderNode.run_forever` loops it in a daemon process until SIGTERM/SIGINT.

Per task, in order::

    TaskPosted ─ save VETTING (durably) ─ terms ok? ─ fetch bundle by CID (re-hashed)
      ─ bundleHash ok? ─ decode+verify ─ policy ok (model, price, bond, horizons, windows)?
      ──(refuse: logged, recorded, never claimed, so never slashed)
      └─ save CLAIMING (salt) ─ claim (a thread) ∥ run the model ─ save CLAIMED
         ─ put ResultBundle ─ save COMMITTING ─ commit ─ save COMMITTED
         ─ (reveal phase open) save REVEALING ─ reveal, or revealAndFinalize if last
         ─ save REVEALED ─ (settled) withdraw ─ save SETTLED

A task assigned to this node (``TaskParams.assignee``) with one replica and no challenge
window needs no claim before the run: nobody else may take it. The node runs it at once and
sends one transaction when the result is stored::

      └─ save RUNNING ─ run the model ─ put ResultBundle ─ save SETTLING
         ─ claimAndFinalize (claim, reveal, settle, paid) ─ save SETTLED

Tasks assigned to another provider are refused before their bundle is fetched.

An open task whose commit window is too short for this node to run it after claiming (see
:meth:`NodePolicy.check_windows`) is run *before* it is claimed, if its claim and reveal
deadlines leave the time: the claim then carries the commitment (``claim(p, commitment)``), so
no commit deadline can pass with the bond at stake, and the output stays hidden until the
reveal::

      └─ save CLAIMING (salt) ─ run the model ─ put ResultBundle ─ save COMMITTING
         ─ claim with the commitment ─ save COMMITTED ─ reveal (and settle) as above

The ``VETTING`` record written before a bundle is fetched makes every task's vetting happen at
most once: a bundle that crashes or hangs the process is never fetched again after a restart.
A model run is counted in the task's record before it starts, and a task whose runs stopped
the node :data:`_MAX_RUNS` times is given up rather than run again after every restart.

The record is written *before* each on-chain step, and on start-up every unfinished record is
reconciled with the replica's on-chain state, so a restarted node never loses a claimed task.

After its own tasks, each tick runs the node's duties (:meth:`ProviderNode.add_duty`): work it
owes the network, like voting on the challenges whose panel seats it
(``chefsplan_agents.verify.Panelist``, added by ``chefsplan node run`` and the devnet). A duty's
failure is logged and retried on the next tick; it never stops the node.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, TypeVar

from chefsplan_agents._json import DEFAULT_MAX_JSON_DEPTH, nesting_depth
from chefsplan_agents.bundles import (
    Offer,
    OfferedModel,
    ResultBundle,
    TaskBundle,
    check_tags,
    decode_task_bundle,
    encode_bundle,
    issue_offer,
    output_hash,
    sign_bundle,
)
from chefsplan_agents.chain import Chain, Event, Receipt
from chefsplan_agents.errors import (
    BundleError,
    ChainUnavailable,
    ChefsplanError,
    IdentityError,
    LLMError,
    NodeError,
    StorageError,
    StoreUnavailable,
    TaskRefused,
    TxReverted,
)
from chefsplan_agents.identity import Identity
from chefsplan_agents.llm import Generation, GenerationParams, LLMBackend
from chefsplan_agents.market import (
    ChallengeState,
    MarketClient,
    ReplicaState,
    RevealEntry,
    TaskParams,
    make_commitment,
    new_salt,
    result_cid_hash,
)
from chefsplan_agents.node._http import DEFAULT_MAX_CONNECTIONS, NodeHttpServer
from chefsplan_agents.node._policy import GenerationSpeed, NodePolicy
from chefsplan_agents.node._state import NodeStateStore, TaskRecordState, TaskStage
from chefsplan_agents.registry import RegistryClient
from chefsplan_agents.storage import ContentStore

if TYPE_CHECKING:  # the adversaries import this module; a node only holds one
    from chefsplan_agents.testing import Cheat

__all__ = [
    "NewEvents",
    "NodeDuty",
    "NodeStatus",
    "ProviderNode",
    "RetryPolicy",
    "read_new_events",
    "task_prompt",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_Plan = Literal["claim", "run_then_claim", "run_then_settle"]
"""How the node takes a vetted task: claim, then run (the commit window fits the run); run,
then claim with the commitment (it does not); or run, then claimAndFinalize (assigned)."""

_BENCH_PROMPT = "Once upon a time, in a small kitchen by the sea,"
# How long a node waits for its claim's outcome before it starts the model anyway.
_CLAIM_HEAD_START_S = 0.05
# What a node watches: new tasks, claims (to pass over full ones), and freed slots.
_WATCHED = ("TaskPosted", "ReplicaClaimed", "ReplicaReopened")
# Model runs of one task that may end with the node stopping before the task is given up.
_MAX_RUNS = 2


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for a chain node or IPFS daemon that is briefly unreachable.

    Attributes:
        attempts: Tries per operation (the last failure is raised).
        base_s: Wait after the first failure; doubled after each further one.
        max_s: Longest single wait.
    """

    attempts: int = 4
    base_s: float = 0.25
    max_s: float = 5.0

    def run(self, what: str, fn: Callable[[], T]) -> T:
        """Call ``fn``, retrying on :class:`ChainUnavailable` / :class:`StoreUnavailable`."""
        delay = self.base_s
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except (ChainUnavailable, StoreUnavailable) as err:
                if attempt == self.attempts:
                    raise
                log.warning("%s failed (%s); retry %d in %.2f s", what, err, attempt, delay)
                time.sleep(delay)
                delay = min(delay * 2, self.max_s)
        raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class NewEvents:
    """The market events of blocks ``first`` to ``head``, read past an event cursor."""

    first: int
    head: int
    events: list[Event]


def read_new_events(
    retry: RetryPolicy,
    chain: Chain,
    market: MarketClient,
    event: str | Sequence[str],
    *,
    after: int | None,
    what: str,
) -> NewEvents | None:
    """The market's ``event`` logs from the block after ``after`` up to the chain's head.

    Args:
        retry: Backoff for an unreachable chain node.
        chain: The chain (for its head).
        market: The market whose events are read.
        event: The event name or names.
        after: The cursor: the last block already processed (``None``: start at the market's
            first block).
        what: What is read, for the retry log (``read market events``).

    Returns:
        The events and the blocks they span, or ``None`` when no block came after ``after``.

    Raises:
        ChainUnavailable: The chain stayed unreachable through every retry.
    """
    head = retry.run("read block number", chain.block_number)
    first = market.from_block if after is None else after + 1
    if first > head:
        return None
    events: list[Event] = retry.run(
        what, lambda: market.contract.get_logs(event, from_block=first, to_block=head)
    )
    return NewEvents(first, head, events)


class NodeDuty(Protocol):
    """Work a node does besides its own tasks, one step per :meth:`ProviderNode.tick` (e.g.
    ``chefsplan_agents.verify.Panelist``: voting on the challenges it is drawn for)."""

    def tick(self) -> int:
        """Do what is due now; return the steps taken (0: nothing to do yet)."""
        ...


@dataclass(frozen=True)
class NodeStatus:
    """A node's public facts after :meth:`ProviderNode.start`.

    Attributes:
        did: Its DID.
        address: Its EVM address.
        offer: The offer it published.
        offer_cid: CID of the signed offer credential.
        register_tx: The ``register`` or ``updateOffer`` transaction (``None`` if unchanged).
    """

    did: str
    address: str
    offer: Offer
    offer_cid: str
    register_tx: str | None


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def task_prompt(bundle: TaskBundle, llm: LLMBackend) -> str:
    """The exact prompt text a node runs for a task (a chat in the model's template).

    Verifiers re-score against it, so it must be what :meth:`ProviderNode.run_bundle` used.

    Raises:
        NodeError: The bundle needs recipe or input CIDs, which nodes do not expand.
    """
    if bundle.recipe_cid is not None or bundle.input_cids:
        raise NodeError("this node does not expand recipe or input CIDs; inline the prompt")
    if bundle.kind == "chat":
        return llm.format_chat(bundle.messages or ())
    return bundle.prompt or ""


def _check_nesting(data: bytes) -> None:
    """Refuse a bundle nested deeper than any real one before a JSON parser recurses into it
    (a parser that overflows the C stack kills the node with no exception to catch)."""
    try:
        depth = nesting_depth(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise TaskRefused(f"malformed bundle: not UTF-8 ({err.reason})") from err
    if depth > DEFAULT_MAX_JSON_DEPTH:
        raise TaskRefused(
            f"malformed bundle: JSON nests {depth} levels deep, over {DEFAULT_MAX_JSON_DEPTH}"
        )


class ProviderNode:
    """A provider node serving one local model on the task market.

    Args:
        identity: The node's DID and EVM account (its key is added to ``chain``).
        chain: The chain the contracts live on.
        registry: The ``AgentRegistry`` client.
        market: The ``TaskMarket`` client.
        store: Where bundles, results and the offer live.
        llm: The model this node runs.
        state_dir: Folder for the node's task records (see :class:`NodeStateStore`).
        policy: What the node accepts (default :class:`NodePolicy`).
        stake: Wei to stake when registering (default: the registry's minimum).
        endpoint: The node's HTTP API URL, published in its offer.
        retry: Backoff for an unreachable chain node or IPFS daemon.
        cheat: TESTING ONLY: a dishonest way to answer (``chefsplan_agents.testing``) used
            wherever the node would run the model, so a devnet can show a cheater caught and
            slashed. Everything else (offer, vetting, commit-reveal) stays as an honest node's.
        tags: What the node states about itself in its signed offer, e.g.
            ``{"jurisdiction": "EU"}`` (see :func:`~chefsplan_agents.bundles.check_tags`).

    Raises:
        InvalidOfferTags: ``tags`` break the rules (checked before anything is published).

    Attributes:
        speed: The node's measured model speed (set by :meth:`start`, or measured on first
            need; updated by every completed run), which the policy's window checks use.
    """

    def __init__(
        self,
        identity: Identity,
        chain: Chain,
        registry: RegistryClient,
        market: MarketClient,
        store: ContentStore,
        llm: LLMBackend,
        *,
        state_dir: str,
        policy: NodePolicy | None = None,
        stake: int | None = None,
        endpoint: str | None = None,
        retry: RetryPolicy | None = None,
        cheat: Cheat | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.tags = check_tags(tags or {})
        self.identity = identity
        self.cheat = cheat
        self.chain = chain
        self.registry = registry
        self.market = market
        self.store = store
        self.llm = llm
        self.policy = policy or NodePolicy()
        self.state = NodeStateStore(state_dir)
        self.stake = stake
        self.endpoint = endpoint
        self.retry = retry or RetryPolicy()
        self.address = chain.add_account(identity.export_secrets()[1])
        self.did = identity.did
        self.status: NodeStatus | None = None
        self.withdrawn_wei = 0
        self._stop = threading.Event()
        self._pending_cursor: int | None = None
        # Replicas claimed so far of this tick's candidate tasks, counted from the market's
        # events up to block _book_until: a task known to be full is passed over without a
        # chain read of its own (a busy market posts far more tasks than one node takes).
        self._claim_book: dict[str, int] = {}
        self._book_until = -1
        self._book_fresh = False
        # Earnings may wait in the market (credited by someone else's settlement).
        self._owed = True
        self._http: NodeHttpServer | None = None
        self.duties: list[NodeDuty] = []
        self.speed: GenerationSpeed | None = None
        self._speed_lock = threading.Lock()
        if cheat is not None:
            log.warning(
                "TESTING MODE: node %s cheats (%s): its results are forged, not its model's",
                self.did,
                cheat.name,
            )

    def __repr__(self) -> str:
        return f"<ProviderNode {self.did} {self.address}>"

    # ------------------------------------------------------------------ start-up

    def measure(self, max_tokens: int = 32) -> Generation:
        """Run a short real generation; its timings are the speeds the offer states and the
        starting point of :attr:`speed`."""
        # A freshly loaded model's first generation pays one-off costs (buffers, graph set-up)
        # that can make it hundreds of times slower: timed alone, it would make the node refuse
        # every task, and never learn its real speed from the tasks it then never runs.
        self.llm.complete(_BENCH_PROMPT, GenerationParams(max_tokens=1))
        params = GenerationParams(max_tokens=max_tokens, logprobs=1)
        generation = self.llm.complete(_BENCH_PROMPT, params)
        with self._speed_lock:
            self.speed = GenerationSpeed.from_generation(generation)
        return generation

    def _measured_speed(self) -> GenerationSpeed:
        """:attr:`speed`, measured now if this node has not measured it yet (a node restarted
        without :meth:`start`)."""
        speed = self.speed
        if speed is None:
            try:
                self.measure()
            except LLMError as err:
                raise TaskRefused(f"this node cannot measure its own speed: {err}") from err
            speed = self.speed
            assert speed is not None
        return speed

    def offered_model(self) -> OfferedModel:
        """The model this node serves, as its offer names it."""
        info = self.llm.info
        return OfferedModel(
            name=info.name,
            sha256=info.sha256,
            quantization=info.quantization or "unknown",
            context_length=info.n_ctx,
        )

    def serve_http(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        allowed_requesters: Collection[str] = (),
        open_to_all: bool = False,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> NodeHttpServer:
        """Start the node's signed HTTP job API; its URL becomes the offer's endpoint.

        Call before :meth:`start` so the published offer carries the endpoint. Jobs get the
        same model and size checks as market tasks (no payment terms) and run
        :meth:`run_bundle`. Jobs are free, so only the requesters the operator names may
        start them (see :class:`NodeHttpServer`).

        Args:
            host: Interface to bind.
            port: TCP port (0: any free one).
            allowed_requesters: DIDs that may start jobs.
            open_to_all: Let any DID start jobs.
            max_connections: Connections served at once; more get 503 at once.

        Returns:
            The running server (closed by :meth:`close`).
        """
        if self._http is not None:
            return self._http
        server = NodeHttpServer(
            self.identity,
            self._run_http_job,
            self.store,
            model=self.offered_model(),
            price_per_1k_tokens_wei=self.policy.price_per_1k_tokens_wei,
            host=host,
            port=port,
            allowed_requesters=allowed_requesters,
            open_to_all=open_to_all,
            max_connections=max_connections,
        )
        server.start()
        self._http = server
        self.endpoint = server.url
        log.info("node %s serves its HTTP API at %s", self.did, server.url)
        return server

    def _run_http_job(self, bundle: TaskBundle, bundle_cid: str) -> ResultBundle:
        info = self.llm.info
        self.policy.check_request(bundle, model_sha256=info.sha256, model_name=info.name)
        return self.run_bundle(bundle, bundle_cid)

    def build_offer(self, generation: Generation) -> Offer:
        """The offer this node publishes, with speeds measured from ``generation``."""
        speed = GenerationSpeed.from_generation(generation)
        return Offer(
            model=self.offered_model(),
            # A model that stops at once leaves no rate to measure; never publish zero.
            generation_tokens_per_s=speed.generation_tokens_per_s,
            prefill_tokens_per_s=max(generation.timings.prompt_tokens_per_s, 1e-3),
            price_per_1k_tokens_wei=self.policy.price_per_1k_tokens_wei,
            endpoint=self.endpoint,
            evm_address=self.address,
            did=self.did,
            chain_id=self.registry.chain.chain_id,
            registry=self.registry.address,
            tags=self.tags,
        )

    def start(self) -> NodeStatus:
        """Measure the model, publish a signed offer and register (or update the offer).

        Returns:
            The node's DID, address, offer and the registration transaction.

        Raises:
            LLMError: The model cannot generate.
            StorageError: The offer cannot be stored.
            ChainError: Registration failed (``StakeTooLow``, ``AlreadyRegistered``, …).
        """
        offer = self.build_offer(self.measure())
        token = issue_offer(offer, self.identity).encode("utf-8")
        offer_cid = self.retry.run("store offer", lambda: self.store.put(token))
        offer_hash = hashlib.sha256(token).digest()
        current = self.retry.run("read registry", lambda: self.registry.get_provider(self.address))
        receipt: Receipt | None = None
        if current is None:
            stake = self.stake if self.stake is not None else self.registry.min_stake
            receipt = self.retry.run(
                "register",
                lambda: self.registry.register(
                    self.did, offer_cid, offer_hash, stake=stake, sender=self.address
                ),
            )
        elif current.offer_cid != offer_cid:
            receipt = self.retry.run(
                "update offer",
                lambda: self.registry.update_offer(offer_cid, offer_hash, sender=self.address),
            )
        self.status = NodeStatus(
            did=self.did,
            address=self.address,
            offer=offer,
            offer_cid=offer_cid,
            register_tx=receipt.tx_hash if receipt else None,
        )
        log.info(
            "node %s registered at %s: %s, %.1f tok/s, offer %s",
            self.did,
            self.address,
            offer.model.name,
            offer.generation_tokens_per_s,
            offer_cid,
        )
        return self.status

    # ------------------------------------------------------------------ running a task

    def run_bundle(
        self, bundle: TaskBundle, bundle_cid: str, *, cancel: threading.Event | None = None
    ) -> ResultBundle:
        """Run a task under the determinism profile and return the signed result.

        Has the signature of the HTTP API's ``JobRunner``, so the same code serves both.

        Args:
            bundle: The verified task bundle.
            bundle_cid: Its CID (the result names it).
            cancel: Set to stop generating at the next token (the claim was lost).

        Raises:
            LLMError: The model failed or the prompt does not fit.
            NodeError: The bundle needs inputs this node does not expand, or ``cancel`` was set.
        """
        if self.cheat is not None:
            log.warning("TESTING MODE: node %s forges its result (%s)", self.did, self.cheat.name)
            return self.cheat.forge(bundle, bundle_cid, self.llm, self.identity)
        prompt = task_prompt(bundle, self.llm)
        on_token = None
        if cancel is not None:

            def on_token(_token: int, _piece: str) -> None:
                if cancel.is_set():
                    raise NodeError("generation stopped: the claim did not go through")

        gen = self.llm.complete(prompt, bundle.params, on_token=on_token)
        with self._speed_lock:
            if self.speed is not None:
                self.speed = self.speed.observe(gen)
        info = self.llm.info
        result = ResultBundle(
            task_cid=bundle_cid,
            output=gen.text,
            token_ids=gen.token_ids,
            fingerprint=gen.fingerprint,
            model_sha256=info.sha256,
            llama_cpp_build=info.llama_cpp,
            timings=gen.timings,
            node_did=self.did,
            output_hash=output_hash(gen.text),
        )
        return sign_bundle(result, self.identity)

    # ------------------------------------------------------------------ the loop

    def tick(self) -> int:
        """One pass: take new tasks, then advance every open one. Never raises for one task.

        Returns:
            How many on-chain or policy steps the node took (0: nothing to do now).

        Raises:
            ChainUnavailable: The chain node stayed unreachable through every retry.
        """
        steps = 0
        for event in self._new_tasks():
            try:
                if self._known_full(event):
                    steps += self._pass_over_full(event)
                    continue
                steps += self._take(event)
                self._book_fresh = False  # time passed (maybe a model run): re-read claims
            except (ChainUnavailable, StoreUnavailable):
                raise
            except ChefsplanError as err:
                log.error("task %s: %s", _hex(bytes(event.args["taskId"])), err)
        # Every new task has a record now: the next read starts after them.
        self._flush_cursor()
        if self._owed and steps == 0:
            # Earnings wait for a tick with no task to take: settling a task for its requester
            # comes first, the node's own payout can follow a moment later.
            try:
                steps += self._withdraw()
                self._owed = False
            except ChefsplanError as err:
                log.warning("node %s: withdraw failed (%s); will retry", self.address, err)
        for record in self.state.active():
            try:
                steps += self._advance(record)
            except (ChainUnavailable, StoreUnavailable) as err:
                log.warning("task %s: %s; will retry", record.task_id, err)
            except ChefsplanError as err:
                log.error("task %s (%s): %s", record.task_id, record.stage, err)
        for duty in self.duties:
            steps += self._run_duty(duty)
        return steps

    def add_duty(self, duty: NodeDuty) -> None:
        """Run ``duty`` on every :meth:`tick` after the node's own tasks (e.g. a panelist)."""
        self.duties.append(duty)

    def _run_duty(self, duty: NodeDuty) -> int:
        try:
            done = duty.tick()
        except (ChainUnavailable, StoreUnavailable):
            raise  # the node backs off as for its own tasks
        except Exception:  # a duty's failure must never stop the node's own tasks
            log.exception("node %s: %r failed; will retry next tick", self.address, duty)
            return 0
        if done:
            self._owed = True  # a duty may have earned something (a panel's fee)
        return done

    def run_forever(self, poll_interval: float = 1.0) -> None:
        """Tick until :meth:`stop` or SIGTERM/SIGINT, sleeping ``poll_interval`` when idle.

        An unreachable chain or store backs off (up to 30 s) instead of exiting.
        """
        previous: dict[signal.Signals, Any] = {}

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("node %s: signal %d, shutting down", self.did, signum)
            self._stop.set()

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, on_signal)
        backoff = poll_interval
        try:
            while not self._stop.is_set():
                try:
                    busy = self.tick() > 0
                    backoff = poll_interval
                except (ChainUnavailable, StoreUnavailable) as err:
                    log.warning("node %s: %s; backing off %.1f s", self.did, err, backoff)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                if not busy:
                    self._stop.wait(poll_interval)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            log.info("node %s stopped", self.did)

    def stop(self) -> None:
        """Ask :meth:`run_forever` to return after the current step."""
        self._stop.set()

    # ------------------------------------------------------------------ queries

    def task(self, task_id: bytes | str) -> TaskRecordState | None:
        """The node's record of a task, or ``None`` if it never saw it."""
        key = task_id if isinstance(task_id, str) else _hex(task_id)
        return self.state.load(key.lower())

    def refusals(self) -> dict[str, str]:
        """Reasons of every refused task (and of every task whose vetting stopped the node),
        by ``0x`` task id."""
        refused = (TaskStage.REFUSED, TaskStage.VETTING)
        return {r.task_id: r.reason or "" for r in self.state.all() if r.stage in refused}

    # ------------------------------------------------------------------ internals

    def _now(self) -> int:
        return self.retry.run("read chain time", self.chain.block_timestamp)

    def _new_tasks(self) -> list[Event]:
        new = read_new_events(
            self.retry,
            self.chain,
            self.market,
            _WATCHED,
            after=self.state.cursor,
            what="read market events",
        )
        if new is None:
            return []
        start, head, events = new.first, new.head, new.events
        posted = [e for e in events if e.name == "TaskPosted"]
        fresh = [e for e in posted if self.state.load(_hex(bytes(e.args["taskId"]))) is None]
        self._claim_book = {_hex(bytes(e.args["taskId"])): 0 for e in fresh}
        self._book_until = start - 1
        self._count_claims(events, head)
        fresh += self._reopened_tasks([e for e in events if e.name == "ReplicaReopened"])
        # Every node sees a burst of new tasks at once. Taking them in posting order would send
        # all nodes after the same task, and the losers of each claim race would have run the
        # model for nothing; an order of its own (keyed by its address) spreads them out.
        fresh.sort(key=self._take_order)
        # Record the cursor only after the tasks are taken (tick does): a crash re-reads them,
        # and the per-task records make taking one twice impossible.
        self._pending_cursor = head
        if not fresh:
            self.state.cursor = head
        return fresh

    def _count_claims(self, events: list[Event], until: int) -> None:
        for event in events:
            if event.block_number <= self._book_until:
                continue  # counted by an earlier read
            task_id = _hex(bytes(event.args["taskId"]))
            if task_id not in self._claim_book:
                continue
            if event.name == "ReplicaClaimed":
                self._claim_book[task_id] += 1
            elif event.name == "ReplicaReopened":
                self._claim_book[task_id] -= 1
        self._book_until = max(self._book_until, until)
        self._book_fresh = True

    def _known_full(self, event: Event) -> bool:
        """Whether the market's events already show every replica of the task claimed."""
        task_id = _hex(bytes(event.args["taskId"]))
        if task_id not in self._claim_book:
            return False  # a reopened task: _vet reads its state
        if not self._book_fresh:
            head = self.retry.run("read block number", self.chain.block_number)
            if head > self._book_until:
                since = self._book_until + 1
                claims = self.retry.run(
                    "read claim events",
                    lambda: self.market.contract.get_logs(
                        ("ReplicaClaimed", "ReplicaReopened"), from_block=since, to_block=head
                    ),
                )
                self._count_claims(claims, head)
            self._book_fresh = True
        return self._claim_book[task_id] >= int(event.args["params"]["replicas"])

    def _pass_over_full(self, event: Event) -> int:
        params = TaskParams.from_abi(event.args["params"])
        task_id = _hex(bytes(event.args["taskId"]))
        reason = f"all {params.replicas} replicas are already claimed"
        if params.assigned and params.assignee != self.address:
            reason = f"the task is assigned to provider {params.assignee}"
        log.debug("node %s passed over task %s: %s", self.address, task_id, reason)
        record = TaskRecordState(
            task_id,
            params,
            str(event.args["bundleCid"]),
            TaskStage.REFUSED,
            posted_block=event.block_number,
            reason=reason,
        )
        self.state.save(record)
        return 1

    def _take_order(self, event: Event) -> bytes:
        return hashlib.sha256(self.address.encode() + bytes(event.args["taskId"])).digest()

    def _reopened_tasks(self, reopened: list[Event]) -> list[Event]:
        """``TaskPosted`` events of tasks this node passed over (full, or its claim lost the
        race) whose replica slot another provider's stale claim has since freed (``reopen``)."""
        again: dict[str, Event] = {}
        for event in reopened:
            task_id = _hex(bytes(event.args["taskId"]))
            record = self.state.load(task_id)
            if task_id in again or record is None:
                continue
            if record.stage not in (TaskStage.REFUSED, TaskStage.LOST):
                continue
            posted = self.retry.run(
                "read TaskPosted event",
                functools.partial(
                    self.market.contract.get_logs,
                    "TaskPosted",
                    from_block=record.posted_block,
                    to_block=record.posted_block,
                    filters={"taskId": bytes(event.args["taskId"])},
                ),
            )
            if posted:
                log.info("node %s: task %s was reopened; looking again", self.address, task_id)
                again[task_id] = posted[0]
        return list(again.values())

    def _refuse(self, record: TaskRecordState, reason: str, *, warn: bool = True) -> int:
        log.log(
            logging.WARNING if warn else logging.DEBUG,
            "node %s refused task %s: %s",
            self.address,
            record.task_id,
            reason,
        )
        self.state.save(record.advance(TaskStage.REFUSED, reason=reason))
        return 1

    def _take(self, event: Event) -> int:
        task_id = _hex(bytes(event.args["taskId"]))
        params = TaskParams.from_abi(event.args["params"])
        bundle_cid = str(event.args["bundleCid"])
        record = TaskRecordState(
            task_id, params, bundle_cid, TaskStage.VETTING, posted_block=event.block_number
        )
        # Before anything of the bundle is read: a bundle that stops the node is seen once.
        record = self.state.record_seen(record)
        try:
            bundle, plan = self._vet(
                task_id, params, bundle_cid, in_book=task_id in self._claim_book
            )
        except TaskRefused as refusal:
            # Another provider's assigned task is not this node's business: no warning.
            mine = not (params.assigned and params.assignee != self.address)
            return self._refuse(record, refusal.reason, warn=mine)
        record = replace(record, reason=None)  # vetted: the VETTING note no longer holds
        if plan == "run_then_settle":
            # Saved at RUNNING, with the run counted, by _run_assigned.
            return self._run_assigned(record.advance(TaskStage.RUNNING), bundle)
        if plan == "run_then_claim":
            record = record.advance(TaskStage.CLAIMING, salt=_hex(new_salt()))
            self.state.save(record)
            return self._run_then_claim(record, bundle)
        record = record.advance(TaskStage.CLAIMING, salt=_hex(new_salt()), runs=1)
        self.state.save(record)
        return self._claim_and_run(record, bundle)

    def _count_run(self, record: TaskRecordState, give_up: TaskStage) -> TaskRecordState | None:
        """The record with one more model run counted (saved), or ``None`` when earlier runs
        of the task stopped the node too often: then it is saved at ``give_up``.

        A run that returns, with a result or an error, is uncounted again by
        :meth:`_run_returned`: only runs that took the process down add up, not outages of
        the store or the chain that make the node run a task again.
        """
        if record.runs >= _MAX_RUNS:
            reason = f"the node stopped during {record.runs} runs of this task; given up"
            self.state.save(record.advance(give_up, reason=reason))
            log.error("node %s gave up task %s: %s", self.address, record.task_id, reason)
            return None
        record = record.advance(record.stage, runs=record.runs + 1)
        self.state.save(record, sync=True)
        return record

    def _run_returned(self, record: TaskRecordState) -> TaskRecordState:
        """The record with its count of unfinished runs cleared (saved if it changed)."""
        if record.runs == 0:
            return record
        record = record.advance(record.stage, runs=0)
        self.state.save(record)
        return record

    def _flush_cursor(self) -> None:
        head = self._pending_cursor
        if head is not None:
            self.state.cursor = head

    def _vet(
        self, task_id: str, params: TaskParams, bundle_cid: str, *, in_book: bool = False
    ) -> tuple[TaskBundle, _Plan]:
        """Every check before claiming; a refusal is a :class:`TaskRefused`.

        ``in_book``: the task's claims are counted in the claim book (it has a free slot as
        far as the events show), so the chain is not read again here; a task that closed in
        the meantime makes the claim revert, which costs nothing either.

        Returns:
            The bundle, and how to take it (see :data:`_Plan`).
        """
        now = self._now()
        self.policy.check_terms(params, now=now)
        if params.assigned and params.assignee != self.address:
            raise TaskRefused(f"the task is assigned to provider {params.assignee}")
        if not in_book:
            if now > params.claim_deadline:
                raise TaskRefused("the claim window has closed")
            state = self.retry.run("read task", lambda: self.market.task_state(task_id))
            if not state.open:
                raise TaskRefused("the task is no longer open")
            if state.claimed >= params.replicas:
                raise TaskRefused(f"all {params.replicas} replicas are already claimed")
        try:
            data = self.retry.run(
                "fetch bundle",
                lambda: self.store.get(bundle_cid, max_bytes=self.policy.max_bundle_bytes),
            )
        except StoreUnavailable:
            raise
        except StorageError as err:
            raise TaskRefused(f"bundle {bundle_cid} cannot be fetched: {err}") from err
        digest = hashlib.sha256(data).digest()
        if digest != params.bundle_hash:
            raise TaskRefused(
                f"bundle {bundle_cid} hashes to {_hex(digest)}, the task names "
                f"{_hex(params.bundle_hash)}"
            )
        _check_nesting(data)
        try:
            bundle = decode_task_bundle(data, max_bytes=self.policy.max_bundle_bytes)
        except (BundleError, IdentityError) as err:
            raise TaskRefused(f"malformed bundle: {err}") from err
        if bundle.recipe_cid is not None or bundle.input_cids:
            raise TaskRefused(
                "the bundle needs recipe or input CIDs, which this node does not fetch"
            )
        info = self.llm.info
        self.policy.check_bundle(bundle, params, model_sha256=info.sha256, model_name=info.name)
        try:
            n_prompt = len(self.llm.tokenize(task_prompt(bundle, self.llm)))
        except LLMError as err:
            raise TaskRefused(f"the prompt cannot be prepared: {err}") from err
        if n_prompt + bundle.params.max_tokens > info.n_ctx:
            raise TaskRefused(
                f"prompt of {n_prompt} tokens plus max_tokens={bundle.params.max_tokens} does "
                f"not fit this node's context of {info.n_ctx} tokens"
            )
        needed = self.policy.run_seconds(self._measured_speed(), n_prompt, bundle.params.max_tokens)
        if params.assigned and params.single_shot:
            self.policy.check_run_first(params, needed_s=needed, now=now)
            return bundle, "run_then_settle"
        try:
            self.policy.check_windows(params, needed_s=needed)
        except TaskRefused as refusal:
            # Run first, then claim with the commitment: no commit deadline to miss.
            try:
                self.policy.check_run_then_claim(params, needed_s=needed, now=now)
            except TaskRefused as late:
                raise TaskRefused(f"{refusal.reason}; {late.reason}") from late
            return bundle, "run_then_claim"
        return bundle, "claim"

    def _claim_and_run(self, record: TaskRecordState, bundle: TaskBundle) -> int:
        """Claim with the transaction in flight while the model already runs."""
        outcome: dict[str, object] = {}
        failed = threading.Event()

        def claim() -> None:
            try:
                outcome["receipt"] = self.retry.run(
                    "claim", lambda: self.market.claim(record.params, sender=self.address)
                )
            except BaseException as err:  # noqa: BLE001 - handed to the main thread below
                outcome["error"] = err
                failed.set()  # a model run for a lost claim stops at its next token

        worker = threading.Thread(target=claim, name=f"claim-{record.task_id[:10]}", daemon=True)
        worker.start()
        # A claim that loses a race usually fails at once (gas estimation reverts): give it a
        # moment, so that a lost race costs no model run. A slow chain's claim stays in flight
        # while the model runs, which stops at its next token if the claim fails after all.
        worker.join(_CLAIM_HEAD_START_S)
        result: ResultBundle | None = None
        run_error: LLMError | NodeError | None = None
        try:
            if "error" not in outcome:
                result = self.run_bundle(bundle, record.bundle_cid, cancel=failed)
        except (LLMError, NodeError) as err:
            run_error = err
        finally:
            worker.join()
        record = self._run_returned(record)
        error = outcome.get("error")
        if isinstance(error, (ChainUnavailable, StoreUnavailable)):
            raise error  # CLAIMING is saved: the next tick reconciles with the chain
        if isinstance(error, ChefsplanError):
            # Reverted (task full, claim closed) or not sendable (funds): nothing at stake.
            self.state.save(record.advance(TaskStage.LOST, reason=f"claim failed: {error}"))
            log.warning("node %s did not get task %s: %s", self.address, record.task_id, error)
            return 1
        if isinstance(error, BaseException):
            raise error
        receipt = outcome["receipt"]
        assert isinstance(receipt, Receipt)
        record = record.advance(TaskStage.CLAIMED).with_tx(
            "claim", receipt.tx_hash, receipt.gas_used
        )
        self.state.save(record)
        if run_error is not None:
            # Claimed but cannot run: say so; the bond is lost when the commit deadline passes.
            self.state.save(record.advance(TaskStage.FAILED, reason=str(run_error)))
            log.error("node %s cannot run task %s: %s", self.address, record.task_id, run_error)
            return 1
        assert result is not None
        return 1 + self._store_and_commit(record, result)

    def _run_then_claim(self, record: TaskRecordState, bundle: TaskBundle) -> int:
        """Run the task, store the result, then claim it with the commitment (one transaction
        for claim and commit), and reveal when the market lets it."""
        counted = self._count_run(record, TaskStage.LOST)
        if counted is None:
            return 1
        record = counted
        try:
            result = self.run_bundle(bundle, record.bundle_cid)
        except (LLMError, NodeError) as err:
            # Nothing is at stake before the claim.
            self.state.save(record.advance(TaskStage.LOST, reason=f"cannot run: {err}"))
            log.error("node %s cannot run task %s: %s", self.address, record.task_id, err)
            return 1
        record = self._run_returned(record)
        return self._claim_committed(self._store_result(record, result, TaskStage.COMMITTING))

    def _claim_committed(self, record: TaskRecordState) -> int:
        """Claim with the stored result's commitment; a claim that reverts costs nothing."""
        assert record.salt and record.output_hash
        commitment = make_commitment(record.output_hash, record.salt, self.address)
        try:
            receipt = self.retry.run(
                "claim and commit",
                lambda: self.market.claim(record.params, commitment, sender=self.address),
            )
        except TxReverted as err:  # full, closed, or this node inactive
            self.state.save(record.advance(TaskStage.LOST, reason=f"claim failed: {err}"))
            log.warning("node %s did not get task %s: %s", self.address, record.task_id, err)
            return 1
        record = record.with_tx("claim", receipt.tx_hash, receipt.gas_used)
        record = record.with_tx("commit", receipt.tx_hash, 0).advance(TaskStage.COMMITTED)
        self.state.save(record)
        return 1 + self._maybe_reveal(record)

    def _run_assigned(self, record: TaskRecordState, bundle: TaskBundle) -> int:
        """Run a task assigned to this node, then claim, reveal and settle it in one go."""
        counted = self._count_run(record, TaskStage.FAILED)
        if counted is None:
            return 1
        record = counted
        try:
            result = self.run_bundle(bundle, record.bundle_cid)
        except (LLMError, NodeError) as err:
            # Nothing is at stake before claimAndFinalize: the requester may cancel and repost.
            self.state.save(record.advance(TaskStage.FAILED, reason=str(err)))
            log.error("node %s cannot run task %s: %s", self.address, record.task_id, err)
            return 1
        record = self._run_returned(record)
        return self._claim_and_finalize(self._store_result(record, result, TaskStage.SETTLING))

    def _claim_and_finalize(self, record: TaskRecordState) -> int:
        p = record.params
        assert record.output_hash and record.result_cid
        out, cid = record.output_hash, record.result_cid
        try:
            receipt = self.retry.run(
                "claim and finalize",
                lambda: self.market.claim_and_finalize(p, out, cid, sender=self.address),
            )
        except TxReverted as err:  # cancelled, claim window closed, or this node inactive
            self.state.save(record.advance(TaskStage.LOST, reason=f"claim failed: {err}"))
            log.warning("node %s did not get task %s: %s", self.address, record.task_id, err)
            return 1
        for step in ("claim", "reveal", "finalize"):
            record = record.with_tx(
                step, receipt.tx_hash, receipt.gas_used if step == "claim" else 0
            )
        for paid in receipt.events_named("Withdrawn"):
            self.withdrawn_wei += int(paid.args["amount"])
        self.state.save(record.advance(TaskStage.SETTLED))
        return 1

    def _assigned_outcome(self, record: TaskRecordState) -> int:
        """Reconcile an assigned task after a restart: settle it, or learn it settled."""
        state = self.retry.run("read task", lambda: self.market.task_state(record.task_id))
        if state.open:
            if record.stage is TaskStage.SETTLING:
                return self._claim_and_finalize(record)
            vetted = self._vet_again(record)
            return 1 if vetted is None else self._run_assigned(record, vetted[0])
        # Closed: settled by this node's own transaction just before a crash, or cancelled.
        mine = self.retry.run(
            "read claim events",
            lambda: self._task_market(record).events(
                "ReplicaClaimed", task_id=record.task_id, provider=self.address
            ),
        )
        if mine:
            self.state.save(record.advance(TaskStage.SETTLED))
        else:
            self.state.save(record.advance(TaskStage.LOST, reason="the task was cancelled"))
        return 1

    def _store_and_commit(self, record: TaskRecordState, result: ResultBundle) -> int:
        return self._commit_or_reveal(self._store_result(record, result, TaskStage.COMMITTING))

    def _store_result(
        self, record: TaskRecordState, result: ResultBundle, stage: TaskStage
    ) -> TaskRecordState:
        """Put the ResultBundle in the store; save the record at ``stage`` with its CID."""
        data = encode_bundle(result)
        result_cid = self.retry.run("store result", lambda: self.store.put(data))
        record = record.advance(stage, result_cid=result_cid, output_hash=result.output_hash)
        self.state.save(record)
        return record

    def _commit_or_reveal(self, record: TaskRecordState) -> int:
        """Commit the stored result, or, as the last replica to commit, reveal it at once.

        Once every other replica has committed there is nothing left to copy, so the market
        lets the last one skip its commitment: one transaction fewer on the requester's
        critical path (with one replica: claim, then revealAndFinalize).
        """
        p = record.params
        if p.replicas == 1:
            last = True  # this claim is the only replica: nobody else commits or reveals
        else:
            state = self.retry.run("read task", lambda: self.market.task_state(record.task_id))
            if state.committed + 1 != p.replicas:
                return self._commit(record)
            last = state.revealed + 1 == p.replicas
        revealing = record.advance(TaskStage.REVEALING)
        self.state.save(revealing)
        try:
            return self._reveal(revealing, last=last)
        except TxReverted as err:
            # A slot was reopened and taken since the read, or the commit deadline passed:
            # take the ordinary path (a passed deadline fails there too, with its reason).
            log.info("task %s: direct reveal reverted (%s); committing", record.task_id, err)
            self.state.save(record)
            return self._commit(record)

    def _commit(self, record: TaskRecordState) -> int:
        assert record.salt and record.output_hash
        commitment = make_commitment(record.output_hash, record.salt, self.address)
        receipt = self.retry.run(
            "commit", lambda: self.market.commit(record.params, commitment, sender=self.address)
        )
        record = record.advance(TaskStage.COMMITTED).with_tx(
            "commit", receipt.tx_hash, receipt.gas_used
        )
        self.state.save(record)
        if record.params.replicas == 1 and self._now() <= record.params.reveal_deadline:
            # Its own commit completed the commit phase: reveal (and settle) at once.
            record = record.advance(TaskStage.REVEALING)
            self.state.save(record)
            return 1 + self._reveal(record, last=True)
        return 1 + self._maybe_reveal(record)

    def _maybe_reveal(self, record: TaskRecordState) -> int:
        p = record.params
        now = self._now()
        if now > p.reveal_deadline:
            self.state.save(record.advance(TaskStage.FAILED, reason="missed the reveal deadline"))
            return 1
        state = self.retry.run("read task", lambda: self.market.task_state(record.task_id))
        if not state.open:
            self.state.save(record.advance(TaskStage.FAILED, reason="task settled before reveal"))
            return 1
        if state.committed < p.replicas and now <= p.commit_phase_end:
            return 0  # another replica may still commit: revealing now would let it copy
        record = record.advance(TaskStage.REVEALING)
        self.state.save(record)
        return self._reveal(record, last=state.revealed + 1 == p.replicas)

    def _reveal(self, record: TaskRecordState, *, last: bool) -> int:
        p = record.params
        assert record.output_hash and record.result_cid and record.salt
        out, cid, salt = record.output_hash, record.result_cid, record.salt
        if last and p.challenge_window == 0:
            settled = self._reveal_and_finalize(record)
            if settled is not None:
                return settled
        receipt = self.retry.run(
            "reveal", lambda: self.market.reveal(p, out, cid, salt, sender=self.address)
        )
        record = record.with_tx("reveal", receipt.tx_hash, receipt.gas_used)
        record = record.advance(TaskStage.REVEALED)
        self.state.save(record)
        return 1 + self._maybe_settle(record)

    def _reveal_and_finalize(self, record: TaskRecordState) -> int | None:
        """Reveal last and settle in one transaction; ``None`` if the market refused it (a
        plain reveal follows, and the task settles by ``finalize``)."""
        p = record.params
        assert record.output_hash and record.result_cid and record.salt
        out, cid, salt = record.output_hash, record.result_cid, record.salt
        if p.replicas == 1:
            # This node holds the only claim: the settlement list is its own reveal.
            own = RevealEntry(self.address, bytes.fromhex(out[2:]), result_cid_hash(cid))
            reveals, winning = [own], cid
        else:
            reveals, winning = self._task_market(record).settlement_inputs(
                p, pending=(self.address, bytes.fromhex(out[2:]), cid)
            )
        try:
            receipt = self.retry.run(
                "reveal and finalize",
                lambda: self.market.reveal_and_finalize(
                    p, out, cid, salt, sender=self.address, reveals=reveals, winning_cid=winning
                ),
            )
        except TxReverted as err:  # another reveal landed first, or the list went stale
            log.info("task %s: revealAndFinalize reverted (%s); revealing", record.task_id, err)
            return None
        record = record.with_tx("reveal", receipt.tx_hash, receipt.gas_used)
        record = record.with_tx("finalize", receipt.tx_hash, 0)
        for paid in receipt.events_named("Withdrawn"):
            self.withdrawn_wei += int(paid.args["amount"])
        # Settled, and this node's own share was paid in the same transaction; earnings
        # credited earlier are withdrawn by a later tick, off the requester's critical path.
        self.state.save(record.advance(TaskStage.SETTLED))
        self._owed = True
        return 1

    def _maybe_settle(self, record: TaskRecordState) -> int:
        state = self.retry.run("read task", lambda: self.market.task_state(record.task_id))
        steps = 0
        if state.open:
            if state.challenge is ChallengeState.PENDING:
                return 0  # settled once the panel decided (resolveChallenge)
            try:
                settle_at = self.market.settle_time(record.params)
            except TxReverted:  # another party settled it since the read above: next tick
                return 0
            if self._now() < settle_at:
                return 0
            try:
                receipt = self.retry.run(
                    "finalize",
                    lambda: self._task_market(record).finalize(record.params, sender=self.address),
                )
            except TxReverted as err:  # another party settled first, or too early after all
                log.info("task %s: finalize reverted (%s)", record.task_id, err)
                return 0
            record = record.with_tx("finalize", receipt.tx_hash, receipt.gas_used)
            for paid in receipt.events_named("Withdrawn"):
                self.withdrawn_wei += int(paid.args["amount"])
            steps += 1
        steps += self._withdraw()
        self.state.save(record.advance(TaskStage.SETTLED))
        return steps + 1

    def _task_market(self, record: TaskRecordState) -> MarketClient:
        # Settlement inputs come from event scans; starting at the task's block keeps them
        # cheap however long the chain is.
        return MarketClient(self.market.contract, from_block=record.posted_block)

    def _withdraw(self) -> int:
        owed = self.retry.run("read balance", lambda: self.market.balance_of(self.address))
        if owed == 0:
            return 0
        receipt = self.retry.run("withdraw", lambda: self.market.withdraw(sender=self.address))
        self.withdrawn_wei += owed
        log.info("node %s withdrew %d wei (tx %s)", self.address, owed, receipt.tx_hash)
        return 1

    def _advance(self, record: TaskRecordState) -> int:
        """Move an unfinished task on, reconciling the record with the chain first."""
        if record.stage in (TaskStage.RUNNING, TaskStage.SETTLING):
            return self._assigned_outcome(record)
        replica = self.retry.run(
            "read replica", lambda: self.market.replica(record.task_id, self.address)
        )
        stage: TaskStage = record.stage
        if stage is TaskStage.CLAIMING:
            if replica.state is ReplicaState.NONE:
                # The claim never landed: start over if the task still takes claims.
                vetted = self._vet_again(record)
                if vetted is None:
                    return 1
                bundle, plan = vetted
                if plan == "run_then_claim":
                    return self._run_then_claim(record, bundle)
                counted = self._count_run(record, TaskStage.LOST)
                return 1 if counted is None else self._claim_and_run(counted, bundle)
            record = record.advance(TaskStage.CLAIMED)
            self.state.save(record)
            stage = record.stage
        if stage is TaskStage.COMMITTING and "claim" not in record.txs:
            if replica.state is ReplicaState.NONE:
                # Run first and stored; the claim with the commitment never landed.
                return self._claim_committed(record)
        if stage is TaskStage.CLAIMED or (
            stage is TaskStage.COMMITTING and replica.state is ReplicaState.CLAIMED
        ):
            if stage is TaskStage.COMMITTING:
                return self._commit_or_reveal(record)
            if replica.state is ReplicaState.CLAIMED:
                counted = self._count_run(record, TaskStage.FAILED)
                if counted is None:
                    return 1
                bundle = self._vet_claimed(counted)
                try:
                    result = self.run_bundle(bundle, counted.bundle_cid)
                except Exception:
                    self._run_returned(counted)
                    raise
                return self._store_and_commit(self._run_returned(counted), result)
        if stage in (TaskStage.CLAIMED, TaskStage.COMMITTING, TaskStage.COMMITTED):
            if replica.state is ReplicaState.COMMITTED:
                if stage is not TaskStage.COMMITTED:
                    record = record.advance(TaskStage.COMMITTED)
                    self.state.save(record)
                return self._maybe_reveal(record)
        if stage is TaskStage.REVEALING:
            if replica.state is ReplicaState.CLAIMED:
                # A direct reveal (see _commit_or_reveal) was about to be sent: try again.
                return self._commit_or_reveal(record.advance(TaskStage.COMMITTING))
            if replica.state is ReplicaState.COMMITTED:
                state = self.retry.run("read task", lambda: self.market.task_state(record.task_id))
                return self._reveal(record, last=state.revealed + 1 == record.params.replicas)
            stage = TaskStage.REVEALED
        if stage is TaskStage.REVEALED:
            return self._maybe_settle(record.advance(TaskStage.REVEALED))
        if replica.state in (ReplicaState.NONE, ReplicaState.REOPENED):
            # Settled (replicas are cleared) or reopened while the node was away.
            state = self.retry.run("read task", lambda: self.market.task_state(record.task_id))
            if not state.open:
                self._withdraw()
                self.state.save(record.advance(TaskStage.SETTLED))
                return 1
            self.state.save(
                record.advance(TaskStage.FAILED, reason=f"replica is {replica.state.name}")
            )
            return 1
        return 0

    def _vet_again(self, record: TaskRecordState) -> tuple[TaskBundle, _Plan] | None:
        """Vet a task again after a restart; a refusal now records it LOST (``None``)."""
        try:
            return self._vet(record.task_id, record.params, record.bundle_cid)
        except TaskRefused as refusal:
            self.state.save(record.advance(TaskStage.LOST, reason=refusal.reason))
            return None

    def _vet_claimed(self, record: TaskRecordState) -> TaskBundle:
        data = self.retry.run(
            "fetch bundle",
            lambda: self.store.get(record.bundle_cid, max_bytes=self.policy.max_bundle_bytes),
        )
        return decode_task_bundle(data, max_bytes=self.policy.max_bundle_bytes)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop the loop and the HTTP API. The chain, store and model belong to the caller
        and stay open."""
        self._stop.set()
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
