"""``Network``: chain, content store, registry index, market requester, identity, verifier.

An app holds one :class:`Network` while it uses the network as a requester; the tools in
:mod:`chefsplan_agents.tools` take it as their first argument. It owns no logic of its own
beyond what every caller needs the same way: keeping the registry index current, checking the
requester can pay (and may spend) before a task is posted, and waiting for a task — stepping the
provider nodes when they run in this process (a devnet).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from chefsplan_agents.bundles import (
    DEFAULT_TASK_MAX_TOKENS,
    GenerationParams,
    ModelRequirement,
    ResultBundle,
    TaskBundle,
    decode_result_bundle,
    decode_task_bundle,
)
from chefsplan_agents.chain import Chain, Deployment, open_chain, open_deployment
from chefsplan_agents.config import PolicySettings, Settings, load_settings
from chefsplan_agents.errors import (
    BundleError,
    ChefsplanError,
    ConfigError,
    IdentityError,
    InsufficientFunds,
    MarketError,
    PolicyViolation,
    StorageError,
    VerificationError,
)
from chefsplan_agents.identity import Identity, load_keystore
from chefsplan_agents.llm import LLMBackend, open_backend
from chefsplan_agents.market import (
    DelegationProgress,
    DelegationReceipt,
    MarketClient,
    OutputLogClient,
    Requester,
    TaskHandle,
    Timeouts,
)
from chefsplan_agents.registry import (
    ChainLogSource,
    IndexedProvider,
    RegistryClient,
    RegistryIndex,
)
from chefsplan_agents.storage import ContentStore, open_store
from chefsplan_agents.verify import (
    Canaries,
    CanaryOutcome,
    CanaryVerdict,
    KnownAnswer,
    ProviderStats,
    VerificationPolicy,
    canary_bounty,
    canary_evidence,
    check_canary,
    publish_evidence,
)

__all__ = [
    "DEFAULT_BOND_WEI",
    "EMBEDDED_REQUESTER_FUNDS_WEI",
    "InProcessDriver",
    "Network",
    "ProgressListener",
    "connect",
    "progress_listener",
]

log = logging.getLogger(__name__)

DEFAULT_BOND_WEI = 10**15
"""The bond a provider posts per replica of a task this network posts (0.001 ether)."""

EMBEDDED_REQUESTER_FUNDS_WEI = 100 * 10**18
"""What :func:`connect` gives the requester on the embedded chain."""


def _nothing(_handle: TaskHandle) -> None:
    return None


ProgressListener = Callable[[TaskHandle, DelegationProgress], None]

# A context variable, not a Network attribute: concurrent callers on one handle each hear only
# their own tasks, and asyncio.to_thread carries it into the tools' worker threads.
_listener: contextvars.ContextVar[ProgressListener | None] = contextvars.ContextVar(
    "chefsplan_progress_listener", default=None
)


@contextlib.contextmanager
def progress_listener(listener: ProgressListener) -> Iterator[None]:
    """Within the block (and worker threads started from it), every :meth:`Network.wait`
    calls ``listener(handle, progress)`` whenever a task's progress changes.

    Progress stages are ``posted``, ``claimed``, ``committed``, ``revealed``, ``finalized``
    (:class:`~chefsplan_agents.market.DelegationProgress`). A listener runs on the waiting
    thread; it must be quick and must not raise.
    """
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


@dataclass(frozen=True)
class InProcessDriver:
    """How a network whose provider nodes run in this process is moved forward.

    Attributes:
        step: Let every node act once (a devnet's ``step``); called between polls while
            waiting for a task.
        posted: Told of every task this network posts (a devnet tracks their deadlines).
        settled: Told when waiting for a task ends, settled or not.
    """

    step: Callable[[], object]
    posted: Callable[[TaskHandle], None] = _nothing
    settled: Callable[[TaskHandle], None] = _nothing


class Network:
    """What an app holds to use the network as a requester.

    Build one with :func:`connect` (or take ``Devnet.network``); it is a context manager that
    closes what it opened (a handle over a devnet closes nothing of the devnet's).

    Args:
        chain: The chain the contracts live on.
        deployment: The contracts.
        store: The content store (bundles, results, offers).
        requester: The app's requester: its identity signs bundles and its account pays.
        registry: The ``AgentRegistry`` client (default: bound from ``deployment``).
        market: The ``TaskMarket`` client (default: bound from ``deployment``).
        verifier: A local model that re-scores results (optional; see ``verify``).
        policy: The app's business rules (default: none).
        driver: Set when the provider nodes run in this process.
        timeout_s: Default wall-clock seconds to wait for a task.
        bond_wei: The bond each provider posts on a task this network posts.
        on_close: Called by :meth:`close` to close what the handle owns.

    Attributes:
        chain: The chain.
        deployment: The contracts.
        store: The content store.
        registry: The ``AgentRegistry`` client.
        market: The ``TaskMarket`` client.
        output_log: The ``OutputLog`` client.
        index: The registry index (SQLite in memory), refreshed by :meth:`providers`.
        requester: The requester.
        verifier: The local verifier model, or ``None``; assignable.
        policy: The app's policy.
        verification: Which results the tools re-score and how (default: new providers always,
            established ones sampled by a secret draw); assignable.
        canaries: Canary tasks (audits with answers known in advance): their policy, known
            answers and outcomes; off until ``canaries.enabled`` is set (see
            :meth:`send_canary`).
        timeout_s: Default seconds to wait for a task.
        bond_wei: Bond per replica of the tasks this network posts.
    """

    def __init__(
        self,
        *,
        chain: Chain,
        deployment: Deployment,
        store: ContentStore,
        requester: Requester,
        registry: RegistryClient | None = None,
        market: MarketClient | None = None,
        verifier: LLMBackend | None = None,
        policy: PolicySettings | None = None,
        driver: InProcessDriver | None = None,
        timeout_s: float = 600.0,
        bond_wei: int = DEFAULT_BOND_WEI,
        on_close: Callable[[], object] | None = None,
    ) -> None:
        if timeout_s <= 0 or bond_wei <= 0:
            raise ConfigError("a network needs a positive timeout_s and bond_wei")
        self.chain = chain
        self.deployment = deployment
        self.store = store
        self.requester = requester
        self.registry = registry or RegistryClient(deployment.registry)
        self.market = market or MarketClient(deployment.market, from_block=deployment.deployed_at)
        self.output_log = OutputLogClient(deployment.output_log, from_block=deployment.deployed_at)
        self.index = RegistryIndex(":memory:", registry_address=deployment.registry.address)
        self.verifier = verifier
        self.policy = policy or PolicySettings()
        # Its salt is this process's secret: a provider cannot tell at commit time whether its
        # result will be checked.
        self.verification = VerificationPolicy()
        # Off by default: a canary spends a bounty, and it needs known answers, a verifier to
        # tell drift from a cheat, and real tasks with a challenge window to hide among.
        self.canaries = Canaries()
        self._canaries_pending: dict[bytes, tuple[TaskHandle, KnownAnswer]] = {}
        self._canaries_lock = threading.Lock()
        self.driver = driver
        self.timeout_s = timeout_s
        self.bond_wei = bond_wei
        self._on_close = on_close
        self._spent = 0
        self._spent_lock = threading.Lock()
        #: Held while the verifier runs: a loaded model serves one call at a time.
        self.verifier_lock = threading.Lock()
        # In-process nodes are stepped by whoever waits: one waiter at a time.
        self._driving = threading.RLock()
        self._closed = False

    # ------------------------------------------------------------------ who we are

    @property
    def identity(self) -> Identity:
        """The requester's identity (its DID signs the bundles)."""
        return self.requester.identity

    @property
    def address(self) -> str:
        """The requester's EVM account (it pays the bounties)."""
        return self.requester.address

    @property
    def spent_wei(self) -> int:
        """Wei of bounties this handle has escrowed so far (what the spending cap counts)."""
        return self._spent

    def balance_wei(self) -> int:
        """The requester account's balance on the chain."""
        return self.chain.balance(self.address)

    # ------------------------------------------------------------------ the registry

    def refresh_providers(self) -> None:
        """Bring the registry index up to the chain's head and check any new offers."""
        self.index.sync(
            ChainLogSource(self.deployment.registry), start_block=self.deployment.deployed_at
        )
        self.index.resolve_offers(self.store)

    def providers(
        self,
        *,
        model: str | None = None,
        model_sha256: str | None = None,
        min_tokens_per_s: float | None = None,
        max_price: int | None = None,
        min_stake: int | None = None,
        limit: int = 20,
        tags: Mapping[str, str] | None = None,
    ) -> list[IndexedProvider]:
        """Active providers with a verified offer matching every filter, best ranked first.

        The index is refreshed first. Ranking is the registry index's (reputation score, then
        stake, then speed); see :meth:`~chefsplan_agents.registry.RegistryIndex.query`.
        ``tags`` keeps providers whose signed offer states each tag with that value.

        Raises:
            RegistryError: A filter value is out of range.
            InvalidOfferTags: ``tags`` break the tag rules.
            ChainError: Reading the registry's events failed.
        """
        self.refresh_providers()
        return self.index.query(
            model=model,
            model_sha256=model_sha256,
            min_tokens_per_s=min_tokens_per_s,
            max_price=max_price,
            min_stake=min_stake,
            limit=limit,
            tags=tags,
        )

    # ------------------------------------------------------------------ tasks

    def check_spend(self, escrow_wei: int) -> None:
        """Refuse a task whose escrow the policy's cap or the requester's balance cannot cover.

        Raises:
            PolicyViolation: The spending cap would be exceeded.
            InsufficientFunds: The requester's account holds less than the escrow.
        """
        cap = self.policy.spending_cap_wei
        if cap is not None and self._spent + escrow_wei > cap:
            raise PolicyViolation(
                f"the task escrows {escrow_wei} wei; with {self._spent} wei spent that passes "
                f"the spending cap of {cap} wei (policy.spending_cap_wei): ask for fewer "
                "tokens or replicas, or raise the cap"
            )
        balance = self.balance_wei()
        if balance < escrow_wei:
            raise InsufficientFunds(
                f"requester {self.address} holds {balance} wei but the task escrows "
                f"{escrow_wei} wei; fund the account or lower the bounty"
            )

    def delegate(
        self,
        task: TaskBundle | str,
        *,
        model: ModelRequirement | str,
        bounty_per_replica: int,
        replicas: int = 1,
        quorum: int | None = None,
        params: GenerationParams | None = None,
        assignee: str | None = None,
        timeouts: Timeouts | None = None,
    ) -> TaskHandle:
        """Post a task from this network's requester, after :meth:`check_spend`.

        Args:
            task: A TaskBundle (re-signed by the requester) or a prompt.
            model: The model requirement (or a sha256 or name) for a prompt.
            bounty_per_replica: Wei per winning replica.
            replicas: Providers that run it.
            quorum: Matching outputs needed (default: a simple majority).
            params: Generation settings for a prompt.
            assignee: The one provider that may take a one-replica task.
            timeouts: The task's windows.

        With ``canaries.enabled``, a task assigned to a provider may bring a canary along:
        posted next to it (just before or just after, by a coin flip), to the same provider,
        on the same terms (see :meth:`send_canary`); a canary that cannot be sent is logged,
        never raised.

        Returns:
            The handle to pass to :meth:`wait`.

        Raises:
            PolicyViolation: The escrow passes ``policy.max_spend_per_task_wei``, or see
                :meth:`check_spend`.
            InsufficientFunds: See :meth:`check_spend`.
            MarketError, StorageError, TxReverted: As ``Requester.delegate``.
        """
        canary = None
        if assignee is not None and self.canaries.enabled:
            canary = self._canary_due(
                task, model, params, assignee, timeouts or Timeouts(), bounty_per_replica
            )
        # A canary goes just before or just after the real task, by a coin flip: which of two
        # tasks in a row is the canary must not be guessable from the order.
        before = canary is not None and secrets.randbelow(2) == 0
        if before and canary is not None and assignee is not None:
            escrow = bounty_per_replica * replicas
            try:  # never spend on a canary first and then refuse the real task
                self._check_task_cap(escrow)
                self.check_spend(escrow + canary[1])
            except ChefsplanError as err:
                log.info("no canary with this task: %s", err)
                canary = None
            else:
                self._send_canary_along(assignee, canary, timeouts)
        handle = self._post(
            task,
            model=model,
            bounty_per_replica=bounty_per_replica,
            replicas=replicas,
            quorum=quorum,
            params=params,
            assignee=assignee,
            timeouts=timeouts,
        )
        if canary is not None and assignee is not None and not before:
            self._send_canary_along(assignee, canary, timeouts)
        return handle

    def _check_task_cap(self, escrow: int) -> None:
        per_task = self.policy.max_spend_per_task_wei
        if per_task is not None and escrow > per_task:
            raise PolicyViolation(
                f"the task escrows {escrow} wei, over policy.max_spend_per_task_wei={per_task}: "
                "ask for fewer tokens or replicas, or raise the cap"
            )

    def _post(
        self,
        task: TaskBundle | str,
        *,
        model: ModelRequirement | str,
        bounty_per_replica: int,
        replicas: int,
        quorum: int | None,
        params: GenerationParams | None,
        assignee: str | None,
        timeouts: Timeouts | None,
    ) -> TaskHandle:
        escrow = bounty_per_replica * replicas
        self._check_task_cap(escrow)
        with self._spent_lock:
            self.check_spend(escrow)
            handle = self.requester.delegate(
                task,
                replicas=replicas,
                quorum=quorum,
                bounty_per_replica=bounty_per_replica,
                bond=self.bond_wei,
                timeouts=timeouts,
                model=model if isinstance(task, str) else None,
                params=params,
                assignee=assignee,
            )
            self._spent += escrow
        if self.driver is not None:
            self.driver.posted(handle)
        return handle

    def wait(self, handle: TaskHandle, timeout_s: float | None = None) -> DelegationReceipt:
        """Wait until the task settles; return the receipt verified as the requester verifies.

        Pending canaries are checked first (:meth:`check_canaries`), while their challenge
        windows are open.

        Raises:
            DelegationTimeout: Not settled in time.
            NoQuorum: Settled without an accepted output.
            VerificationError: The winning result failed the requester's checks.
        """
        if self._canaries_pending:
            # Canaries are checked before any task settles: on a devnet, waiting moves the
            # clock past their challenge windows.
            self.check_canaries()
        timeout = self.timeout_s if timeout_s is None else timeout_s
        listener = _listener.get()
        on_progress = None
        if listener is not None:
            on_progress = functools.partial(listener, handle)
        if self.driver is None:
            return self.requester.wait_result(handle, timeout, on_progress)
        with self._driving:
            try:
                return self.requester.wait_result(
                    handle, timeout, on_progress, step=self.driver.step, poll_interval=0.0
                )
            finally:
                self.driver.settled(handle)

    # ------------------------------------------------------------------ canaries

    def send_canary(
        self,
        provider: str,
        *,
        answer: KnownAnswer | None = None,
        timeouts: Timeouts | None = None,
        bounty_per_replica: int | None = None,
        max_tokens: int | None = None,
    ) -> TaskHandle:
        """Post a canary to ``provider``: a prompt whose answer this requester knows.

        It goes through the path every real task takes (:meth:`delegate`, the requester's own
        DID and account, a fresh nonce) as a one-replica task assigned to the provider, on
        the terms of a real one: the challenge window of ``timeouts`` (default
        ``policy.challenge_window_s``) and, unless given, the bounty a real task of that
        length pays at the provider's advertised price. Check it with
        :meth:`check_canary` or :meth:`check_canaries` (which :meth:`wait` calls) before that
        window closes. A passed canary settles as any task does; a failed one is challenged,
        and settles once the drawn panel has decided.

        Args:
            provider: The provider's address.
            answer: The known answer to ask (default: one drawn from ``canaries.pool`` that the
                provider has not seen, preferring ``max_tokens``).
            timeouts: The real tasks' windows.
            bounty_per_replica: The real task's bounty (when it rides along with one).
            max_tokens: The real tasks' ``max_tokens`` (to draw an answer of that length).

        Returns:
            The canary's handle.

        Raises:
            VerificationError: No challenge window, the provider has no verified offer, or no
                known answer for its model that it has not seen.
            PolicyViolation, InsufficientFunds, MarketError, TxReverted: As :meth:`delegate`.
        """
        t = timeouts or Timeouts(challenge_window=self.policy.challenge_window_s)
        if t.challenge_window <= 0:
            raise VerificationError(
                "a canary needs a challenge window to challenge a wrong answer in: set "
                "policy.challenge_window_s (the window of the real tasks it hides among)"
            )
        listed = self.index.provider(provider)
        if listed is None or listed.offer is None:
            self.refresh_providers()
            listed = self.index.provider(provider)
        if listed is None or listed.offer is None:
            raise VerificationError(
                f"{provider} has no verified offer in the registry: canaries go to listed "
                "providers only"
            )
        sha = listed.offer.model_sha256
        known = answer or self.canaries.pool.draw(provider, sha, max_tokens=max_tokens)
        if known is None:
            raise VerificationError(
                f"no known answer for model {sha[:12]}… that {provider} has not seen: add "
                "prompts to network.canaries.pool"
            )
        if known.model_sha256 != sha:
            raise VerificationError(
                f"the known answer is for model {known.model_sha256[:12]}…, {provider} offers "
                f"{sha[:12]}…"
            )
        if bounty_per_replica is None:
            price = listed.offer.price_per_1k_tokens_wei
            bounty_per_replica = canary_bounty(price, known.params.max_tokens)
        bundle = known.bundle(self.identity.did)
        handle = self._post(
            bundle,
            model=bundle.model,
            bounty_per_replica=bounty_per_replica,
            replicas=1,
            quorum=None,
            params=None,
            assignee=provider,
            timeouts=t,
        )
        self.canaries.count_sent(provider)
        self.canaries.pool.mark_seen(known, provider)
        with self._canaries_lock:
            self._canaries_pending[handle.task_id] = (handle, known)
        log.info("sent canary task 0x%s to %s", handle.task_id.hex(), provider)
        return handle

    def _canary_due(
        self,
        task: TaskBundle | str,
        model: ModelRequirement | str,
        params: GenerationParams | None,
        provider: str,
        timeouts: Timeouts,
        bounty: int,
    ) -> tuple[KnownAnswer, int] | None:
        """The known answer to send along with a real task to ``provider`` if one is due, and
        its bounty: the real task's for the same length, else the provider's price for it."""
        if timeouts.challenge_window <= 0:
            return None  # a canary must look like this task, and must be challengeable
        if isinstance(task, TaskBundle):
            sha, max_tokens = task.model.sha256, task.params.max_tokens
        else:
            sha = model.sha256 if isinstance(model, ModelRequirement) else model
            max_tokens = (params or GenerationParams(max_tokens=DEFAULT_TASK_MAX_TOKENS)).max_tokens
        if sha is None:
            return None
        try:
            listed = self.index.provider(provider)
        except ChefsplanError as err:
            log.warning("no canary for %s: %s", provider, err)
            return None
        if listed is None or listed.offer is None:
            return None  # only listed providers get canaries (see send_canary)
        stats = ProviderStats.of(listed)
        sent = self.canaries.sent_to(provider)
        if not self.canaries.policy.due(provider, stats, sent, secrets.token_bytes(32)):
            return None
        known = self.canaries.pool.draw(provider, sha, max_tokens=max_tokens)
        if known is None:
            log.info("no unseen canary for %s: add prompts to network.canaries.pool", provider)
            return None
        if known.params.max_tokens != max_tokens:
            price = listed.offer.price_per_1k_tokens_wei
            bounty = canary_bounty(price, known.params.max_tokens)
        return known, bounty

    def _send_canary_along(
        self, provider: str, due: tuple[KnownAnswer, int], timeouts: Timeouts | None
    ) -> None:
        """Send a canary with a real task (never raises: an audit's trouble never costs the
        app its task)."""
        known, bounty = due
        try:
            self.send_canary(
                provider, answer=known, timeouts=timeouts or Timeouts(), bounty_per_replica=bounty
            )
        except ChefsplanError as err:
            log.warning("canary to %s not sent: %s", provider, err)

    def pending_canaries(self) -> list[TaskHandle]:
        """Canaries sent and not checked yet."""
        with self._canaries_lock:
            return [h for h, _ in self._canaries_pending.values()]

    def check_canaries(self, timeout_s: float | None = None) -> list[CanaryOutcome]:
        """Check every pending canary (see :meth:`check_canary`); never raises."""
        outcomes = []
        for handle in self.pending_canaries():
            try:
                outcomes.append(self.check_canary(handle, timeout_s))
            except ChefsplanError as err:
                log.warning("canary 0x%s not checked: %s", handle.task_id.hex(), err)
        return outcomes

    def check_canary(self, handle: TaskHandle, timeout_s: float | None = None) -> CanaryOutcome:
        """Wait for a canary's result and check it against its known answer.

        A match is free; a different answer is re-scored in full by ``verifier``, and passes
        if the re-score does (honest drift). A failed canary is challenged on chain at once,
        inside its window, naming a ``check="canary"`` evidence document; a passed one settles
        normally. The outcome is kept in ``canaries.outcomes``.

        Raises:
            VerificationError: ``handle`` is not a pending canary of this network.
        """
        with self._canaries_lock:  # taken out first: two callers never both challenge it
            pending = self._canaries_pending.pop(handle.task_id, None)
        if pending is None:
            raise VerificationError(
                f"task 0x{handle.task_id.hex()} is not a pending canary of this network"
            )
        known = pending[1]
        try:
            outcome = self._judge_canary(handle, known, timeout_s)
        except BaseException:
            with self._canaries_lock:
                self._canaries_pending[handle.task_id] = pending
            raise
        self.canaries.record(outcome)
        log.info(
            "canary 0x%s to %s: %s %s",
            handle.task_id.hex(),
            outcome.provider,
            outcome.status,
            outcome.reason,
        )
        return outcome

    def _judge_canary(
        self, handle: TaskHandle, known: KnownAnswer, timeout_s: float | None
    ) -> CanaryOutcome:
        provider = handle.params.assignee
        tid = "0x" + handle.task_id.hex()

        outcome = functools.partial(
            CanaryOutcome, task_id=tid, provider=provider, source=known.source
        )

        self._await_reveal(handle, self.timeout_s if timeout_s is None else timeout_s)
        reveals = [
            e
            for e in self.market.events("ResultRevealed", task_id=handle.task_id)
            if e.block_number >= handle.posted_block
        ]
        if not reveals:
            return outcome(
                status="unrevealed", reason="no result revealed; the market slashes the no-show"
            )
        reveal = reveals[0]
        result_cid = str(reveal.args["resultCid"])
        revealed_hash = "0x" + bytes(reveal.args["outputHash"]).hex()
        try:
            result = self._fetch_canary_result(result_cid, revealed_hash)
        except VerificationError as err:
            verdict = CanaryVerdict("failed", f"the revealed result is unusable: {err}")
        else:
            try:
                with self.verifier_lock:
                    verdict = check_canary(
                        known, handle.bundle, result, self.verifier, task_cid=handle.bundle_cid
                    )
            except VerificationError as err:
                return outcome(status="unchecked", reason=str(err), result_cid=result_cid)
        if verdict.passed:
            return outcome(status=verdict.status, reason=verdict.reason, result_cid=result_cid)
        return self._challenge_canary(handle, known, verdict, result_cid, revealed_hash, outcome)

    def _challenge_canary(
        self,
        handle: TaskHandle,
        known: KnownAnswer,
        verdict: CanaryVerdict,
        result_cid: str,
        revealed_hash: str,
        outcome: functools.partial[CanaryOutcome],
    ) -> CanaryOutcome:
        bond = self.market.challenge_bond
        cap = self.policy.max_spend_per_task_wei
        if cap is not None and bond > cap:
            return outcome(
                status="failed",
                reason=f"{verdict.reason}; not challenged: the bond of {bond} wei is over "
                f"policy.max_spend_per_task_wei={cap}",
                result_cid=result_cid,
            )
        evidence = canary_evidence(
            chain_id=self.chain.chain_id,
            market=self.market.address,
            task_id="0x" + handle.task_id.hex(),
            bundle_cid=handle.bundle_cid,
            provider=handle.params.assignee,
            result_cid=result_cid,
            output_hash=revealed_hash,
            model_sha256=known.model_sha256,
            verdict=verdict,
        )
        try:
            if self.balance_wei() < bond:
                raise InsufficientFunds(
                    f"requester {self.address} holds {self.balance_wei()} wei, the challenge "
                    f"bond is {bond}"
                )
            evidence_cid = publish_evidence(self.store, evidence)
            receipt = self.market.challenge(
                handle.params, evidence_cid, sender=self.address, value=bond
            )
        except ChefsplanError as err:
            return outcome(
                status="failed",
                reason=f"{verdict.reason}; challenge failed: {err}",
                result_cid=result_cid,
            )
        return outcome(
            status="failed",
            reason=verdict.reason,
            result_cid=result_cid,
            evidence_cid=evidence_cid,
            challenge_tx=receipt.tx_hash,
            bond_wei=bond,
        )

    def _fetch_canary_result(self, result_cid: str, revealed_hash: str) -> ResultBundle:
        limit = self.requester.max_result_bytes
        try:
            result = decode_result_bundle(self.store.get(result_cid, max_bytes=limit))
        except (StorageError, BundleError, IdentityError) as err:
            raise VerificationError(f"result {result_cid}: {err}") from err
        if result.output_hash != revealed_hash:
            raise VerificationError(
                f"result {result_cid} hashes to {result.output_hash}, {revealed_hash} was revealed"
            )
        return result

    def _await_reveal(self, handle: TaskHandle, timeout_s: float) -> None:
        """Move the task on until it is revealed — not further: its window must stay open."""
        deadline = time.monotonic() + timeout_s
        with contextlib.ExitStack() as stack:
            if self.driver is not None:
                stack.enter_context(self._driving)
            while True:
                state = self.market.task_state(handle.task_id)
                if not state.open or state.revealed >= handle.params.replicas:
                    return
                if self.chain.block_timestamp() > handle.params.reveal_deadline:
                    return
                if time.monotonic() > deadline:
                    return
                if self.driver is not None:
                    self.driver.step()
                else:
                    time.sleep(0.25)

    def handle_of(self, task_id: str) -> TaskHandle:
        """The handle of a task already posted (by anyone), rebuilt from the chain and store.

        Raises:
            MarketError: No such task on this market.
            ChainError: ``task_id`` is not 32 bytes of hex.
            StorageError, BundleError: The task's bundle cannot be fetched or is invalid.
        """
        record = self.market.get_task(task_id)
        if record is None:
            raise MarketError(
                f"no task {task_id} on the market at {self.market.address}; check the id "
                "(delegate_task's receipt carries it)"
            )
        post = self.market.events("TaskPosted", task_id=record.task_id)[0]
        bundle = decode_task_bundle(self.store.get(record.bundle_cid))
        return TaskHandle(
            task_id=record.task_id,
            params=record.params,
            bundle_cid=record.bundle_cid,
            bundle=bundle,
            post_tx=post.tx_hash,
            post_gas=self.chain.gas_used(post.tx_hash),
            posted_block=record.posted_block,
        )

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the index and whatever this handle opened (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.index.close()
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Network(chain={self.chain.endpoint!r}, requester={self.identity.did!r}, "
            f"verifier={'yes' if self.verifier else 'no'})"
        )


@contextlib.contextmanager
def _closing_on_error(stack: contextlib.ExitStack) -> Iterator[contextlib.ExitStack]:
    try:
        yield stack
    except BaseException:
        stack.close()
        raise


def connect(
    settings: Settings | None = None,
    *,
    identity: Identity | None = None,
    verifier: LLMBackend | None = None,
    open_verifier: bool = False,
    timeout_s: float = 600.0,
) -> Network:
    """Open the network the settings describe and return the app's handle on it.

    With the default settings (``chain.backend = "embedded"``) everything runs in this process
    and offline: an in-process EVM with the contracts deployed, the configured content store
    and a new requester identity funded with :data:`EMBEDDED_REQUESTER_FUNDS_WEI`. It has no
    provider nodes until some register on that chain (``Devnet.create(...).network`` is the
    same handle over a network with nodes). With ``chain.backend = "jsonrpc"`` it talks to the
    chain at ``chain.rpc_url`` and attaches to ``chain.contracts``; the requester's key comes
    from ``identity`` or the keystore (``keystore``, passphrase in
    ``$CHEFSPLAN_KEYSTORE_PASSPHRASE``); the store is ``[storage]`` (``kubo`` for an IPFS
    daemon).

    Args:
        settings: The settings (default: :func:`~chefsplan_agents.config.load_settings`, which
            reads ``chefsplan.toml`` and ``CHEFSPLAN_*`` variables).
        identity: The requester's identity (default: new on the embedded chain, the keystore
            on a real one).
        verifier: A local model to re-score results with (the caller keeps ownership).
        open_verifier: Open ``[llm]`` as the verifier (closed with the network).
        timeout_s: Default wall-clock seconds to wait for a task.

    Returns:
        The handle; use it as a context manager.

    Raises:
        ConfigError: Bad settings, e.g. a JSON-RPC chain without ``chain.contracts``.
        ChainUnavailable, StoreUnavailable: The chain node or the IPFS daemon does not answer.
        KeystoreError: No usable requester key.
        LLMError: The verifier model cannot be opened.
    """
    settings = settings or load_settings()
    embedded = settings.chain.backend == "embedded"
    if not embedded and not settings.chain.contracts:
        raise ConfigError(
            "chain.contracts is empty: a requester on a real chain attaches to deployed "
            "contracts; set their addresses (`chefsplan chain deploy` prints them)"
        )
    with _closing_on_error(contextlib.ExitStack()) as stack:
        if identity is None and not embedded:
            identity = load_keystore(settings.keystore_path)
        chain = stack.enter_context(open_chain(settings.chain))
        deployment = open_deployment(chain, settings.chain)
        store = stack.enter_context(open_store(settings.storage, settings.blockstore_path))
        if identity is None:
            identity = Identity.generate()
            chain.transfer(identity.address, EMBEDDED_REQUESTER_FUNDS_WEI)
        registry = RegistryClient(deployment.registry)
        market = MarketClient(deployment.market, from_block=deployment.deployed_at)
        requester = Requester(identity, chain, market, store, registry=registry)
        if verifier is None and open_verifier:
            verifier = stack.enter_context(open_backend(settings.llm))
        on_close = stack.pop_all()
    log.info("connected to %s as %s", chain.endpoint, identity.did)
    return Network(
        chain=chain,
        deployment=deployment,
        store=store,
        requester=requester,
        registry=registry,
        market=market,
        verifier=verifier,
        policy=settings.policy,
        timeout_s=timeout_s,
        on_close=on_close.close,
    )
