"""Canary tasks: prompts whose greedy answer the requester knows before it asks.

A canary is posted exactly like one of the requester's real tasks — same ``Network.delegate``
call, requester DID, bundle fields and parameters, a fresh nonce, the requester's challenge
window and the bounty a real task of that length pays the provider — so a provider cannot
tell it from real work and must answer every task honestly to pass the ones that are checked.

Its answer is known in advance (:class:`KnownAnswer`), from one of two sources:

* ``verifier``: the requester's own verifier model ran the prompt once, greedily
  (:meth:`CanaryPool.add_prompt`; one generation per canary prompt, reusable for any number
  of providers);
* ``rescored``: a real result of the requester's that passed a *full* re-score
  (:meth:`CanaryPool.add_rescored`; free — the work was paid for already).

Checking the canary's result is free when it matches (output hash and token ids). A mismatch
is not yet a cheat: llama.cpp is not bit-identical across hardware and thread counts, so an
honest node may break a near-tie the other way. :func:`check_canary` then re-scores the result
in full (:func:`~chefsplan_agents.verify.rescore_result`); only a failed re-score is a failed
canary, which the requester challenges on chain with :func:`canary_evidence`.

What gives a canary away, and what is done about it (docs/verification.md, "Canary tasks"):

* a prompt the provider saw before (it may cache honest answers): each known answer remembers
  which providers have run its prompt and is never sent to one of them again;
* a prompt unlike the requester's traffic: canary prompts come from the app (its own pool) or
  from its own recent real prompts;
* parameters, window or bounty unlike real tasks: the network posts canaries through the real
  path with a real task's terms, next to a real task to the same provider (before or after it,
  by a coin flip).

:class:`CanaryPolicy` decides when a provider gets one: each new provider's first tasks, then
a secret draw at ``rate`` per real task.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from chefsplan_agents.bundles import (
    ChatMessage,
    GenerationParams,
    ModelRequirement,
    ResultBundle,
    TaskBundle,
    output_hash,
)
from chefsplan_agents.errors import VerificationError
from chefsplan_agents.llm import LLMBackend
from chefsplan_agents.node import task_prompt
from chefsplan_agents.verify._evidence import ChallengeEvidence
from chefsplan_agents.verify._policy import ProviderStats
from chefsplan_agents.verify._rescore import RescoreVerdict, rescore_result

__all__ = [
    "CanaryOutcome",
    "CanaryPolicy",
    "CanaryPool",
    "CanaryVerdict",
    "Canaries",
    "KnownAnswer",
    "canary_bounty",
    "canary_evidence",
    "check_canary",
    "known_answer",
]

AnswerSource = Literal["verifier", "rescored"]

# A placeholder signer for the bundle the verifier runs the prompt from: the prompt a node
# runs depends only on the messages (``task_prompt``), never on who signed them.
_ANY_DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"


def canary_bounty(price_per_1k_tokens_wei: int, max_tokens: int) -> int:
    """The bounty a real task of ``max_tokens`` pays a provider advertising this price.

    The tools and the Matching agent price a task the same way (the provider's advertised
    price for ``max_tokens``, rounded up, at least 1 wei); a canary priced otherwise would be
    told apart by its bounty alone.
    """
    if price_per_1k_tokens_wei < 0 or max_tokens < 1:
        raise VerificationError(
            f"a canary needs a price >= 0 and max_tokens >= 1 (got {price_per_1k_tokens_wei}, "
            f"{max_tokens})"
        )
    return max(1, -(-price_per_1k_tokens_wei * max_tokens // 1000))


@dataclass(frozen=True)
class KnownAnswer:
    """A prompt and the greedy answer its pinned model gives.

    Attributes:
        messages: The chat messages (what a real task of the requester carries).
        params: The generation parameters (greedy: the determinism profile).
        model_sha256: The model the answer is for.
        token_ids: The answer's token ids.
        text: The answer's text.
        output_hash: ``output_hash(text)``, as revealed on chain.
        source: ``verifier`` (generated once by the requester's model) or ``rescored`` (a real
            result that passed a full re-score).
    """

    messages: tuple[ChatMessage, ...]
    params: GenerationParams
    model_sha256: str
    token_ids: tuple[int, ...]
    text: str
    output_hash: str
    source: AnswerSource

    def __post_init__(self) -> None:
        if not self.messages:
            raise VerificationError("a known answer needs at least one chat message")
        if not self.params.greedy:
            raise VerificationError(
                "a known answer needs greedy parameters (temperature 0): only greedy answers "
                "are known in advance"
            )
        if self.output_hash != output_hash(self.text):
            raise VerificationError("a known answer's output_hash is not the hash of its text")

    @property
    def key(self) -> bytes:
        """What identifies the prompt (messages, parameters, model), as a SHA-256 digest."""
        parts = [self.model_sha256, self.params.model_dump_json()]
        parts += [f"{m.role}\x00{m.content}" for m in self.messages]
        return hashlib.sha256("\x01".join(parts).encode()).digest()

    def bundle(self, requester_did: str) -> TaskBundle:
        """An unsigned chat task asking this prompt, with a fresh nonce and time stamp: the
        fields a real task of the requester carries, and only those."""
        return TaskBundle(
            kind="chat",
            messages=self.messages,
            params=self.params,
            model=ModelRequirement(sha256=self.model_sha256),
            requester_did=requester_did,
        )


def _messages(prompt: str | Sequence[ChatMessage]) -> tuple[ChatMessage, ...]:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise VerificationError("a canary prompt is empty; give the text of a real request")
        return (ChatMessage(role="user", content=prompt),)
    messages = tuple(prompt)
    if not messages or not all(isinstance(m, ChatMessage) for m in messages):
        raise VerificationError("canary messages must be a non-empty list of ChatMessage")
    return messages


def known_answer(
    llm: LLMBackend, prompt: str | Sequence[ChatMessage], *, max_tokens: int = 256
) -> KnownAnswer:
    """Run ``prompt`` once on the requester's verifier model and keep its greedy answer.

    Costs one generation; the answer serves any number of providers of that model.

    Args:
        llm: The requester's verifier (it must run the model the canaries will pin).
        prompt: A user prompt, or chat messages.
        max_tokens: The ``max_tokens`` of the requester's real tasks (the tools default to 256).

    Raises:
        VerificationError: An empty prompt or a bad ``max_tokens``.
        LLMError: The model failed.
    """
    if not 1 <= max_tokens <= 1_000_000:
        raise VerificationError(f"max_tokens must be 1 to 1000000 (got {max_tokens})")
    messages = _messages(prompt)
    params = GenerationParams(max_tokens=max_tokens)
    task = TaskBundle(
        kind="chat",
        messages=messages,
        params=params,
        model=ModelRequirement(sha256=llm.info.sha256),
        requester_did=_ANY_DID,
    )
    gen = llm.complete(task_prompt(task, llm), params)
    return KnownAnswer(
        messages=messages,
        params=params,
        model_sha256=llm.info.sha256,
        token_ids=tuple(gen.token_ids),
        text=gen.text,
        output_hash=output_hash(gen.text),
        source="verifier",
    )


def _from_rescored(task: TaskBundle, result: ResultBundle, verdict: RescoreVerdict) -> KnownAnswer:
    if not verdict.passed or verdict.mode != "full":
        raise VerificationError(
            "only a result that passed a full re-score is a known answer "
            f"(this one: passed={verdict.passed}, mode={verdict.mode})"
        )
    if task.kind != "chat" or not task.messages or task.model.sha256 is None:
        raise VerificationError("a known answer needs a chat task that pins a model sha256")
    if result.model_sha256 != task.model.sha256:
        raise VerificationError("the result names another model than its task pins")
    return KnownAnswer(
        messages=task.messages,
        params=task.params,
        model_sha256=task.model.sha256,
        token_ids=tuple(result.token_ids),
        text=result.output,
        output_hash=result.output_hash,
        source="rescored",
    )


class CanaryPool:
    """The requester's known answers, and which providers have seen each prompt.

    Thread-safe. Holds at most ``max_size`` answers; the oldest goes first.

    Args:
        max_size: Answers kept.
    """

    def __init__(self, max_size: int = 256) -> None:
        if max_size < 1:
            raise VerificationError(f"a canary pool holds at least 1 answer (got {max_size})")
        self.max_size = max_size
        self._answers: dict[bytes, KnownAnswer] = {}
        self._seen: dict[bytes, set[str]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._answers)

    def add(self, answer: KnownAnswer, *, seen_by: Sequence[str] = ()) -> None:
        """Keep ``answer``; ``seen_by`` are providers that ran its prompt already."""
        with self._lock:
            key = answer.key
            self._answers.pop(key, None)
            self._answers[key] = answer
            self._seen.setdefault(key, set()).update(a.lower() for a in seen_by)
            while len(self._answers) > self.max_size:
                oldest = next(iter(self._answers))
                del self._answers[oldest]
                self._seen.pop(oldest, None)

    def add_prompt(
        self, llm: LLMBackend, prompt: str | Sequence[ChatMessage], *, max_tokens: int = 256
    ) -> KnownAnswer:
        """Generate a prompt's answer with ``llm`` (:func:`known_answer`) and keep it."""
        answer = known_answer(llm, prompt, max_tokens=max_tokens)
        self.add(answer)
        return answer

    def add_rescored(
        self, task: TaskBundle, result: ResultBundle, verdict: RescoreVerdict, provider: str
    ) -> KnownAnswer:
        """Keep a real result that passed a full re-score as a known answer (free).

        ``provider`` (who produced it) has seen the prompt and never gets it as a canary.

        Raises:
            VerificationError: The verdict is not a passed full re-score, or the task is not a
                chat task pinning the result's model.
        """
        answer = _from_rescored(task, result, verdict)
        self.add(answer, seen_by=(provider,))
        return answer

    def draw(
        self, provider: str, model_sha256: str, *, max_tokens: int | None = None
    ) -> KnownAnswer | None:
        """A known answer for ``model_sha256`` whose prompt ``provider`` has not run.

        Prefers answers with ``max_tokens`` (the real task's); picks uniformly at random among
        the candidates. Call :meth:`mark_seen` once the canary is posted.

        Returns:
            The answer, or ``None`` when the pool holds none the provider has not seen.
        """
        who = provider.lower()
        with self._lock:
            fresh = [
                (k, a)
                for k, a in self._answers.items()
                if a.model_sha256 == model_sha256 and who not in self._seen.get(k, set())
            ]
            same = [(k, a) for k, a in fresh if a.params.max_tokens == max_tokens]
            pick = same or fresh
            if not pick:
                return None
            return pick[secrets.randbelow(len(pick))][1]

    def mark_seen(self, answer: KnownAnswer, provider: str) -> None:
        """Note that ``provider`` has run ``answer``'s prompt: it never gets it again."""
        with self._lock:
            key = answer.key
            if key in self._answers:
                self._seen.setdefault(key, set()).add(provider.lower())

    def seen_by(self, answer: KnownAnswer) -> frozenset[str]:
        """Providers (lower-case addresses) that have run ``answer``'s prompt."""
        with self._lock:
            return frozenset(self._seen.get(answer.key, set()))


@dataclass(frozen=True)
class CanaryPolicy:
    """When a provider gets a canary, decided at each real task assigned to it.

    A provider gets one with each of its first ``new_provider_canaries`` real tasks while it
    is new (fewer than ``established_wins`` tasks won, or a slash on record), then with
    probability ``rate`` per real task, drawn from a secret salt so it cannot predict which.
    A cheater on every task is caught by its first canary; one that cheats on a fraction
    ``f`` of tasks escapes ``n`` real tasks' canaries with probability ``(1 − rate·f)^n``.

    Attributes:
        rate: Chance an established provider's real task brings a canary along.
        new_provider_canaries: Canaries a new provider gets (one per real task).
        established_wins: Tasks won before a provider counts as established.
        salt: The requester's secret for the draw.
    """

    rate: float = 0.05
    new_provider_canaries: int = 2
    established_wins: int = 5
    salt: bytes = field(default_factory=lambda: secrets.token_bytes(16), repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise VerificationError(f"canary rate must be in [0, 1] (got {self.rate})")
        if self.new_provider_canaries < 0 or self.established_wins < 0:
            raise VerificationError(
                "new_provider_canaries and established_wins must be >= 0 "
                f"(got {self.new_provider_canaries}, {self.established_wins})"
            )

    def established(self, stats: ProviderStats | None) -> bool:
        """Whether a provider has enough clean history to be sampled, not always audited."""
        return stats is not None and stats.tasks_won >= self.established_wins and stats.slashed == 0

    def due(self, provider: str, stats: ProviderStats | None, sent: int, key: bytes) -> bool:
        """Whether a real task to ``provider`` brings a canary along.

        Args:
            provider: The provider's address.
            stats: Its registry stats (``None``: unknown, treated as new).
            sent: Canaries it got so far from this requester.
            key: Varies the draw per real task (the network passes fresh random bytes).
        """
        if not self.established(stats):
            return sent < self.new_provider_canaries
        draw = hashlib.sha256(self.salt + provider.lower().encode() + key).digest()
        return int.from_bytes(draw[:8], "big") < self.rate * 2**64


CanaryStatus = Literal["match", "drift", "failed"]


@dataclass(frozen=True)
class CanaryVerdict:
    """What checking a canary's result found.

    Attributes:
        status: ``match`` (the known answer, free to check), ``drift`` (another answer, but
            one the re-score accepts: honest near-tie drift on other hardware) or ``failed``.
        reason: One line ("" for a match).
        rescore: The full re-score, when the answer did not match.
    """

    status: CanaryStatus
    reason: str = ""
    rescore: RescoreVerdict | None = None

    @property
    def passed(self) -> bool:
        """The provider answered as an honest node would."""
        return self.status != "failed"


def check_canary(
    known: KnownAnswer,
    task: TaskBundle,
    result: ResultBundle,
    llm: LLMBackend | None,
    *,
    task_cid: str | None = None,
) -> CanaryVerdict:
    """Compare a canary's result with its known answer; re-score it in full if they differ.

    Args:
        known: The answer the canary was built from.
        task: The canary's task bundle as posted.
        result: The provider's result.
        llm: The requester's verifier (needed only when the answers differ).
        task_cid: The task's CID as posted.

    Raises:
        VerificationError: The answers differ and there is no verifier for the task's model
            (without a re-score, drift cannot be told from a cheat).
    """
    if (
        result.output_hash == known.output_hash
        and tuple(result.token_ids) == known.token_ids
        and result.model_sha256 == known.model_sha256
    ):
        return CanaryVerdict("match")
    if llm is None:
        raise VerificationError(
            "the canary's answer differs from the known one and there is no verifier to "
            "re-score it: set network.verifier to a model that runs the canary's model"
        )
    verdict = rescore_result(llm, task, result, task_cid=task_cid, mode="full")
    differs = _first_difference(known.token_ids, tuple(result.token_ids))
    if verdict.passed:
        return CanaryVerdict(
            "drift",
            f"answer differs from the known one at token {differs}; the full re-score accepts "
            "it (near-tie drift)",
            verdict,
        )
    return CanaryVerdict(
        "failed",
        f"answer differs from the known one at token {differs} and the full re-score fails "
        f"({verdict.check}): {verdict.reason}",
        verdict,
    )


def _first_difference(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def canary_evidence(
    *,
    chain_id: int,
    market: str,
    task_id: str,
    bundle_cid: str,
    provider: str,
    result_cid: str,
    output_hash: str,
    model_sha256: str,
    verdict: CanaryVerdict,
) -> ChallengeEvidence:
    """The evidence document of a failed canary (``check="canary"``).

    It points at what anyone can re-run: the canary's bundle and the provider's revealed
    result; a panelist re-scores the result itself rather than trusting the known answer
    (which stays the requester's secret, so the prompt can be used again on other providers).

    Raises:
        VerificationError: The verdict did not fail.
    """
    if verdict.passed:
        raise VerificationError("only a failed canary is evidence for a challenge")
    rescore = verdict.rescore
    return ChallengeEvidence.about(
        chain_id=chain_id,
        market=market,
        task_id=task_id,
        bundle_cid=bundle_cid,
        provider=provider,
        result_cid=result_cid,
        output_hash=output_hash,
        check="canary",
        reason=verdict.reason or "canary failed",
        model_sha256=model_sha256,
        mode=rescore.mode if rescore else "",
        max_gap=rescore.max_gap if rescore else 0.0,
        max_drift=rescore.max_drift if rescore else 0.0,
    )


OutcomeStatus = Literal["match", "drift", "failed", "unrevealed", "unchecked"]


@dataclass(frozen=True)
class CanaryOutcome:
    """One canary as the app sees it: sent, checked, and challenged if it failed.

    Attributes:
        task_id: The canary's task id (``0x`` + 64 hex).
        provider: The provider it was assigned to.
        status: ``match``, ``drift`` (passed after a full re-score), ``failed``,
            ``unrevealed`` (no result in time; the market slashes the no-show) or
            ``unchecked`` (it could not be checked, see ``reason``).
        source: Where its known answer came from.
        reason: One line.
        result_cid: The revealed result's CID.
        evidence_cid: The challenge's evidence document (a failed canary).
        challenge_tx: The ``challenge`` transaction (a failed canary).
        bond_wei: The challenge bond posted.
    """

    task_id: str
    provider: str
    status: OutcomeStatus
    source: AnswerSource
    reason: str = ""
    result_cid: str | None = None
    evidence_cid: str | None = None
    challenge_tx: str | None = None
    bond_wei: int = 0

    @property
    def passed(self) -> bool:
        """The provider answered the canary as an honest node would."""
        return self.status in ("match", "drift")

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON values."""
        return {
            "task_id": self.task_id,
            "provider": self.provider,
            "status": self.status,
            "source": self.source,
            "reason": self.reason,
            "result_cid": self.result_cid,
            "evidence_cid": self.evidence_cid,
            "challenge_tx": self.challenge_tx,
            "bond_wei": str(self.bond_wei),
        }


@dataclass
class Canaries:
    """A network's canary state: its policy, its known answers and what became of each canary.

    ``Network.canaries`` holds one. Canaries are sent only while ``enabled`` and the pool
    holds an answer the provider has not seen; see ``Network.send_canary``.

    Attributes:
        policy: When a provider gets a canary.
        pool: The known answers.
        enabled: Send canaries along with real tasks (off by default: each costs a bounty and
            needs a pool, a verifier for drift, and a challenge window on the real tasks).
        outcomes: Every canary checked so far, oldest first (at most ``max_outcomes``).
        max_outcomes: Outcomes kept.
    """

    policy: CanaryPolicy = field(default_factory=CanaryPolicy)
    pool: CanaryPool = field(default_factory=CanaryPool)
    enabled: bool = False
    outcomes: list[CanaryOutcome] = field(default_factory=list)
    max_outcomes: int = 1000
    _sent: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def sent_to(self, provider: str) -> int:
        """Canaries sent to ``provider`` so far."""
        with self._lock:
            return self._sent.get(provider.lower(), 0)

    def count_sent(self, provider: str) -> None:
        """Count one more canary sent to ``provider``."""
        with self._lock:
            key = provider.lower()
            self._sent[key] = self._sent.get(key, 0) + 1

    def record(self, outcome: CanaryOutcome) -> None:
        """Keep an outcome for the app to read."""
        with self._lock:
            self.outcomes.append(outcome)
            del self.outcomes[: max(0, len(self.outcomes) - self.max_outcomes)]
