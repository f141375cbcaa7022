"""The tools on a real devnet: happy paths, and bad input as one-line failures."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

import pytest

from chefsplan_agents.bundles import (
    ChatMessage,
    ResultBundle,
    decode_result_bundle,
    decode_task_bundle,
    encode_bundle,
    output_hash,
    sign_bundle,
)
from chefsplan_agents.config import PolicySettings
from chefsplan_agents.devnet import Devnet
from chefsplan_agents.errors import (
    InsufficientFunds,
    MarketError,
    NoProviderFound,
    PolicyViolation,
    ToolError,
    VerificationError,
)
from chefsplan_agents.identity import Identity
from chefsplan_agents.llm import SCRIPTED_OUTPUT, LlamaCppBackend
from chefsplan_agents.network import Network
from chefsplan_agents.storage import KuboStore
from chefsplan_agents.tools import (
    TOOL_NAMES,
    ProvidersFound,
    TaskReceipt,
    ToolFailure,
    adelegate_task,
    check_policy,
    delegate_task,
    find_providers,
    get_result,
    log_output,
    second_opinion,
    split_and_delegate,
    split_text,
    tool_specs,
    verify_output,
)

Sibling = Callable[..., Network]


def _safe(network: Network, tool: str, **arguments: Any) -> Any:
    [spec] = tool_specs([tool])
    return spec.call(network, arguments)


def _failure(result: object, error: str, *phrases: str) -> str:
    assert isinstance(result, ToolFailure), result
    assert result.error == error, result.text()
    text = result.text()
    assert "\n" not in text and len(text) < 600
    for phrase in phrases:
        assert phrase in text, text
    return text


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------- find_providers


def test_find_providers_lists_the_index_ranking(network: Network, devnet: Devnet) -> None:
    found = find_providers(network)
    assert isinstance(found, ProvidersFound)
    ranked = network.index.query()
    assert [p.address for p in found.providers] == [p.address for p in ranked]
    assert {p.address for p in found.providers} == {n.address for n in devnet.nodes}
    first = found.providers[0]
    assert first.model_name == "chefsplan-tiny-scripted"
    assert first.model_sha256 == devnet.model_sha256
    assert first.address in found.text() and "tok/s" in found.text()
    assert json.loads(found.model_dump_json())["providers"][0]["did"].startswith("did:key:")
    assert len(find_providers(network, model=devnet.model_sha256, limit=1).providers) == 1


@pytest.mark.parametrize(
    ("arguments", "phrase"),
    [
        ({"model": "gpt-4"}, "model='gpt-4'"),
        ({"min_tokens_per_s": 1e12}, "min_tokens_per_s=1000000000000.0"),
        ({"min_reputation": 0.99}, "min_reputation=0.99"),
    ],
)
def test_find_providers_without_a_match_is_a_one_line_failure(
    network: Network, arguments: dict[str, Any], phrase: str
) -> None:
    _failure(_safe(network, "find_providers", **arguments), "NoProviderFound", phrase, "relax")


def test_find_providers_filters_by_signed_offer_tags(network: Network, devnet: Devnet) -> None:
    eu = find_providers(network, tags={"jurisdiction": "EU"}, limit=50)
    assert {p.address for p in eu.providers} == {n.address for n in devnet.nodes[1:]}
    assert all(p.tags["jurisdiction"] == "EU" for p in eu.providers)
    both = find_providers(network, tags={"jurisdiction": "EU", "hardware": "cpu"})
    assert [p.address for p in both.providers] == [devnet.nodes[1].address]
    assert "jurisdiction=EU" in both.text() and "hardware=cpu" in both.text()
    _failure(
        _safe(network, "find_providers", tags={"jurisdiction": "CH"}),
        "NoProviderFound",
        "jurisdiction",
        "relax",
    )


def test_find_providers_refuses_bad_tags(network: Network) -> None:
    _failure(_safe(network, "find_providers", tags={"Bad Key": "x"}), "ToolError", "tag key")
    _failure(_safe(network, "find_providers", tags={"k": ""}), "ToolError", "a value is 1-64")


def test_find_providers_bad_arguments(network: Network) -> None:
    _failure(_safe(network, "find_providers", limit=0), "ToolError", "limit must be 1 to 50")
    _failure(_safe(network, "find_providers", limit="many"), "InvalidArguments", "'limit'")
    _failure(_safe(network, "find_providers", colour="red"), "InvalidArguments", "'colour'")


# ---------------------------------------------------------------------------- delegate_task


def test_delegate_low_trust_assigns_the_best_ranked_provider(network: Network) -> None:
    best = find_providers(network).providers[0]
    receipt = delegate_task(network, "What is for dinner?", max_tokens=16, trust="low")
    assert receipt.output == SCRIPTED_OUTPUT
    assert receipt.output_hash == output_hash(SCRIPTED_OUTPUT)
    assert (receipt.replicas, receipt.quorum, receipt.agreed) == (1, 1, 1)
    [replica] = receipt.committers
    assert replica.address == best.address and replica.did == best.did
    assert replica.claim_tx == receipt.finalize_tx  # claimAndFinalize: one transaction
    assert receipt.result_cid.startswith("baf") and receipt.bundle_cid.startswith("baf")
    assert receipt.verification is None and receipt.gas_used > 0
    text = receipt.text()
    assert text.startswith(f"task {receipt.task_id} settled: 1 of 1 agreed on output ")
    assert receipt.result_cid in text and receipt.finalize_tx in text and "\n" not in text
    assert TaskReceipt.model_validate_json(receipt.model_dump_json()) == receipt


def test_delegate_normal_trust_without_a_verifier_is_two_of_three(network: Network) -> None:
    receipt = delegate_task(
        network,
        messages=[
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content="Hi"),
        ],
        max_tokens=16,
    )
    assert (receipt.trust, receipt.replicas, receipt.quorum, receipt.agreed) == ("normal", 3, 2, 3)
    assert len({c.address for c in receipt.committers}) == 3
    assert "3 of 3 agreed" in receipt.text()
    bundle = decode_task_bundle(network.store.get(receipt.bundle_cid))
    assert [m.role for m in bundle.messages or ()] == ["system", "user"]


def test_delegate_with_a_verifier_rescores(network: Network, verifier: LlamaCppBackend) -> None:
    network.verifier = verifier
    normal = delegate_task(network, "Hi", max_tokens=16)
    assert normal.replicas == 1
    assert normal.verification is not None and normal.verification.passed
    assert normal.verification.result_cid == normal.result_cid
    assert "re-score of" in normal.text() and "passed" in normal.text()
    high = delegate_task(network, "Hi", max_tokens=16, trust="high")
    assert (high.replicas, high.quorum) == (3, 2)
    assert high.verification is not None and high.verification.passed


def test_delegate_normal_trust_with_too_few_providers(network: Network) -> None:
    two = [p.address for p in find_providers(network).providers[:2]]
    result = _safe(network, "delegate_task", prompt="Hi", providers=two)
    _failure(result, "NoProviderFound", "needs 3 providers", "found 2", "trust='low'")


@pytest.mark.parametrize(
    ("arguments", "error", "phrase"),
    [
        ({}, "ToolError", "either a prompt or a non-empty list of messages"),
        (
            {"prompt": "x", "messages": [{"role": "user", "content": "y"}]},
            "ToolError",
            "not both",
        ),
        ({"prompt": "   "}, "ToolError", "the prompt is empty"),
        ({"prompt": "x", "max_tokens": 0}, "ToolError", "max_tokens must be 1 to 4096"),
        ({"prompt": "x", "max_tokens": "lots"}, "InvalidArguments", "'max_tokens'"),
        ({"prompt": "x", "trust": "paranoid"}, "InvalidArguments", "'trust'"),
        ({"messages": [{"role": "robot", "content": "y"}]}, "InvalidArguments", "messages.0.role"),
        ({"prompt": "x", "model": "gpt-4"}, "NoProviderFound", "model='gpt-4'"),
        ({"prompt": "x", "max_price_per_1k_wei": -1}, "RegistryError", "max_price"),
    ],
)
def test_delegate_bad_input_is_a_one_line_failure(
    network: Network, arguments: dict[str, Any], error: str, phrase: str
) -> None:
    before = network.spent_wei
    _failure(_safe(network, "delegate_task", **arguments), error, phrase)
    assert network.spent_wei == before  # nothing was posted


def test_delegate_without_funds(sibling: Sibling) -> None:
    poor = sibling(funds=0)
    text = _failure(
        _safe(poor, "delegate_task", prompt="Hi", trust="low"), "InsufficientFunds", poor.address
    )
    assert "holds 0 wei" in text and "fund the account" in text
    with pytest.raises(InsufficientFunds):
        delegate_task(poor, "Hi", trust="low")


def test_spending_cap_refuses_before_posting(sibling: Sibling) -> None:
    capped = sibling(policy=PolicySettings(spending_cap_wei=1))
    assert delegate_task(capped, "Hi", max_tokens=8, trust="low").bounty_per_replica_wei == 1
    assert capped.spent_wei == 1
    _failure(
        _safe(capped, "delegate_task", prompt="Hi", trust="low"), "PolicyViolation", "cap of 1 wei"
    )
    with pytest.raises(PolicyViolation):
        split_and_delegate(capped, "One.\n\nTwo.", max_chunk_chars=50)
    assert capped.spent_wei == 1
    report = check_policy(capped, "fine", spend_wei=1)
    assert not report.allowed and "pass the cap of 1 wei" in report.text()


def test_unreachable_store_is_a_one_line_failure(
    sibling: Sibling, verifier: LlamaCppBackend
) -> None:
    dead = KuboStore(f"/ip4/127.0.0.1/tcp/{_closed_port()}/http", timeout_s=2.0)
    offline = sibling(store=dead, verifier=verifier)
    _failure(_safe(offline, "find_providers"), "NoProviderFound")  # no offer can be read
    cid = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    _failure(_safe(offline, "verify_output", result_cid=cid), "StoreUnavailable", "127.0.0.1")
    _failure(_safe(offline, "log_output", output="x", subject="s"), "StoreUnavailable")


def test_async_twin_runs_in_a_worker_thread(network: Network) -> None:
    receipt = asyncio.run(adelegate_task(network, "Hi", max_tokens=8, trust="low"))
    assert receipt.output == SCRIPTED_OUTPUT[:8] or receipt.output.startswith("CHEF")
    [spec] = tool_specs(["delegate_task"])
    failure = asyncio.run(spec.acall(network, {"prompt": "x", "model": "gpt-4"}))
    _failure(failure, "NoProviderFound")


# ---------------------------------------------------------------------------- results


def test_get_result_by_task_id(network: Network) -> None:
    posted = delegate_task(network, "Hi", max_tokens=16, trust="low")
    fetched = get_result(network, posted.task_id)
    assert fetched.result_cid == posted.result_cid and fetched.output == posted.output
    assert fetched.trust is None and fetched.finalize_tx == posted.finalize_tx


def test_get_result_bad_ids(network: Network) -> None:
    unknown = "0x" + "ab" * 32
    _failure(_safe(network, "get_result", task_id=unknown), "MarketError", f"no task {unknown}")
    _failure(_safe(network, "get_result", task_id="0x1234"), "ToolError", "64 hex digits")
    _failure(_safe(network, "get_result", task_id=unknown, timeout_s=0), "ToolError", "timeout_s")
    with pytest.raises(MarketError):
        get_result(network, unknown)


def test_verify_output(network: Network, verifier: LlamaCppBackend) -> None:
    receipt = delegate_task(network, "Hi", max_tokens=16, trust="low")
    _failure(
        _safe(network, "verify_output", result_cid=receipt.result_cid),
        "VerificationError",
        "no local verifier",
    )
    network.verifier = verifier
    report = verify_output(network, receipt.result_cid)
    assert report.passed and report.top1_fraction == 1.0 and report.tokens > 0
    missing = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    _failure(_safe(network, "verify_output", result_cid=missing), "ContentNotFound", missing)
    _failure(_safe(network, "verify_output", result_cid="not-a-cid"), "InvalidCid")
    # A CID of something that is not a result bundle.
    other = network.store.put(b'{"hello": 1}')
    result = _safe(network, "verify_output", result_cid=other)
    _failure(result, "UnsupportedBundleVersion", "schema_version")


def test_second_opinion_rescore_and_peer(network: Network, verifier: LlamaCppBackend) -> None:
    receipt = delegate_task(network, "Hi", max_tokens=16, trust="low")
    peer = second_opinion(network, receipt.result_cid)  # no verifier: auto is a peer re-run
    assert peer.verdict == "confirmed" and peer.rescore is None and peer.peer_agrees
    assert peer.peer is not None and peer.peer.task_id != receipt.task_id
    assert peer.peer.committers[0].address != receipt.committers[0].address
    assert "gave the same output" in peer.text()
    network.verifier = verifier
    local = second_opinion(network, receipt.result_cid)
    assert local.rescore is not None and local.rescore.passed and local.peer is None
    both = second_opinion(network, receipt.result_cid, method="both")
    assert both.rescore is not None and both.peer is not None and both.verdict == "confirmed"


def test_second_opinion_disputes_a_forged_result(
    network: Network, verifier: LlamaCppBackend
) -> None:
    honest = delegate_task(network, "Hi", max_tokens=16, trust="low")
    result = decode_result_bundle(network.store.get(honest.result_cid))
    forger = Identity.generate()
    text = "NOT THE ANSWER"
    fields = {
        **result.model_dump(),
        "output": text,
        "output_hash": output_hash(text),
        "token_ids": tuple(verifier.tokenize(text)),
        "fingerprint": (),
        "node_did": forger.did,
        "signature": None,
    }
    forged = sign_bundle(ResultBundle.model_validate(fields), forger)
    cid = network.store.put(encode_bundle(forged))
    peer = second_opinion(network, cid, method="peer")
    assert peer.verdict == "disputed" and peer.peer_agrees is False
    assert peer.peer is not None and peer.peer.output == SCRIPTED_OUTPUT
    assert "disputed" in peer.text() and "another output 'CHEFSPLAN OK'" in peer.text()
    network.verifier = verifier
    local = second_opinion(network, cid)
    assert local.verdict == "disputed" and local.rescore is not None
    assert "FAILED" in local.text() and "do not rely" in local.text()


def test_second_opinion_needs_another_provider() -> None:
    with Devnet.create(nodes=1, model="tiny", n_threads=1, n_ctx=512) as alone:
        receipt = delegate_task(alone.network, "Hi", max_tokens=8, trust="low")
        result = _safe(alone.network, "second_opinion", result_cid=receipt.result_cid)
        _failure(result, "NoProviderFound", "no provider other than", "method='rescore'")
        result = _safe(alone.network, "second_opinion", result_cid=receipt.result_cid, method="x")
        _failure(result, "InvalidArguments", "'method'")


# ---------------------------------------------------------------------------- accountability


def test_log_output_records_the_hash_on_chain(network: Network) -> None:
    receipt = delegate_task(network, "Hi", max_tokens=16, trust="low")
    logged = log_output(network, receipt.output, receipt.task_id, receipt.result_cid)
    [entry] = network.output_log.entries(subject=receipt.task_id)
    assert "0x" + entry.output_hash.hex() == logged.output_hash == receipt.output_hash
    assert entry.result_cid == receipt.result_cid and entry.tx_hash == logged.tx_hash
    assert entry.sender == network.address
    own = log_output(network, "my own answer", "conversation 7")
    assert network.store.get(own.result_cid) == b"my own answer"
    assert own.subject == output_hash("conversation 7")
    assert own.output_hash in own.text() and own.tx_hash in own.text()


def test_check_policy_rules(sibling: Sibling) -> None:
    strict = sibling(
        policy=PolicySettings(
            forbidden_words=("secret",),
            forbidden_patterns=(r"\d{4}-\d{4}",),
            max_output_chars=40,
            json_schema={"type": "object", "required": ["answer"]},
        )
    )
    good = check_policy(strict, '{"answer": "soup"}')
    assert good.allowed and good.violations == () and "passed" in good.text()
    bad = check_policy(strict, "The SECRET code is 1234-5678, as a long sentence")
    assert not bad.allowed and len(bad.violations) == 4
    for phrase in ("'secret'", "pattern", "over the limit of 40", "not a JSON document"):
        assert phrase in bad.text()
    assert "secretive" not in check_policy(strict, '{"answer": "secretive"}').text()
    wrong = check_policy(strict, '{"dish": "soup"}')
    assert wrong.violations == (
        "the output does not match the JSON schema at the document: "
        "'answer' is a required property",
    )
    deep = check_policy(strict, "[" * 10_000 + "]" * 10_000)
    assert any("not a JSON document" in v for v in deep.violations)
    _failure(_safe(strict, "check_policy", text="x", spend_wei=-1), "ToolError", "spend_wei")


def test_policy_settings_reject_a_bad_pattern() -> None:
    with pytest.raises(ValueError, match="not a regular expression"):
        PolicySettings(forbidden_patterns=("(",))


# ---------------------------------------------------------------------------- long texts


def test_split_text_at_paragraphs_then_sentences() -> None:
    text = "First para.\n\nSecond para.\n\n\n" + "A long sentence here. " * 6 + "\n\nEnd."
    chunks = split_text(text, 60)
    # Greedy packing: paragraphs share a chunk, then the long one's sentences follow.
    assert chunks[0] == "First para.\n\nSecond para.\n\nA long sentence here."
    assert chunks[1] == "A long sentence here. A long sentence here."
    assert all(len(c) <= 60 for c in chunks)
    assert chunks[-1].endswith("End.")
    assert "".join(c.replace("\n\n", " ").replace(" ", "") for c in chunks) == "".join(text.split())
    assert split_text("x" * 130, 50) == ["x" * 50, "x" * 50, "x" * 30]
    with pytest.raises(ToolError, match="empty"):
        split_text("\n\n  \n", 100)
    with pytest.raises(ToolError, match="at least 50"):
        split_text("abc", 10)


def test_split_and_delegate_in_order_across_providers(network: Network, devnet: Devnet) -> None:
    parts = [f"Paragraph number {i} talks about dish {i}." for i in range(4)]
    receipt = split_and_delegate(
        network, "\n\n".join(parts), instruction="Summarise:", max_chunk_chars=50, max_tokens=16
    )
    assert len(receipt.chunks) == 4 and receipt.providers == 3
    for part, chunk in zip(parts, receipt.chunks, strict=True):
        bundle = decode_task_bundle(network.store.get(chunk.bundle_cid))
        assert (bundle.messages or ())[0].content == f"Summarise:\n\n{part}"
    assert receipt.output == "\n\n".join(c.output for c in receipt.chunks)
    assert receipt.gas_used == sum(c.gas_used for c in receipt.chunks)
    assert all(c.task_id in receipt.text() for c in receipt.chunks)
    _failure(_safe(network, "split_and_delegate", text=""), "ToolError", "empty")


def test_every_tool_has_a_described_spec() -> None:
    assert TOOL_NAMES == (
        "find_providers",
        "delegate_task",
        "get_result",
        "second_opinion",
        "verify_output",
        "log_output",
        "check_policy",
        "split_and_delegate",
    )
    for spec in tool_specs():
        schema = spec.args_model.model_json_schema()
        assert spec.description and "\n" not in spec.description
        for name, prop in schema["properties"].items():
            assert prop.get("description") and prop["description"] != name, (spec.name, name)
    with pytest.raises(ToolError, match="unknown tool 'fly'"):
        tool_specs(["fly"])


def test_exceptions_are_chefsplan_errors() -> None:
    assert issubclass(NoProviderFound, LookupError) and issubclass(NoProviderFound, ToolError)
    assert issubclass(InsufficientFunds, MarketError)
    assert issubclass(VerificationError, Exception)
