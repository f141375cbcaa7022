"""Task and result bundles: canonical bytes, signatures, and validating decoders."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from chefsplan_agents.bundles import (
    ChatMessage,
    GenerationParams,
    ModelRequirement,
    ResultBundle,
    TaskBundle,
    Timings,
    decode_result_bundle,
    decode_task_bundle,
    encode_bundle,
    output_hash,
    sign_bundle,
    signing_payload,
    verify_bundle,
)
from chefsplan_agents.errors import (
    BundleError,
    BundleSchemaError,
    BundleTooLarge,
    InvalidSignature,
    UnsupportedBundleVersion,
)
from chefsplan_agents.identity import Identity

CREATED = datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC)
SHA = "ab" * 32
CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"


@pytest.fixture(scope="module")
def requester() -> Identity:
    return Identity.generate()


@pytest.fixture(scope="module")
def node() -> Identity:
    return Identity.generate()


def make_task(requester: Identity, **overrides: Any) -> TaskBundle:
    fields: dict[str, Any] = {
        "kind": "chat",
        "messages": [
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content="Plan a menu for 12 — vegan, nut-free."),
        ],
        "params": GenerationParams(max_tokens=64, temperature=0.0, seed=42, stop=["\n\n"]),
        "model": ModelRequirement(name="smollm2-135m", sha256=SHA, min_context=2048),
        "input_cids": [CID],
        "requester_did": requester.did,
        "nonce": "00112233445566778899aabbccddeeff",
        "created_at": CREATED,
    }
    fields.update(overrides)
    return TaskBundle(**fields)


def make_result(node: Identity, **overrides: Any) -> ResultBundle:
    text = overrides.pop("output", "Lentil soup; roasted roots; sorbet.")
    fields: dict[str, Any] = {
        "task_cid": CID,
        "output": text,
        "token_ids": [5, 17, 2],
        "fingerprint": [[[5, -0.01], [9, -4.5]], [[17, -0.2], [3, -1.75]], [[2, 0.0], [8, -9.0]]],
        "model_sha256": SHA,
        "llama_cpp_build": "b4000-abcdef0",
        "timings": Timings(
            prompt_tokens=30, generated_tokens=3, prompt_ms=12.5, generation_ms=40.25
        ),
        "node_did": node.did,
        "output_hash": output_hash(text),
    }
    fields.update(overrides)
    return ResultBundle(**fields)


@pytest.fixture(scope="module")
def signed_task(requester: Identity) -> TaskBundle:
    return sign_bundle(make_task(requester), requester)


@pytest.fixture(scope="module")
def signed_result(node: Identity) -> ResultBundle:
    return sign_bundle(make_result(node), node)


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text
    return text


# --- encoding -----------------------------------------------------------------------------


def test_same_bundle_same_bytes(requester: Identity) -> None:
    a, b = make_task(requester), make_task(requester)
    assert a is not b
    assert encode_bundle(a) == encode_bundle(b)


def test_encoding_is_canonical_json(signed_task: TaskBundle) -> None:
    data = encode_bundle(signed_task)
    value = json.loads(data)
    assert data == json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    assert value["created_at"] == "2026-11-24T12:00:00.123456Z"
    assert value["schema_version"] == 1
    assert value["type"] == "chefsplan.TaskBundle"


def test_non_canonical_input_is_re_encoded_canonically(signed_task: TaskBundle) -> None:
    canonical = encode_bundle(signed_task)
    pretty = json.dumps(json.loads(canonical), indent=4, ensure_ascii=True).encode()
    assert pretty != canonical
    decoded = decode_task_bundle(pretty)
    assert decoded == signed_task
    assert encode_bundle(decoded) == canonical


def test_timestamps_are_normalized_to_utc(requester: Identity) -> None:
    plus_two = timezone(timedelta(hours=2))
    task = make_task(requester, created_at=CREATED.astimezone(plus_two))
    assert encode_bundle(task) == encode_bundle(make_task(requester))


def test_round_trips(signed_task: TaskBundle, signed_result: ResultBundle) -> None:
    assert decode_task_bundle(encode_bundle(signed_task)) == signed_task
    assert decode_result_bundle(encode_bundle(signed_result)) == signed_result
    assert encode_bundle(decode_result_bundle(encode_bundle(signed_result))) == encode_bundle(
        signed_result
    )


def test_signature_is_not_part_of_the_signed_payload(signed_task: TaskBundle) -> None:
    assert b'"signature"' not in signing_payload(signed_task)
    assert b'"signature"' in encode_bundle(signed_task)


def test_completion_task(requester: Identity) -> None:
    task = sign_bundle(
        make_task(requester, kind="completion", messages=None, prompt="Once upon"), requester
    )
    assert decode_task_bundle(encode_bundle(task)).prompt == "Once upon"


# --- signatures ---------------------------------------------------------------------------


def test_verify_bundle(signed_task: TaskBundle, signed_result: ResultBundle) -> None:
    verify_bundle(signed_task)
    verify_bundle(signed_result)


def test_signing_with_the_wrong_identity_is_refused(requester: Identity, node: Identity) -> None:
    with pytest.raises(BundleError, match="names signer"):
        sign_bundle(make_task(requester), node)


def test_unsigned_bundle_is_rejected_unless_asked(requester: Identity) -> None:
    data = encode_bundle(make_task(requester))
    with pytest.raises(InvalidSignature, match="not signed") as info:
        decode_task_bundle(data)
    _one_line(info.value)
    assert decode_task_bundle(data, verify=False).signature is None


def test_bad_signature(signed_task: TaskBundle, requester: Identity) -> None:
    value = json.loads(encode_bundle(signed_task))
    value["signature"] = value["signature"][::-1]
    with pytest.raises(InvalidSignature) as info:
        decode_task_bundle(json.dumps(value).encode())
    _one_line(info.value)


def test_signature_from_another_identity(requester: Identity, node: Identity) -> None:
    # A bundle naming the requester, but signed by someone else's key.
    task = make_task(requester)
    forged = task.model_copy(update={"signature": sign_bundle(make_task(node), node).signature})
    with pytest.raises(InvalidSignature, match="tampered with or signed by someone else"):
        verify_bundle(forged)


PARAMS = GenerationParams(max_tokens=64, seed=42, stop=["\n\n"]).model_dump(mode="json")
TIMINGS = {"prompt_tokens": 30, "generated_tokens": 3, "prompt_ms": 12.5, "generation_ms": 40.25}

TASK_TAMPERS: list[tuple[str, Any]] = [
    ("messages", [{"role": "user", "content": "Plan a menu for 12 — with nuts."}]),
    ("params", {**PARAMS, "seed": 43}),
    ("params", {**PARAMS, "temperature": 0.7}),
    ("params", {**PARAMS, "stop": []}),
    ("model", {"name": "other-model", "sha256": SHA, "min_context": 2048}),
    ("input_cids", []),
    ("recipe_cid", CID),
    ("nonce", "ffeeddccbbaa99887766554433221100"),
    ("created_at", "2026-11-24T12:00:01.123456Z"),
    ("requester_did", Identity.generate().did),
]  # fmt: skip


@pytest.mark.parametrize(("field", "value"), TASK_TAMPERS, ids=[t[0] for t in TASK_TAMPERS])
def test_tampering_any_task_field_breaks_the_signature(
    signed_task: TaskBundle, field: str, value: Any
) -> None:
    data = json.loads(encode_bundle(signed_task))
    assert data[field] != value
    data[field] = value
    with pytest.raises(InvalidSignature):
        decode_task_bundle(json.dumps(data).encode())


RESULT_TAMPERS: list[tuple[str, Any]] = [
    ("task_cid", "bafkreiaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
    ("token_ids", [5, 17, 3]),
    ("fingerprint", [[[5, -0.02], [9, -4.5]], [[17, -0.2], [3, -1.75]], [[2, 0.0], [8, -9.0]]]),
    ("model_sha256", "cd" * 32),
    ("llama_cpp_build", "b4001"),
    ("timings", {**TIMINGS, "prompt_ms": 1.0}),
    ("node_did", Identity.generate().did),
]  # fmt: skip


@pytest.mark.parametrize(("field", "value"), RESULT_TAMPERS, ids=[t[0] for t in RESULT_TAMPERS])
def test_tampering_any_result_field_breaks_the_signature(
    signed_result: ResultBundle, field: str, value: Any
) -> None:
    data = json.loads(encode_bundle(signed_result))
    assert data[field] != value
    data[field] = value
    with pytest.raises(InvalidSignature):
        decode_result_bundle(json.dumps(data).encode())


def test_tampering_the_output_with_a_matching_hash_breaks_the_signature(
    signed_result: ResultBundle,
) -> None:
    data = json.loads(encode_bundle(signed_result))
    data["output"] = "Steak."
    data["output_hash"] = output_hash("Steak.")
    with pytest.raises(InvalidSignature):
        decode_result_bundle(json.dumps(data).encode())


# --- decoding errors ----------------------------------------------------------------------


def test_too_large_is_checked_before_parsing() -> None:
    with pytest.raises(BundleTooLarge, match="over the 10-byte limit") as info:
        decode_task_bundle(b"{" * 11, max_bytes=10)
    _one_line(info.value)


@pytest.mark.parametrize("data", [b"{not json", b"\xff\xfe", b""])
def test_malformed_json(data: bytes) -> None:
    with pytest.raises(BundleSchemaError, match="not valid UTF-8 JSON") as info:
        decode_task_bundle(data)
    _one_line(info.value)


def test_json_that_is_not_an_object() -> None:
    with pytest.raises(BundleSchemaError, match="must be a JSON object"):
        decode_result_bundle(b"[1, 2]")


@pytest.mark.parametrize("version", [2, 0, "1", None, True])
def test_wrong_schema_version(signed_task: TaskBundle, version: Any) -> None:
    data = json.loads(encode_bundle(signed_task))
    data["schema_version"] = version
    with pytest.raises(UnsupportedBundleVersion, match="reads version 1") as info:
        decode_task_bundle(json.dumps(data).encode())
    _one_line(info.value)


def test_missing_field_is_named(signed_task: TaskBundle) -> None:
    data = json.loads(encode_bundle(signed_task))
    del data["requester_did"]
    with pytest.raises(BundleSchemaError, match="field 'requester_did': Field required") as info:
        decode_task_bundle(json.dumps(data).encode())
    _one_line(info.value)


def test_unknown_field_is_named(signed_result: ResultBundle) -> None:
    data = json.loads(encode_bundle(signed_result))
    data["bonus"] = 1
    with pytest.raises(BundleSchemaError, match="field 'bonus': Extra inputs") as info:
        decode_result_bundle(json.dumps(data).encode())
    _one_line(info.value)


def test_nested_bad_field_is_named(signed_task: TaskBundle) -> None:
    data = json.loads(encode_bundle(signed_task))
    data["params"]["top_p"] = 2
    with pytest.raises(BundleSchemaError, match="field 'params.top_p'"):
        decode_task_bundle(json.dumps(data).encode())


def test_result_is_not_a_task(signed_result: ResultBundle) -> None:
    with pytest.raises(BundleSchemaError, match="TaskBundle field 'type'"):
        decode_task_bundle(encode_bundle(signed_result))


def test_nan_logprob_is_rejected(signed_result: ResultBundle) -> None:
    data = encode_bundle(signed_result).replace(b"-4.5", b"NaN")
    with pytest.raises(BundleSchemaError, match="finite"):
        decode_result_bundle(data)


def test_output_hash_must_match_output(signed_result: ResultBundle) -> None:
    data = json.loads(encode_bundle(signed_result))
    data["output_hash"] = "0x" + "00" * 32
    with pytest.raises(BundleSchemaError, match="output_hash is not the sha256 of output"):
        decode_result_bundle(json.dumps(data).encode())


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"kind": "chat", "messages": None, "prompt": "x"}, "a chat task has messages"),
        ({"kind": "completion"}, "a completion task has a prompt"),
        ({"model": {"min_context": 10}}, "give a model name, a gguf sha256"),
        ({"model": {"sha256": "ABC"}}, "64 lowercase hex"),
        ({"requester_did": "did:web:example.com"}, "not a did:key"),
        ({"input_cids": ["not a cid!"]}, "CID"),
        ({"created_at": datetime(2026, 1, 1)}, "timezone"),
        ({"params": {"temperature": float("inf")}}, "finite"),
    ],
)
def test_task_schema_rules(requester: Identity, overrides: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        make_task(requester, **overrides)


def test_result_schema_rules(node: Identity) -> None:
    with pytest.raises(ValidationError, match="one entry per token id"):
        make_result(node, token_ids=[1])
    with pytest.raises(ValidationError, match="0x followed by 64"):
        make_result(node, output_hash="ab" * 32)


def test_output_hash_is_sha256_of_utf8() -> None:
    # sha256("abc"), a FIPS 180-2 vector.
    assert output_hash("abc") == (
        "0xba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_bundles_are_frozen(signed_task: TaskBundle) -> None:
    with pytest.raises(ValidationError):
        signed_task.nonce = "changed!"  # type: ignore[misc]


@settings(max_examples=40, deadline=None)
@given(
    content=st.text(max_size=60),
    temperature=st.floats(min_value=0, max_value=2, allow_nan=False),
    top_k=st.integers(min_value=0, max_value=1000),
    stop=st.lists(st.text(min_size=1, max_size=5), max_size=3),
)
def test_decode_then_encode_is_stable(
    requester: Identity, content: str, temperature: float, top_k: int, stop: list[str]
) -> None:
    task = sign_bundle(
        make_task(
            requester,
            messages=[ChatMessage(role="user", content=content)],
            params=GenerationParams(temperature=temperature, top_k=top_k, stop=stop),
        ),
        requester,
    )
    data = encode_bundle(task)
    decoded = decode_task_bundle(data)
    assert decoded == task
    assert encode_bundle(decoded) == data


# --- the fingerprint's fast path ----------------------------------------------------------

_logprobs = st.floats(max_value=0.0, allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.0, -0.0, -1.0, -5.0, -1e-7, -1.5e-5, -3e-6, -1e-4, -123.0, -5e-324, -1e16]
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 2**53 - 1), _logprobs), min_size=1, max_size=4),
        min_size=1,
        max_size=12,
    )
)
def test_result_encoding_is_the_reference_encoders(node: Identity, fingerprint: Any) -> None:
    import rfc8785

    ids = [position[0][0] for position in fingerprint]
    result = sign_bundle(make_result(node, token_ids=ids, fingerprint=fingerprint), node)
    dumped = result.model_dump(mode="json")
    assert encode_bundle(result) == rfc8785.dumps(dumped)
    dumped.pop("signature")
    assert signing_payload(result) == rfc8785.dumps(dumped)
    assert decode_result_bundle(encode_bundle(result)) == result


def test_fingerprint_numbers_are_spelled_as_ecmascript(node: Identity) -> None:
    fingerprint = [[[1, -0.0], [2, -5.0]], [[3, -1.5e-05], [4, -1e-07]], [[5, -0.25], [6, -1e21]]]
    data = encode_bundle(make_result(node, token_ids=[1, 3, 5], fingerprint=fingerprint))
    assert (
        b'"fingerprint":[[[1,0],[2,-5]],[[3,-0.000015],[4,-1e-7]],[[5,-0.25],[6,-1e+21]]]' in data
    )


# Golden bytes: GenerationParams, ChatMessage and Timings are shared with the llm layer; the
# canonical JSON of bundles written before must not change (same bytes, same CID).
_DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"


def _golden_bundles() -> list[TaskBundle | ResultBundle]:
    chat = TaskBundle(
        kind="chat",
        messages=(
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content="Menu for 12"),
        ),
        params=GenerationParams(max_tokens=64, temperature=0.0, seed=42, stop=("\n\n",)),
        model=ModelRequirement(name="tiny", sha256=SHA),
        requester_did=_DID,
        nonce="0123456789abcdef",
        created_at=datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC),
    )
    completion = TaskBundle(
        kind="completion",
        prompt="hi",
        model=ModelRequirement(name="tiny"),
        requester_did=_DID,
        nonce="0123456789abcdef",
        created_at=datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC),
    )
    result = ResultBundle(
        task_cid=CID,
        output="ok",
        token_ids=(1, 2),
        fingerprint=(((1, -0.5), (3, -1.25)), ((2, -0.1),)),
        model_sha256=SHA,
        llama_cpp_build="b1",
        timings=Timings(prompt_tokens=3, generated_tokens=2, prompt_ms=1.5, generation_ms=2.0),
        node_did=_DID,
        output_hash=output_hash("ok"),
    )
    return [chat, completion, result]


def test_known_bundles_keep_their_bytes() -> None:
    import hashlib

    digests = [hashlib.sha256(encode_bundle(b)).hexdigest() for b in _golden_bundles()]
    assert digests == [
        "0f5f859280c169a1001fb1b7444ae66098750914243bbe4a4392f7c6544340c0",
        "f1f37ee733d625630f622a9aa2b283f9f75337092938f9eb040183d0f404e694",
        "84fd8c017b997467a5eb09365a70dc80c8bffc35621c26d521cabbb72da06642",
    ]


def test_params_fields_beyond_the_first_schema_travel_only_when_set(requester: Identity) -> None:
    task = make_task(requester, params=GenerationParams(min_p=0.05, logprobs=3))
    wire = json.loads(encode_bundle(task))["params"]
    assert wire["min_p"] == 0.05 and wire["logprobs"] == 3
    assert decode_task_bundle(encode_bundle(task), verify=False).params == task.params


def test_bundle_and_backend_share_one_params_type() -> None:
    from chefsplan_agents import llm

    assert llm.GenerationParams is GenerationParams
    assert llm.ChatMessage is ChatMessage
    assert llm.Timings is Timings
    assert TaskBundle.model_fields["params"].default_factory is not None
    assert make_task_default_params().max_tokens == 256


def make_task_default_params() -> GenerationParams:
    return TaskBundle(
        kind="completion", prompt="x", model=ModelRequirement(name="m"), requester_did=_DID
    ).params
