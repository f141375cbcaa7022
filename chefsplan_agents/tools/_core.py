"""The tools: plain typed functions that take a :class:`~chefsplan_agents.network.Network` first.

Each returns a receipt (:mod:`chefsplan_agents.tools._receipts`) and raises
:class:`~chefsplan_agents.errors.ChefsplanError` subclasses on bad input or trouble; the
framework adapters call them through :class:`~chefsplan_agents.tools.ToolSpec`'s safe path,
which turns every error into a one-line :class:`ToolFailure`. Every ``a``-prefixed twin runs
the same function in a worker thread.

Parameters are ``Annotated[type, "description"]``: the description is what a model reads.

Trust levels of :func:`delegate_task`:

- ``low``: one replica, assigned to the best-ranked provider (two transactions); no check.
- ``normal``: with a local verifier that runs the chosen model, one assigned replica whose
  result the verifier re-scores as :class:`~chefsplan_agents.verify.VerificationPolicy` plans:
  always for a new provider, with a probability that falls with reputation and stake for an
  established one; without a verifier, three replicas of which two must agree.
- ``high``: three replicas of which two must agree, and the verifier's re-score as well when
  it runs the model. When their outputs differ (``NoQuorum``) and the verifier runs the model,
  every revealed result is re-scored and the one output that passes is the answer
  (:func:`~chefsplan_agents.verify.arbitrate`).
"""

from __future__ import annotations

import asyncio
import functools
import re
import secrets
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

import jsonschema

from chefsplan_agents import _json
from chefsplan_agents.bundles import (
    ChatMessage,
    GenerationParams,
    ModelRequirement,
    ResultBundle,
    TaskBundle,
    check_tags,
    decode_result_bundle,
    decode_task_bundle,
    output_hash,
)
from chefsplan_agents.errors import (
    BundleError,
    IdentityError,
    InvalidOfferTags,
    NoProviderFound,
    NoQuorum,
    PolicyViolation,
    StorageError,
    ToolError,
    VerificationError,
)
from chefsplan_agents.llm import LLMBackend
from chefsplan_agents.market import DelegationReceipt, Settlement, TaskHandle
from chefsplan_agents.network import Network
from chefsplan_agents.registry import IndexedProvider
from chefsplan_agents.tools._receipts import (
    LoggedOutputReceipt,
    PolicyReport,
    ProviderInfo,
    ProvidersFound,
    RescoreReport,
    SecondOpinion,
    SplitReceipt,
    TaskReceipt,
    Trust,
)
from chefsplan_agents.tools._sensitive import is_sensitive, sensitive_refusal
from chefsplan_agents.verify import (
    Checks,
    ProviderStats,
    RescoreMode,
    arbitrate,
    rescore_result,
)

__all__ = [
    "MAX_TOOL_TOKENS",
    "adelegate_task",
    "afind_providers",
    "aget_result",
    "alog_output",
    "acheck_policy",
    "asecond_opinion",
    "asplit_and_delegate",
    "averify_output",
    "check_policy",
    "delegate_task",
    "find_providers",
    "get_result",
    "log_output",
    "second_opinion",
    "split_and_delegate",
    "split_text",
    "verify_output",
]

MAX_TOOL_TOKENS = 4096
"""Most new tokens one delegated task may ask for through a tool."""

_REDUNDANT_REPLICAS, _REDUNDANT_QUORUM = 3, 2
_HEX64 = re.compile(r"(0x)?[0-9a-fA-F]{64}")
_TASK_ID = re.compile(r"0x[0-9a-fA-F]{64}")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

# ---------------------------------------------------------------------------- providers


def _model_filter(model: str | None) -> tuple[str | None, str | None]:
    """``(name, sha256)`` filters for a model given by name or by GGUF sha256."""
    if model is not None and _HEX64.fullmatch(model):
        return None, model.lower().removeprefix("0x")
    return model, None


def _candidates(
    network: Network,
    *,
    model: str | None = None,
    min_tokens_per_s: float | None = None,
    max_price_per_1k_wei: int | None = None,
    min_reputation: float | None = None,
    addresses: Sequence[str] | None = None,
    tags: Mapping[str, str] | None = None,
) -> list[IndexedProvider]:
    name, sha256 = _model_filter(model)
    found = network.providers(
        model=name,
        model_sha256=sha256,
        min_tokens_per_s=min_tokens_per_s,
        max_price=max_price_per_1k_wei,
        limit=200,
        tags=tags,
    )
    if min_reputation is not None:
        found = [p for p in found if p.score >= min_reputation]
    if addresses is not None:
        wanted = {a.lower() for a in addresses}
        found = [p for p in found if p.address.lower() in wanted]
    return found


def _describe_filters(**filters: object) -> str:
    given = [f"{k}={v!r}" for k, v in filters.items() if v is not None]
    return ", ".join(given) or "no filters"


def _info(p: IndexedProvider) -> ProviderInfo:
    offer = p.offer
    assert offer is not None  # the index returns only providers with a verified offer
    return ProviderInfo(
        address=p.address,
        did=p.did,
        model_name=offer.model_name,
        model_sha256=offer.model_sha256,
        quantization=offer.quantization,
        context_length=offer.context_length,
        generation_tokens_per_s=offer.generation_tokens_per_s,
        prefill_tokens_per_s=offer.prefill_tokens_per_s,
        price_per_1k_tokens_wei=offer.price_per_1k_tokens_wei,
        stake_wei=p.stake,
        reputation_score=p.score,
        tasks_won=p.reputation.won,
        tasks_slashed=p.reputation.slashed,
        endpoint=offer.endpoint,
        tags=dict(offer.tags),
    )


def find_providers(
    network: Network,
    model: Annotated[
        str | None, "Model name or GGUF sha256 (64 hex digits) to serve; omit for any model"
    ] = None,
    min_tokens_per_s: Annotated[
        float | None, "Least advertised generation speed, in tokens per second"
    ] = None,
    max_price_per_1k_wei: Annotated[int | None, "Highest price per 1,000 tokens, in wei"] = None,
    min_reputation: Annotated[
        float | None, "Least reputation score, 0 to 1 (a newcomer scores 0.09)"
    ] = None,
    limit: Annotated[int, "Most providers to list, 1 to 50"] = 5,
    tags: Annotated[
        dict[str, str] | None,
        "Tags the provider's signed offer must state, e.g. {'jurisdiction': 'EU'}; omit for any",
    ] = None,
) -> ProvidersFound:
    """Find provider nodes in the registry that match the filters, best ranked first.

    Ranked as the registry index ranks (reputation score, then stake, then speed). Only
    active providers whose signed offer was fetched and verified are listed; ``tags`` keeps
    those whose offer states every given tag with that value.

    Raises:
        NoProviderFound: Nothing matches.
        ToolError: ``limit`` out of range, or ``tags`` break the tag rules.
    """
    if not 1 <= limit <= 50:
        raise ToolError(f"limit must be 1 to 50 (got {limit})")
    try:
        wanted = check_tags(tags) if tags else None
    except InvalidOfferTags as err:
        raise ToolError(str(err)) from err
    found = _candidates(
        network,
        model=model,
        min_tokens_per_s=min_tokens_per_s,
        max_price_per_1k_wei=max_price_per_1k_wei,
        min_reputation=min_reputation,
        tags=wanted,
    )
    if not found:
        filters = _describe_filters(
            model=model,
            min_tokens_per_s=min_tokens_per_s,
            max_price_per_1k_wei=max_price_per_1k_wei,
            min_reputation=min_reputation,
            tags=wanted,
        )
        raise NoProviderFound(f"no provider matches {filters}; relax a filter")
    return ProvidersFound(providers=tuple(_info(p) for p in found[:limit]))


# ---------------------------------------------------------------------------- delegation


@dataclass(frozen=True)
class _Plan:
    """How a task is delegated at a trust level."""

    trust: Trust
    model_sha256: str
    replicas: int
    quorum: int
    bounty_per_replica: int
    assignees: tuple[str | None, ...]  # round-robin over these; None: open to any provider
    rescore: bool
    checks: Checks | None = None  # the policy's plan when ``rescore`` (None: always, in full)


def _bounty(providers: Sequence[IndexedProvider], max_tokens: int) -> int:
    """Wei per replica that meets every listed provider's price for ``max_tokens``."""
    price = max((p.offer.price_per_1k_tokens_wei for p in providers if p.offer), default=0)
    return max(1, -(-price * max_tokens // 1000))


def _plan(
    network: Network,
    *,
    trust: Trust,
    max_tokens: int,
    model: str | None,
    providers: Sequence[str] | None,
    max_price_per_1k_wei: int | None,
    sensitive: bool = False,
) -> _Plan:
    if trust not in ("low", "normal", "high"):
        raise ToolError(f"trust must be low, normal or high (got {trust!r})")
    if not 1 <= max_tokens <= MAX_TOOL_TOKENS:
        raise ToolError(f"max_tokens must be 1 to {MAX_TOOL_TOKENS} (got {max_tokens})")
    found = _candidates(
        network, model=model, max_price_per_1k_wei=max_price_per_1k_wei, addresses=providers
    )
    if not found:
        filters = _describe_filters(
            model=model, providers=providers, max_price_per_1k_wei=max_price_per_1k_wei
        )
        raise NoProviderFound(f"no provider matches {filters}; call find_providers first")
    if sensitive:
        found = _sensitive_only(network, found)
    verifier_sha = network.verifier.info.sha256 if network.verifier is not None else None
    sha = found[0].offer.model_sha256 if found[0].offer else ""
    if (
        model is None
        and trust != "low"
        and any(p.offer and p.offer.model_sha256 == verifier_sha for p in found)
    ):
        sha = str(verifier_sha)  # a model the local verifier can re-score
    same = [p for p in found if p.offer and p.offer.model_sha256 == sha]
    verifiable = verifier_sha == sha
    if trust == "low" or (trust == "normal" and verifiable):
        bounty = _bounty(same, max_tokens)
        return _Plan(
            trust=trust,
            model_sha256=sha,
            replicas=1,
            quorum=1,
            bounty_per_replica=bounty,
            assignees=tuple(p.address for p in same),
            rescore=trust == "normal",
            checks=network.verification.plan(ProviderStats.of(same[0]), trust, bounty),
        )
    if sensitive:
        raise PolicyViolation(
            f"the task's text is sensitive (policy.sensitive_patterns) and trust={trust!r} "
            "would open it to any provider of the model: use trust='normal' with a local "
            "verifier, or trust='low', so it is assigned to a qualifying provider"
        )
    if len(same) < _REDUNDANT_REPLICAS:
        why = "without a local verifier for this model " if trust == "normal" else ""
        raise NoProviderFound(
            f"trust={trust!r} {why}needs {_REDUNDANT_REPLICAS} providers of model "
            f"{sha[:12]}…, found {len(same)}; use trust='low', or connect with a verifier"
        )
    return _Plan(
        trust=trust,
        model_sha256=sha,
        replicas=_REDUNDANT_REPLICAS,
        quorum=_REDUNDANT_QUORUM,
        bounty_per_replica=_bounty(same, max_tokens),
        assignees=(None,),
        rescore=verifiable,
    )


def _sensitive_only(network: Network, found: Sequence[IndexedProvider]) -> list[IndexedProvider]:
    """The providers the policy trusts with sensitive data (best ranked first)."""
    refusals = {p.address: sensitive_refusal(_info(p), network.policy) for p in found}
    kept = [p for p in found if refusals[p.address] is None]
    if not kept:
        first = found[0]
        raise PolicyViolation(
            "the task's text is sensitive (policy.sensitive_patterns) and no matching provider "
            f"qualifies: {first.address} — {refusals[first.address]}; set "
            "policy.sensitive_providers, sensitive_models or sensitive_tags"
        )
    return kept


def _chat(prompt: str | None, messages: Sequence[ChatMessage] | None) -> tuple[ChatMessage, ...]:
    if (prompt is None) == (not messages):
        raise ToolError("give either a prompt or a non-empty list of messages, not both")
    if prompt is not None:
        if not prompt.strip():
            raise ToolError("the prompt is empty; say what the remote model should do")
        return (ChatMessage(role="user", content=prompt),)
    return tuple(messages or ())


def _bundle(
    network: Network, chat: tuple[ChatMessage, ...], plan: _Plan, max_tokens: int
) -> TaskBundle:
    return TaskBundle(
        kind="chat",
        messages=chat,
        params=GenerationParams(max_tokens=max_tokens),
        model=ModelRequirement(sha256=plan.model_sha256),
        requester_did=network.identity.did,
    )


def _post(network: Network, bundle: TaskBundle, plan: _Plan, assignee: str | None) -> TaskHandle:
    return network.delegate(
        bundle,
        model=bundle.model,
        bounty_per_replica=plan.bounty_per_replica,
        replicas=plan.replicas,
        quorum=plan.quorum,
        assignee=assignee,
    )


def _verifier(network: Network) -> LLMBackend:
    if network.verifier is None:
        raise VerificationError(
            "no local verifier to re-score with: connect(..., verifier=<LLMBackend>) or ask a "
            "peer with second_opinion(method='peer')"
        )
    return network.verifier


def _rescore(
    network: Network,
    task: TaskBundle,
    result: ResultBundle,
    cid: str,
    mode: RescoreMode = "full",
) -> RescoreReport:
    verifier = _verifier(network)
    with network.verifier_lock:
        verdict = rescore_result(verifier, task, result, mode=mode)
    return RescoreReport(
        result_cid=cid,
        passed=verdict.passed,
        top1_fraction=verdict.top1_fraction,
        fingerprint_agreement=verdict.fingerprint_agreement,
        tokens=verdict.tokens,
        rescore_ms=verdict.rescore_ms,
        claimed_generation_ms=verdict.claimed_generation_ms,
        reason=verdict.reason,
    )


def _revealed_results(
    network: Network, handle: TaskHandle
) -> tuple[dict[str, ResultBundle], dict[str, str]]:
    """Every usable result revealed for the task and its CID, by provider (bounded reads)."""
    requester = network.requester
    events = requester._task_events(handle)
    dids = {r.address: r.did for r in requester._replicas(events)}
    found: dict[str, ResultBundle] = {}
    cids: dict[str, str] = {}
    for reveal in events.named("ResultRevealed"):
        provider, cid = str(reveal.args["provider"]), str(reveal.args["resultCid"])
        try:
            data = network.store.get(cid, max_bytes=requester.max_result_bytes)
            result = decode_result_bundle(data, max_bytes=requester.max_result_bytes)
        except (StorageError, BundleError, IdentityError):
            continue  # an unusable result is no candidate
        if result.node_did == dids.get(provider):
            found[provider], cids[provider] = result, cid
    return found, cids


def _arbitrated(network: Network, handle: TaskHandle, plan: _Plan, err: NoQuorum) -> TaskReceipt:
    """Settle a task whose replicas disagreed by re-scoring each revealed result."""
    results, cids = _revealed_results(network, handle)
    with network.verifier_lock:
        decision = arbitrate(_verifier(network), handle.bundle, results, task_cid=handle.bundle_cid)
    if decision.accepted is None or decision.result is None:
        raise NoQuorum(f"{err}; arbitration by re-score: {decision.reason}") from err
    events = network.requester._task_events(handle)
    finalized = events.named("TaskFinalized")[0]
    result, verdict = decision.result, decision.verdicts[decision.accepted]
    done = DelegationReceipt(
        task_id=f"0x{handle.task_id.hex()}",
        bundle_cid=handle.bundle_cid,
        result_cid=cids[decision.accepted],
        output=result.output,
        output_hash=result.output_hash,
        replicas=network.requester._replicas(events),
        post_tx=handle.post_tx,
        finalize_tx=finalized.tx_hash,
        gas_used=handle.post_gas,
        settlement=Settlement.from_event(finalized),
        result=result,
    )
    report = RescoreReport(
        result_cid=done.result_cid,
        passed=True,
        top1_fraction=verdict.top1_fraction,
        fingerprint_agreement=verdict.fingerprint_agreement,
        tokens=verdict.tokens,
        rescore_ms=decision.rescore_ms,
        claimed_generation_ms=verdict.claimed_generation_ms,
        reason=f"no hash quorum; {decision.reason}; wrong: {', '.join(decision.wrong) or '-'}",
    )
    return TaskReceipt.from_delegation(handle, done, plan.trust, report)


def _settle(network: Network, handle: TaskHandle, plan: _Plan) -> TaskReceipt:
    try:
        done = network.wait(handle)
    except NoQuorum as err:
        if not (plan.replicas > 1 and plan.rescore):
            raise
        return _arbitrated(network, handle, plan, err)
    verdict = None
    if plan.rescore:
        mode: RescoreMode | None = "full"
        if plan.checks is not None:
            mode = network.verification.selects(plan.checks, done.result)
        if mode is not None:
            verdict = _rescore(network, handle.bundle, done.result, done.result_cid, mode)
    return TaskReceipt.from_delegation(handle, done, plan.trust, verdict)


def delegate_task(
    network: Network,
    prompt: Annotated[str | None, "The task for a remote model, as one user message"] = None,
    messages: Annotated[
        list[ChatMessage] | None,
        "Chat messages instead of a prompt: [{role: system|user|assistant, content}]",
    ] = None,
    max_tokens: Annotated[int, "Most new tokens the answer may have"] = 256,
    trust: Annotated[
        Trust,
        "low: one provider, unchecked; normal: one provider re-scored by the local verifier, "
        "or 2 of 3 providers agreeing without one; high: 2 of 3 agreeing (and re-scored)",
    ] = "normal",
    model: Annotated[
        str | None, "Model name or GGUF sha256; omit for the best-ranked provider's model"
    ] = None,
    providers: Annotated[
        list[str] | None,
        "Provider addresses to choose from (from find_providers); omit for the best ranked",
    ] = None,
    max_price_per_1k_wei: Annotated[
        int | None, "Highest price per 1,000 tokens to pay, in wei"
    ] = None,
) -> TaskReceipt:
    """Delegate a task to remote model nodes and return the settled, verified answer.

    The bounty per replica meets the chosen providers' advertised price for ``max_tokens``;
    the trust level picks replicas, quorum and checks (see the module docs). ``providers``
    picks whom a one-replica task is assigned to; a three-replica task is open to any active
    provider of the model, so there it only narrows the model and the price.

    Raises:
        ToolError: Bad arguments; NoProviderFound when no provider fits.
        PolicyViolation: The spending cap would be passed, or the text is sensitive
            (``policy.sensitive_patterns``) and no qualifying provider could be assigned.
        InsufficientFunds: The requester cannot pay the escrow.
        MarketError: The task did not settle (``NoQuorum``, ``DelegationTimeout``).
        VerificationError: The result failed the requester's checks.
    """
    chat = _chat(prompt, messages)
    plan = _plan(
        network,
        trust=trust,
        max_tokens=max_tokens,
        model=model,
        providers=providers,
        max_price_per_1k_wei=max_price_per_1k_wei,
        sensitive=is_sensitive((m.content for m in chat), network.policy),
    )
    handle = _post(network, _bundle(network, chat, plan, max_tokens), plan, plan.assignees[0])
    return _settle(network, handle, plan)


def get_result(
    network: Network,
    task_id: Annotated[str, "The task id from a delegation receipt: 0x and 64 hex digits"],
    timeout_s: Annotated[float, "Most seconds to wait for the task to settle"] = 60.0,
) -> TaskReceipt:
    """Fetch a task's settled result by task id, verified as the requester verifies it.

    Waits up to ``timeout_s`` if the task is still open (settling it if its time has come).

    Raises:
        ToolError: Malformed task id or timeout.
        MarketError: No such task, it did not settle in time, or settled without quorum.
        VerificationError: The winning result failed the checks.
    """
    if not _TASK_ID.fullmatch(task_id):
        raise ToolError(f"task_id must be 0x and 64 hex digits (got {task_id[:80]!r})")
    if not 0 < timeout_s <= 3600:
        raise ToolError(f"timeout_s must be more than 0 and at most 3600 (got {timeout_s})")
    handle = network.handle_of(task_id)
    return TaskReceipt.from_delegation(handle, network.wait(handle, timeout_s), None)


def _fetch_result(network: Network, result_cid: str) -> tuple[ResultBundle, TaskBundle]:
    result = decode_result_bundle(network.store.get(result_cid))
    task = decode_task_bundle(network.store.get(result.task_cid))
    return result, task


def verify_output(
    network: Network,
    result_cid: Annotated[str, "CID of the ResultBundle to check (a receipt's result_cid)"],
) -> RescoreReport:
    """Re-score a result with the local verifier model: cheap, no new generation.

    Raises:
        VerificationError: No local verifier, or it runs another model than the result's.
        StorageError, BundleError, IdentityError: The result or its task cannot be fetched,
            is malformed, or is badly signed.
    """
    _verifier(network)  # before fetching anything
    result, task = _fetch_result(network, result_cid)
    return _rescore(network, task, result, result_cid)


def _peer_rerun(network: Network, result: ResultBundle, task: TaskBundle) -> TaskReceipt:
    others = [
        p for p in _candidates(network, model=result.model_sha256) if p.did != result.node_did
    ]
    if not others:
        raise NoProviderFound(
            f"no provider other than {result.node_did} serves model {result.model_sha256[:12]}…; "
            "a peer re-run needs one (or use method='rescore' with a local verifier)"
        )
    plan = _Plan(
        trust="low",
        model_sha256=result.model_sha256,
        replicas=1,
        quorum=1,
        bounty_per_replica=_bounty(others[:1], task.params.max_tokens),
        assignees=(others[0].address,),
        rescore=False,
    )
    again = task.model_copy(
        update={
            "requester_did": network.identity.did,
            "nonce": secrets.token_hex(16),
            "signature": None,
        }
    )
    return _settle(network, _post(network, again, plan, others[0].address), plan)


def second_opinion(
    network: Network,
    result_cid: Annotated[str, "CID of the ResultBundle to examine (a receipt's result_cid)"],
    method: Annotated[
        Literal["auto", "rescore", "peer", "both"],
        "rescore: the local verifier re-scores it; peer: another provider runs the same task "
        "and the outputs are compared; auto: rescore if a verifier runs the model, else peer",
    ] = "auto",
) -> SecondOpinion:
    """Get a second opinion on a result: a local re-score, a peer's re-run, or both.

    Raises:
        ToolError: Unknown method.
        NoProviderFound: A peer re-run has no other provider of the model.
        VerificationError: A re-score without a (matching) local verifier.
        StorageError, BundleError, IdentityError: The result or its task is unusable.
    """
    if method not in ("auto", "rescore", "peer", "both"):
        raise ToolError(f"method must be auto, rescore, peer or both (got {method!r})")
    result, task = _fetch_result(network, result_cid)
    if method == "auto":
        runs_model = network.verifier is not None and (
            network.verifier.info.sha256 == result.model_sha256
        )
        method = "rescore" if runs_model else "peer"
    rescore = _rescore(network, task, result, result_cid) if method != "peer" else None
    peer = _peer_rerun(network, result, task) if method != "rescore" else None
    agrees = None if peer is None else peer.output_hash == result.output_hash
    confirmed = (rescore is None or rescore.passed) and agrees is not False
    return SecondOpinion(
        result_cid=result_cid,
        task_cid=result.task_cid,
        output_hash=result.output_hash,
        verdict="confirmed" if confirmed else "disputed",
        rescore=rescore,
        peer=peer,
        peer_agrees=agrees,
    )


# ---------------------------------------------------------------------------- accountability


def log_output(
    network: Network,
    output: Annotated[str, "The output to account for (its sha256 goes on chain)"],
    subject: Annotated[
        str, "What it is about: a task id (0x + 64 hex) or any text (its sha256 is logged)"
    ],
    result_cid: Annotated[
        str | None, "CID where the output is stored; omit to store the output now"
    ] = None,
) -> LoggedOutputReceipt:
    """Record an output's hash on chain in the OutputLog, with the CID of its content.

    Raises:
        StorageError: The output cannot be stored.
        ChainError: The transaction failed.
    """
    digest = output_hash(output)
    if _TASK_ID.fullmatch(subject):
        subject_hex = subject.lower()
    else:
        subject_hex = output_hash(subject)  # the same sha256, of the subject's text
    cid = result_cid if result_cid is not None else network.store.put(output.encode("utf-8"))
    receipt = network.output_log.log_output(subject_hex, digest, cid, sender=network.address)
    return LoggedOutputReceipt(
        subject=subject_hex,
        output_hash=digest,
        result_cid=cid,
        sender=network.address,
        tx_hash=receipt.tx_hash,
        gas_used=receipt.gas_used,
        block_number=receipt.block_number,
    )


def _json_violation(text: str, schema: dict[str, Any]) -> str | None:
    try:
        document = _json.loads(text)
    except ValueError as err:
        return f"the output is not a JSON document ({str(err).splitlines()[0]})"
    try:
        jsonschema.validate(document, schema)
    except jsonschema.SchemaError as err:
        return f"policy.json_schema is not a valid JSON Schema: {err.message}"
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "the document"
        return f"the output does not match the JSON schema at {where}: {err.message}"
    return None


def check_policy(
    network: Network,
    text: Annotated[str, "The output to check against the app's policy"],
    spend_wei: Annotated[int, "Wei about to be spent, checked against the spending cap"] = 0,
) -> PolicyReport:
    """Check an output (and a planned spend) against the app's policy rules.

    Rules come from the ``[policy]`` settings: forbidden words and patterns, maximum length,
    a JSON schema the output must match, and a spending cap. A broken rule is reported, not
    raised.

    Raises:
        ToolError: ``spend_wei`` is negative.
    """
    if spend_wei < 0:
        raise ToolError(f"spend_wei must not be negative (got {spend_wei})")
    policy = network.policy
    violations: list[str] = []
    for word in policy.forbidden_words:
        if re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.IGNORECASE):
            violations.append(f"contains the forbidden word {word!r}")
    for pattern in policy.forbidden_patterns:
        if re.search(pattern, text):
            violations.append(f"matches the forbidden pattern {pattern!r}")
    if policy.max_output_chars is not None and len(text) > policy.max_output_chars:
        violations.append(
            f"is {len(text)} characters long, over the limit of {policy.max_output_chars}"
        )
    if policy.json_schema is not None:
        problem = _json_violation(text, policy.json_schema)
        if problem is not None:
            violations.append(problem)
    cap = policy.spending_cap_wei
    if cap is not None and network.spent_wei + spend_wei > cap:
        violations.append(
            f"spending {spend_wei} wei more would pass the cap of {cap} wei "
            f"({network.spent_wei} wei spent)"
        )
    return PolicyReport(
        allowed=not violations,
        violations=tuple(violations),
        spent_wei=network.spent_wei,
        spending_cap_wei=cap,
    )


# ---------------------------------------------------------------------------- long texts


def _pieces(paragraph: str, max_chars: int) -> list[str]:
    """A paragraph cut at sentence ends, then (for an overlong sentence) at ``max_chars``."""
    if len(paragraph) <= max_chars:
        return [paragraph]
    out: list[str] = []
    for sentence in _SENTENCE_END.split(paragraph):
        out += [sentence[i : i + max_chars] for i in range(0, len(sentence), max_chars)]
    return out


def split_text(text: str, max_chars: int) -> list[str]:
    """Split ``text`` into chunks of at most ``max_chars``, at paragraph boundaries where
    possible, else at sentence ends, else mid-sentence.

    Pieces are packed greedily: consecutive paragraphs (or sentences) share a chunk while it
    fits. Blank paragraphs are dropped.

    Raises:
        ToolError: ``max_chars`` is below 50 or the text is empty.
    """
    if max_chars < 50:
        raise ToolError(f"max_chunk_chars must be at least 50 (got {max_chars})")
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    if not paragraphs:
        raise ToolError("the text is empty; nothing to delegate")
    chunks: list[str] = []
    current = ""
    for paragraph in paragraphs:
        for i, piece in enumerate(_pieces(paragraph, max_chars)):
            joiner = " " if i else "\n\n"  # sentences of one paragraph rejoin with a space
            if current and len(current) + len(joiner) + len(piece) <= max_chars:
                current += joiner + piece
            else:
                if current:
                    chunks.append(current)
                current = piece
    chunks.append(current)
    return chunks


def split_and_delegate(
    network: Network,
    text: Annotated[str, "The long text to process chunk by chunk"],
    instruction: Annotated[str, "What to do with each chunk, e.g. 'Summarise this passage:'"] = "",
    max_chunk_chars: Annotated[int, "Most characters per chunk (at least 50)"] = 1500,
    max_tokens: Annotated[int, "Most new tokens per chunk's answer"] = 256,
    trust: Annotated[Trust, "Trust level for every chunk (as delegate_task)"] = "low",
    model: Annotated[str | None, "Model name or GGUF sha256; omit for the best ranked"] = None,
) -> SplitReceipt:
    """Split a long text at paragraph and sentence boundaries, delegate the chunks in
    parallel across providers, and merge their outputs in order.

    Every chunk is posted before any is waited for, so the providers work at the same time;
    assigned chunks go round-robin over the matching providers, best ranked first.

    Raises:
        ToolError, NoProviderFound, PolicyViolation, InsufficientFunds, MarketError,
        VerificationError: As :func:`delegate_task`, for any chunk.
    """
    chunks = split_text(text, max_chunk_chars)
    plan = _plan(
        network,
        trust=trust,
        max_tokens=max_tokens,
        model=model,
        providers=None,
        max_price_per_1k_wei=None,
        sensitive=is_sensitive((text, instruction), network.policy),
    )
    escrow = plan.bounty_per_replica * plan.replicas * len(chunks)
    network.check_spend(escrow)  # all or nothing: refuse before the first chunk is posted
    handles = []
    for i, chunk in enumerate(chunks):
        prompt = f"{instruction}\n\n{chunk}" if instruction else chunk
        bundle = _bundle(network, _chat(prompt, None), plan, max_tokens)
        handles.append(_post(network, bundle, plan, plan.assignees[i % len(plan.assignees)]))
    receipts = tuple(_settle(network, handle, plan) for handle in handles)
    winners = {c.address for r in receipts for c in r.committers if c.agreed}
    return SplitReceipt(
        output="\n\n".join(r.output for r in receipts),
        chunks=receipts,
        providers=len(winners),
        gas_used=sum(r.gas_used for r in receipts),
    )


# ---------------------------------------------------------------------------- async twins

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _in_worker_thread(
    func: Callable[_P, _R],
) -> Callable[_P, Coroutine[Any, Any, _R]]:
    """An async twin of ``func`` that runs it in a worker thread (``asyncio.to_thread``)."""

    @functools.wraps(func)
    async def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        return await asyncio.to_thread(func, *args, **kwargs)

    run.__name__ = run.__qualname__ = "a" + func.__name__
    return run


afind_providers = _in_worker_thread(find_providers)
adelegate_task = _in_worker_thread(delegate_task)
aget_result = _in_worker_thread(get_result)
averify_output = _in_worker_thread(verify_output)
asecond_opinion = _in_worker_thread(second_opinion)
alog_output = _in_worker_thread(log_output)
acheck_policy = _in_worker_thread(check_policy)
asplit_and_delegate = _in_worker_thread(split_and_delegate)
