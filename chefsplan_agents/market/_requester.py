"""The requester's side of a delegated task: post a signed bundle, wait, verify the result.

:meth:`Requester.delegate` signs a :class:`~chefsplan_agents.bundles.TaskBundle`, stores it,
and posts the task with its bounty escrowed; :meth:`Requester.wait_result` follows the task's
events until it settles, fetches the winning :class:`~chefsplan_agents.bundles.ResultBundle`
by CID (the store re-hashes it), checks its signature, its task CID and its output hash against
the hash settled on chain, and returns a :class:`DelegationReceipt`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chefsplan_agents.bundles import (
    DEFAULT_MAX_BUNDLE_BYTES,
    DEFAULT_TASK_MAX_TOKENS,
    ChatMessage,
    GenerationParams,
    ModelRequirement,
    ResultBundle,
    TaskBundle,
    decode_result_bundle,
    encode_bundle,
    sign_bundle,
)
from chefsplan_agents.chain import Chain, Event
from chefsplan_agents.errors import (
    BundleError,
    ChainError,
    DelegationTimeout,
    IdentityError,
    MarketError,
    NoQuorum,
    StorageError,
    TxReverted,
    VerificationError,
)
from chefsplan_agents.identity import Identity
from chefsplan_agents.market._client import MarketClient, check_assignment
from chefsplan_agents.market._records import (
    ChallengeState,
    ReplicaState,
    Settlement,
    TaskParams,
    TaskResult,
    TaskStateRecord,
)
from chefsplan_agents.registry import RegistryClient
from chefsplan_agents.storage import ContentStore

__all__ = [
    "DelegationProgress",
    "DelegationReceipt",
    "ReplicaReceipt",
    "Requester",
    "TaskHandle",
    "Timeouts",
]

log = logging.getLogger(__name__)

_ZERO32 = b"\x00" * 32


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


@dataclass(frozen=True)
class Timeouts:
    """A task's windows, in chain seconds.

    Attributes:
        claim_window: From posting until claims close.
        commit_timeout: How long a claimer has to commit.
        reveal_window: Reveals after the commit phase.
        challenge_window: Between reveals closing and settlement (0: settle on the last reveal).
    """

    claim_window: int = 600
    commit_timeout: int = 300
    reveal_window: int = 600
    challenge_window: int = 0


@dataclass(frozen=True)
class TaskHandle:
    """A posted task, as :meth:`Requester.wait_result` needs it.

    Attributes:
        task_id: The on-chain task id.
        params: The task's terms.
        bundle_cid: CID of the signed TaskBundle.
        bundle: The signed TaskBundle.
        post_tx: The ``postTask`` transaction.
        post_gas: Gas it used.
    """

    task_id: bytes
    params: TaskParams
    bundle_cid: str
    bundle: TaskBundle
    post_tx: str
    post_gas: int
    posted_block: int = 0


@dataclass(frozen=True)
class DelegationProgress:
    """How far a delegated task has come (counts of replicas).

    Attributes:
        stage: ``posted``, ``claimed``, ``committed``, ``revealed`` or ``finalized``: the
            furthest step any replica reached.
        replicas: Replicas the task wants.
        claimed: Replicas claimed.
        committed: Replicas committed.
        revealed: Replicas revealed.
    """

    stage: str
    replicas: int
    claimed: int = 0
    committed: int = 0
    revealed: int = 0


@dataclass(frozen=True)
class ReplicaReceipt:
    """One provider's part in a task.

    Attributes:
        did: The provider's DID (from the registry; ``None`` without a registry client).
        address: Its EVM address.
        output_hash: The output hash it revealed (``None`` if it did not).
        claim_tx: Its ``claim`` transaction.
        commit_tx: Its commitment (the claim itself when it claimed and committed at once).
        reveal_tx: Its reveal (``None`` if it did not).
    """

    did: str | None
    address: str
    output_hash: str | None
    claim_tx: str
    commit_tx: str | None
    reveal_tx: str | None

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON values."""
        return {
            "did": self.did,
            "address": self.address,
            "output_hash": self.output_hash,
            "claim_tx": self.claim_tx,
            "commit_tx": self.commit_tx,
            "reveal_tx": self.reveal_tx,
        }


@dataclass(frozen=True)
class DelegationReceipt:
    """A settled, verified delegated task.

    Attributes:
        task_id: ``0x`` task id.
        bundle_cid: CID of the TaskBundle.
        result_cid: CID of the winning ResultBundle.
        output: The accepted output text.
        output_hash: Its hash, as settled on chain.
        replicas: Every provider that claimed, in claim order.
        post_tx: The ``postTask`` transaction.
        finalize_tx: The transaction that settled the task.
        gas_used: Gas of every transaction of the task (post, claims, commits, reveals,
            settlement).
        settlement: The ``TaskFinalized`` event.
        result: The winning ResultBundle (signature checked).
    """

    task_id: str
    bundle_cid: str
    result_cid: str
    output: str
    output_hash: str
    replicas: tuple[ReplicaReceipt, ...]
    post_tx: str
    finalize_tx: str
    gas_used: int
    settlement: Settlement = field(repr=False)
    result: ResultBundle = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        """The receipt as one JSON object (what ``chefsplan devnet --json`` prints)."""
        return {
            "task_id": self.task_id,
            "bundle_cid": self.bundle_cid,
            "result_cid": self.result_cid,
            "output": self.output,
            "output_hash": self.output_hash,
            "replicas": [r.to_json() for r in self.replicas],
            "post_tx": self.post_tx,
            "finalize_tx": self.finalize_tx,
            "gas_used": self.gas_used,
            "winners": self.settlement.winners,
            "payout_per_winner": str(self.settlement.payout_per_winner),
        }


ProgressCallback = Callable[[DelegationProgress], None]


class Requester:
    """Delegates tasks to the provider nodes of a market.

    Args:
        identity: The requester's DID (signs bundles) and EVM account (pays bounties); its key
            is added to ``chain``.
        chain: The chain the market lives on.
        market: The ``TaskMarket`` client.
        store: Where bundles go and results come from.
        registry: The ``AgentRegistry`` client, to name each replica's DID and check that the
            winning result was signed by the provider that revealed it (optional).
        max_result_bytes: A result larger than this is refused unread (as unusable).
    """

    def __init__(
        self,
        identity: Identity,
        chain: Chain,
        market: MarketClient,
        store: ContentStore,
        *,
        registry: RegistryClient | None = None,
        max_result_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
    ) -> None:
        self.identity = identity
        self.max_result_bytes = max_result_bytes
        self.chain = chain
        self.market = market
        self.store = store
        self.registry = registry
        self.address = chain.add_account(identity.export_secrets()[1])
        # Providers' registered DIDs, read once each; re-read when a result's signer is not
        # among them (the provider may have re-registered under a new DID).
        self._dids: dict[str, str | None] = {}

    # ------------------------------------------------------------------ posting

    def bundle(
        self,
        prompt: str,
        *,
        model: ModelRequirement | str,
        params: GenerationParams | None = None,
        system: str | None = None,
    ) -> TaskBundle:
        """A chat task asking ``prompt``, signed by this requester.

        Args:
            prompt: The user's message.
            model: The model requirement, or a model's sha256 (64 hex) or name.
            params: Generation settings (default: greedy, the determinism profile).
            system: An optional system message.
        """
        if isinstance(model, str):
            is_hash = len(model) == 64 and all(c in "0123456789abcdef" for c in model)
            model = ModelRequirement(sha256=model) if is_hash else ModelRequirement(name=model)
        messages = [ChatMessage(role="user", content=prompt)]
        if system:
            messages.insert(0, ChatMessage(role="system", content=system))
        bundle = TaskBundle(
            kind="chat",
            messages=tuple(messages),
            params=params or GenerationParams(max_tokens=DEFAULT_TASK_MAX_TOKENS),
            model=model,
            requester_did=self.identity.did,
        )
        return sign_bundle(bundle, self.identity)

    def delegate(
        self,
        bundle_or_prompt: TaskBundle | str,
        *,
        replicas: int = 1,
        quorum: int | None = None,
        bounty_per_replica: int,
        bond: int,
        timeouts: Timeouts | None = None,
        model: ModelRequirement | str | None = None,
        params: GenerationParams | None = None,
        assignee: str | None = None,
    ) -> TaskHandle:
        """Sign and store a task bundle, then post the task with its bounty escrowed.

        Args:
            bundle_or_prompt: A TaskBundle (signed here), or a prompt to wrap in a chat task.
            replicas: Providers that run the task (1 to 16).
            quorum: Matching outputs needed (default: a simple majority).
            bounty_per_replica: Wei paid to each winning replica.
            bond: Wei each provider posts when claiming.
            timeouts: The task's windows.
            model: Required with a prompt: the model's sha256, name or requirement.
            params: Generation settings for a prompt.
            assignee: Address of the one provider that may take the task (picked from the
                registry); default: any active provider. An assigned task has one replica;
                with no challenge window its provider runs it at once and settles it in one
                transaction (``claimAndFinalize``), the fastest way to a result.

        Returns:
            The handle to pass to :meth:`wait_result`.

        Raises:
            MarketError: Bad replica/quorum counts, or a prompt without a model.
            BundleError: The bundle names another requester DID.
            StorageError: The bundle cannot be stored.
            TxReverted: The market refused the task.
        """
        if not 1 <= replicas <= 16:
            raise MarketError(f"replicas must be between 1 and 16 (got {replicas})")
        if quorum is not None and not replicas // 2 < quorum <= replicas:
            raise MarketError(
                f"quorum {quorum} is invalid for {replicas} replicas: it must be more than "
                f"half of them and at most all ({replicas // 2 + 1}..{replicas})"
            )
        if bounty_per_replica <= 0 or bond <= 0:
            raise MarketError("bounty_per_replica and bond must be positive wei amounts")
        check_assignment(assignee, replicas)  # before the bundle is stored
        if isinstance(bundle_or_prompt, str):
            if model is None:
                raise MarketError("a prompt needs a model: pass model=<sha256 or name>")
            bundle = self.bundle(bundle_or_prompt, model=model, params=params)
        else:
            bundle = sign_bundle(bundle_or_prompt, self.identity)
        data = encode_bundle(bundle)
        bundle_cid = self.store.put(data)
        t = timeouts or Timeouts()
        terms = self.market.new_task(
            hashlib.sha256(data).digest(),
            bounty_per_replica=bounty_per_replica,
            bond=bond,
            replicas=replicas,
            quorum=quorum,
            claim_window=t.claim_window,
            commit_timeout=t.commit_timeout,
            reveal_window=t.reveal_window,
            challenge_window=t.challenge_window,
            requester=self.address,
            assignee=assignee,
        )
        posted = self.market.post_task(terms, bundle_cid)
        log.info("posted task %s (bundle %s)", _hex(posted.task_id), bundle_cid)
        return TaskHandle(
            task_id=posted.task_id,
            params=terms,
            bundle_cid=bundle_cid,
            bundle=bundle,
            post_tx=posted.receipt.tx_hash,
            post_gas=posted.receipt.gas_used,
            posted_block=posted.receipt.block_number,
        )

    # ------------------------------------------------------------------ waiting

    def progress(self, handle: TaskHandle) -> DelegationProgress:
        """Where the task stands now, from the market's events."""
        return self._progress(handle, self._task_events(handle))

    def _progress(self, handle: TaskHandle, events: _TaskEvents) -> DelegationProgress:
        claims, reveals = events.named("ReplicaClaimed"), events.named("ResultRevealed")
        committers = events.committers()
        stage = "posted"
        if events.named("TaskFinalized"):
            stage = "finalized"
        elif reveals:
            stage = "revealed"
        elif committers:
            stage = "committed"
        elif claims:
            stage = "claimed"
        return DelegationProgress(
            stage=stage,
            replicas=handle.params.replicas,
            claimed=len(claims),
            committed=len(committers),
            revealed=len(reveals),
        )

    def _events(self, handle: TaskHandle, name: str) -> list[Event]:
        return self._task_events(handle).named(name)

    def _task_events(self, handle: TaskHandle) -> _TaskEvents:
        # One query for every event of the task; scanning from the task's own block keeps
        # polls cheap on a long chain.
        return _TaskEvents(
            self.market.contract.get_logs(
                _TASK_EVENTS, from_block=handle.posted_block, filters={"taskId": handle.task_id}
            )
        )

    def wait_result(
        self,
        handle: TaskHandle,
        timeout: float = 600.0,
        on_progress: ProgressCallback | None = None,
        *,
        poll_interval: float = 0.25,
        step: Callable[[], object] | None = None,
    ) -> DelegationReceipt:
        """Wait until the task settles, then fetch and verify the winning result.

        Once the settlement time is reached (reveals closed, or every replica revealed), the
        requester settles the task itself if no provider did.

        Args:
            handle: From :meth:`delegate`.
            timeout: Wall-clock seconds to wait.
            on_progress: Called whenever the progress changes (for live status).
            poll_interval: Seconds between polls when ``step`` is not given.
            step: Called instead of sleeping between polls (a devnet drives its nodes here).

        Returns:
            The verified receipt.

        Raises:
            DelegationTimeout: Not settled within ``timeout``.
            NoQuorum: Settled without an accepted output.
            VerificationError: The result is missing, badly signed, for another task, or its
                output does not hash to the settled output hash.
        """
        deadline = time.monotonic() + timeout
        last: DelegationProgress | None = None
        if step is not None:
            step()  # a task just posted has nothing to report yet: let the network move first
        while True:
            events = self._task_events(handle)
            if on_progress is not None:
                now = self._progress(handle, events)
                if now != last:
                    on_progress(now)
                last = now
            finalized = events.named("TaskFinalized")
            if finalized:
                return self._receipt(handle, finalized[0], events)
            if events.named("TaskCancelled"):
                raise MarketError(f"task {_hex(handle.task_id)} was cancelled, not settled")
            state = self.market.task_state(handle.task_id)
            if not state.open:
                continue  # settled between the two reads: its events are there now
            if self._settle_if_due(handle, state):
                continue
            if time.monotonic() > deadline:
                raise DelegationTimeout(
                    f"task {_hex(handle.task_id)} did not settle within {timeout:g} s "
                    f"({state.claimed}/{handle.params.replicas} claimed, {state.revealed} "
                    "revealed); are provider nodes running?"
                )
            if step is not None:
                step()
            else:
                time.sleep(poll_interval)

    def _settle_if_due(self, handle: TaskHandle, state: TaskStateRecord) -> bool:
        """Settle the task if its time has come and nobody did; ``True`` if it settled."""
        p = handle.params
        if state.challenge is ChallengeState.PENDING:
            return False  # a decided challenge no longer holds the settlement
        now = self.chain.block_timestamp()
        if state.revealed == p.replicas:
            # Usually the last reveal settled it already (revealAndFinalize); if not, settle
            # once the challenge window after the last reveal has passed.
            if now < state.ready_at + p.challenge_window:
                return False
        elif now <= p.reveal_deadline + p.challenge_window:
            return False
        try:
            scoped = MarketClient(self.market.contract, from_block=handle.posted_block)
            receipt = scoped.finalize(p, sender=self.address)
        except TxReverted as err:  # a provider settled it first, or a challenge came in
            log.debug("finalize of %s reverted: %s", _hex(handle.task_id), err)
            return False
        log.info("settled task %s (tx %s)", _hex(handle.task_id), receipt.tx_hash)
        return True

    def reopen_stale(self, handle: TaskHandle) -> list[str]:
        """Reopen every replica of the task whose provider claimed but missed its commit
        deadline: its bond goes to this requester and the slot is free for another provider.

        Returns:
            The addresses of the providers whose claims were reopened (empty if none was due).
        """
        if not self.market.task_state(handle.task_id).open:
            return []
        now = self.chain.block_timestamp()
        reopened = []
        for claim in self._events(handle, "ReplicaClaimed"):
            provider = str(claim.args["provider"])
            replica = self.market.replica(handle.task_id, provider)
            if replica.state is not ReplicaState.CLAIMED or now <= replica.commit_by:
                continue
            try:
                receipt = self.market.reopen(handle.params, provider, sender=self.address)
            except TxReverted as err:  # it committed, or someone reopened it, just now
                log.debug("reopen of %s on %s reverted: %s", provider, _hex(handle.task_id), err)
                continue
            log.info(
                "reopened %s's stale claim on task %s (tx %s)",
                provider,
                _hex(handle.task_id),
                receipt.tx_hash,
            )
            reopened.append(provider)
        return reopened

    # ------------------------------------------------------------------ the receipt

    def _receipt(
        self, handle: TaskHandle, finalized: Event, events: _TaskEvents
    ) -> DelegationReceipt:
        settlement = Settlement.from_event(finalized)
        tid = _hex(handle.task_id)
        if settlement.result is TaskResult.OVERTURNED:
            raise NoQuorum(
                f"task {tid}'s winning output was overturned: a challenge panel found it "
                "forged; bounty refunded, the providers that gave it slashed"
            )
        if settlement.result is not TaskResult.ACCEPTED:
            raise NoQuorum(
                f"task {tid} settled as {settlement.result.name.lower().replace('_', ' ')}: no "
                f"output reached the quorum of {handle.params.quorum}; bounty refunded"
            )
        settled_hash = _hex(settlement.output_hash)
        replicas = self._replicas(events)
        result_cid, result, replicas = self._winning_result(
            handle, settlement, events, settled_hash, replicas
        )
        txs = {finalized.tx_hash}
        for r in replicas:
            txs.update(t for t in (r.claim_tx, r.commit_tx, r.reveal_tx) if t)
        txs.discard(handle.post_tx)  # its gas is known from posting
        gas = handle.post_gas + sum(self._gas_of(tx) for tx in txs)
        return DelegationReceipt(
            task_id=tid,
            bundle_cid=handle.bundle_cid,
            result_cid=result_cid,
            output=result.output,
            output_hash=settled_hash,
            replicas=replicas,
            post_tx=handle.post_tx,
            finalize_tx=finalized.tx_hash,
            gas_used=gas,
            settlement=settlement,
            result=result,
        )

    def _did_of(self, provider: str, *, refresh: bool) -> str | None:
        if self.registry is None:
            return None
        if refresh or provider not in self._dids:
            record = self.registry.get_provider(provider)
            self._dids[provider] = record.did if record else None
        return self._dids[provider]

    def _replicas(
        self, events: _TaskEvents, *, refresh: bool = False
    ) -> tuple[ReplicaReceipt, ...]:
        commits = {str(e.args["provider"]): e.tx_hash for e in events.named("ResultCommitted")}
        reveals = {str(e.args["provider"]): e for e in events.named("ResultRevealed")}
        out = []
        for claim in events.named("ReplicaClaimed"):
            provider = str(claim.args["provider"])
            reveal = reveals.get(provider)
            commit_tx = commits.get(provider)
            if bytes(claim.args["commitment"]) != _ZERO32:
                commit_tx = claim.tx_hash  # claimed and committed in one transaction
            elif commit_tx is None and reveal is not None:
                commit_tx = reveal.tx_hash  # the last committer revealed straight away
            out.append(
                ReplicaReceipt(
                    did=self._did_of(provider, refresh=refresh),
                    address=provider,
                    output_hash=_hex(bytes(reveal.args["outputHash"])) if reveal else None,
                    claim_tx=claim.tx_hash,
                    commit_tx=commit_tx,
                    reveal_tx=reveal.tx_hash if reveal else None,
                )
            )
        return tuple(out)

    def _winning_result(
        self,
        handle: TaskHandle,
        settlement: Settlement,
        events: _TaskEvents,
        settled_hash: str,
        replicas: tuple[ReplicaReceipt, ...],
    ) -> tuple[str, ResultBundle, tuple[ReplicaReceipt, ...]]:
        """The first usable result among those revealed with the settled output hash.

        Whoever settles picks which winner's CID ``TaskFinalized`` carries; a co-winner that
        revealed the right hash with a junk CID (missing, oversized, unsigned, another task's)
        must not cost the requester the result, so every other winner's CID is tried next.
        """
        candidates = [settlement.result_cid]
        for reveal in events.named("ResultRevealed"):
            cid = str(reveal.args["resultCid"])
            if bytes(reveal.args["outputHash"]) == settlement.output_hash and cid not in candidates:
                candidates.append(cid)
        failures: list[VerificationError] = []
        refreshed = False
        for cid in candidates:
            try:
                return cid, self._fetch_result(handle, cid, settled_hash, replicas), replicas
            except _UnknownSigner as err:
                if refreshed:
                    failures.append(err)
                    continue
                # The provider may have re-registered under another DID: read them again.
                replicas, refreshed = self._replicas(events, refresh=True), True
                try:
                    return cid, self._fetch_result(handle, cid, settled_hash, replicas), replicas
                except VerificationError as again:
                    failures.append(again)
            except VerificationError as err:
                failures.append(err)
            log.warning("task %s: result %s unusable: %s", _hex(handle.task_id), cid, failures[-1])
        if len(failures) == 1:
            raise failures[0]
        raise VerificationError(
            f"none of the {len(candidates)} results revealed with the settled output is usable; "
            f"the first: {failures[0]}"
        )

    def _fetch_result(
        self,
        handle: TaskHandle,
        result_cid: str,
        settled_hash: str,
        replicas: tuple[ReplicaReceipt, ...],
    ) -> ResultBundle:
        try:
            data = self.store.get(result_cid, max_bytes=self.max_result_bytes)
            result = decode_result_bundle(data, max_bytes=self.max_result_bytes)
        except (StorageError, BundleError, IdentityError) as err:
            raise VerificationError(f"winning result {result_cid} is unusable: {err}") from err
        if result.output_hash != settled_hash:
            raise VerificationError(
                f"result {result_cid} has output hash {result.output_hash}, the chain settled "
                f"{settled_hash}"
            )
        if result.task_cid != handle.bundle_cid:
            raise VerificationError(
                f"result {result_cid} answers task {result.task_cid}, not {handle.bundle_cid}"
            )
        winners = {r.did for r in replicas if r.output_hash == settled_hash and r.did}
        if self.registry is not None and result.node_did not in winners:
            raise _UnknownSigner(
                f"result {result_cid} is signed by {result.node_did}, which is not a registered "
                "provider that revealed the settled output"
            )
        return result

    def _gas_of(self, tx_hash: str) -> int:
        try:
            return self.chain.gas_used(tx_hash)
        except ChainError as err:  # a missing gas figure must not lose a settled result
            log.warning("no receipt for %s: %s", tx_hash, err)
            return 0


class _UnknownSigner(VerificationError):
    """The result's signer is not the DID on record for any winning replica."""


_TASK_EVENTS = (
    "ReplicaClaimed",
    "ResultCommitted",
    "ResultRevealed",
    "ReplicaReopened",
    "TaskChallenged",
    "TaskFinalized",
    "TaskCancelled",
)


class _TaskEvents:
    """The market events of one task (since it was posted), grouped by name."""

    def __init__(self, events: list[Event]) -> None:
        self._by_name: dict[str, list[Event]] = {}
        for event in events:
            self._by_name.setdefault(event.name, []).append(event)

    def named(self, name: str) -> list[Event]:
        return self._by_name.get(name, [])

    def committers(self) -> set[str]:
        """Providers whose result is fixed: committed at or after claiming, or (the last one)
        revealed without a commitment."""
        out = {str(e.args["provider"]) for e in self.named("ResultCommitted")}
        out |= {
            str(e.args["provider"])
            for e in self.named("ReplicaClaimed")
            if bytes(e.args["commitment"]) != _ZERO32
        }
        out |= {str(e.args["provider"]) for e in self.named("ResultRevealed")}
        return out
