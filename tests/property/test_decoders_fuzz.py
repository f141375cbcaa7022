"""Every decoder of others' bytes, fed random and mutated inputs, raises only package errors.

Valid encodings (a signed task and result, an offer credential, a keystore, a UnixFS DAG, a
node's signed answers) are mutated the ways hostile or broken peers mutate them: flipped bytes,
truncation, spliced-in bytes, deleted and repeated ranges, deep nesting, and JSON fields set to
arbitrary values. Whatever comes in, a decoder returns a value or raises a
:class:`~chefsplan_agents.errors.ChefsplanError` (or, for ``check_offer``, its documented
``OfferRejected``/``OfferUnavailable``) — never ``KeyError``, ``TypeError``, ``OverflowError``,
``RecursionError`` or a crash.

Run longer with ``HYPOTHESIS_PROFILE=ci`` or ``HYPOTHESIS_PROFILE=thorough``.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chefsplan_agents.bundles import (
    ChatMessage,
    GenerationParams,
    ModelRequirement,
    Offer,
    OfferedModel,
    ResultBundle,
    TaskBundle,
    Timings,
    decode_result_bundle,
    decode_task_bundle,
    encode_bundle,
    issue_offer,
    output_hash,
    sign_bundle,
    verify_offer,
)
from chefsplan_agents.errors import ChefsplanError, ContentNotFound
from chefsplan_agents.identity import Identity, load_keystore, save_keystore, verify_credential
from chefsplan_agents.identity._keystore import read_keystore_info
from chefsplan_agents.node import NodeHttpClient
from chefsplan_agents.node._http_client import _Response
from chefsplan_agents.node._signing import HEADER_NONCE, sign_response
from chefsplan_agents.registry._offers import (
    OfferRejected,
    OfferUnavailable,
    check_offer,
    offer_hash,
)
from chefsplan_agents.storage import Cid, FileImporter, compute_cid, parse_cid
from chefsplan_agents.storage._cid import CODEC_DAG_PB
from chefsplan_agents.storage._unixfs import _decode_dag_pb, iter_file

NOW = datetime(2026, 12, 1, tzinfo=UTC)
SHA = "ab" * 32
CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
REQUESTER = Identity.generate()
NODE = Identity.generate()


def _settings() -> settings:
    name = os.environ.get("HYPOTHESIS_PROFILE", "")
    if name:
        return settings.get_profile(name)
    return settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


fuzz = _settings()


# --- valid encodings to mutate --------------------------------------------------------------

TASK = sign_bundle(
    TaskBundle(
        kind="chat",
        messages=[ChatMessage(role="user", content="Plan a menu for 12.")],
        params=GenerationParams(max_tokens=16, temperature=0.0, seed=1, stop=["\n"]),
        model=ModelRequirement(name="smollm2-135m", sha256=SHA, min_context=2048),
        input_cids=[CID],
        requester_did=REQUESTER.did,
        nonce="00112233445566778899aabbccddeeff",
        created_at=NOW,
    ),
    REQUESTER,
)
RESULT = sign_bundle(
    ResultBundle(
        task_cid=CID,
        output="Soup.",
        token_ids=[5, 17],
        fingerprint=[[[5, -0.01], [9, -4.5]], [[17, -0.2], [3, -1.75]]],
        model_sha256=SHA,
        llama_cpp_build="b4000-abcdef0",
        timings=Timings(prompt_tokens=3, generated_tokens=2, prompt_ms=1.5, generation_ms=2.0),
        node_did=NODE.did,
        output_hash=output_hash("Soup."),
    ),
    NODE,
)
TASK_BYTES = encode_bundle(TASK)
RESULT_BYTES = encode_bundle(RESULT)
OFFER_TOKEN = issue_offer(
    Offer(
        model=OfferedModel(
            name="smollm2-135m", sha256=SHA, quantization="Q4_1", context_length=2048
        ),
        generation_tokens_per_s=85.5,
        prefill_tokens_per_s=230.0,
        price_per_1k_tokens_wei=10**20,
        endpoint="http://127.0.0.1:8750",
        evm_address=NODE.address.lower(),
        did=NODE.did,
    ),
    NODE,
    issued_at=NOW,
)

with tempfile.TemporaryDirectory() as _folder:
    KEYSTORE_BYTES = save_keystore(
        Identity.generate(), Path(_folder) / "k.json", "pw", scrypt_n=16
    ).read_bytes()


def _dag(data: bytes, version: int) -> tuple[Cid, dict[Cid, bytes]]:
    blocks: dict[Cid, bytes] = {}
    importer = FileImporter(version, lambda cid, block: blocks.__setitem__(cid, block))
    importer.write(data)
    return importer.finish(), blocks


DAG_DATA = bytes(range(256)) * (3 * 1024 + 1)  # three leaves and a bit: a root of four links
DAGS = [_dag(DAG_DATA, 1), _dag(DAG_DATA, 0)]

AVAILABILITY = json.dumps(
    {
        "status": "available",
        "node_did": NODE.did,
        "schema_version": 1,
        "model": {
            "name": "smollm2-135m",
            "sha256": SHA,
            "quantization": "Q4_1",
            "context_length": 2048,
        },
        "price_per_1k_tokens_wei": "1000",
        "queued": 0,
        "running": 1,
    }
).encode()
COMPLETED = json.dumps(
    {
        "job_id": "job-1",
        "status": "completed",
        "task_cid": CID,
        "result_cid": compute_cid(RESULT_BYTES),
        "output_hash": RESULT.output_hash,
        "result": json.loads(RESULT_BYTES),
    }
).encode()


# --- mutations -------------------------------------------------------------------------------

EDGE_NUMBERS = [float("inf"), float("-inf"), float("nan"), 1e300, -1e300, 2**64, -(2**63), 10**400]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.sampled_from(EDGE_NUMBERS)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """``valid`` after one to three byte-level mutations."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "truncate", "splice", "delete", "repeat", "deep"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del data[at:]
        elif op == "splice":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif op == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 64))] * draw(st.integers(2, 50))
        else:
            depth = draw(st.sampled_from([65, 300, 5_000, 60_000]))
            data[at:at] = draw(st.sampled_from([b"[", b'{"a":', b"[{}, "])) * depth
    return bytes(data)


_DEEP_MARK = "\u2603deep\u2603"


@st.composite
def json_edited(draw: st.DrawFn, valid: bytes) -> bytes:
    """``valid`` (a JSON object) with one field, at any depth, set to an arbitrary value.

    Half the edits set the field to a deeply nested document (closed or not), so the nesting
    reaches the parser where a value is expected rather than inside a string.
    """
    document = json.loads(valid)
    node: Any = document
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, dict | list) and child and draw(st.booleans()):
            node = child
            continue
        deep = draw(st.booleans())
        node[key] = _DEEP_MARK if deep else draw(json_values)
        break
    text = json.dumps(document)
    if _DEEP_MARK in text:
        depth = draw(st.sampled_from([65, 300, 30_000, 60_000]))
        opener = draw(st.sampled_from(["[", '{"a":', "[0,"]))
        closed = draw(st.booleans()) and opener == "["
        nested = opener * depth + ("]" * depth if closed else "")
        text = text.replace(json.dumps(_DEEP_MARK), nested)
    return text.encode()


def inputs(valid: bytes, *, json_object: bool = True) -> st.SearchStrategy[bytes]:
    choices = [st.binary(max_size=512), mutated(valid)]
    if json_object:
        choices.append(json_edited(valid))
        choices.append(json_edited(valid).flatmap(mutated))
    return st.one_of(choices)


def _only_package_errors(decode: Callable[[], object]) -> None:
    try:
        decode()
    except ChefsplanError as err:
        assert "\n" not in str(err), str(err)


# --- bundles ---------------------------------------------------------------------------------


@fuzz
@given(inputs(TASK_BYTES))
def test_task_bundles(data: bytes) -> None:
    _only_package_errors(lambda: decode_task_bundle(data))


@fuzz
@given(inputs(RESULT_BYTES))
def test_result_bundles(data: bytes) -> None:
    _only_package_errors(lambda: decode_result_bundle(data))


# --- offers and VC-JWTs ----------------------------------------------------------------------


def _jws_parts_edited() -> st.SearchStrategy[bytes]:
    """The offer token with its header or payload JSON edited, then re-encoded."""
    head, body, signature = OFFER_TOKEN.split(".")

    def decoded(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    def encoded(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    heads = st.one_of(st.just(decoded(head)), json_edited(decoded(head)), mutated(decoded(head)))
    bodies = st.one_of(st.just(decoded(body)), json_edited(decoded(body)), mutated(decoded(body)))
    return st.tuples(heads, bodies).map(
        lambda parts: f"{encoded(parts[0])}.{encoded(parts[1])}.{signature}".encode()
    )


offer_inputs = st.one_of(inputs(OFFER_TOKEN.encode(), json_object=False), _jws_parts_edited())


@fuzz
@given(offer_inputs)
def test_offer_credentials(data: bytes) -> None:
    token = data.decode("latin-1")
    _only_package_errors(lambda: verify_credential(token, now=NOW))
    _only_package_errors(lambda: verify_offer(token, now=NOW))


@fuzz
@given(offer_inputs)
def test_registered_offers(data: bytes) -> None:
    try:
        check_offer(
            data,
            registered_hash=offer_hash(data),
            did=NODE.did,
            address=NODE.address,
            now=NOW,
        )
    except (OfferRejected, OfferUnavailable) as err:
        assert "\n" not in err.reason


# --- CIDs and UnixFS blocks ------------------------------------------------------------------

VALID_CIDS = [str(DAGS[0][0]), str(DAGS[1][0]), CID]


@fuzz
@given(
    st.one_of(
        st.text(max_size=80),
        st.sampled_from(VALID_CIDS)
        .flatmap(lambda cid: mutated(cid.encode()))
        .map(lambda raw: raw.decode("latin-1")),
    )
)
def test_cid_text(text: str) -> None:
    _only_package_errors(lambda: parse_cid(text))


@fuzz
@given(
    st.one_of(
        st.binary(max_size=64),
        st.sampled_from(VALID_CIDS).flatmap(lambda cid: mutated(parse_cid(cid).to_bytes())),
    )
)
def test_cid_bytes(raw: bytes) -> None:
    _only_package_errors(lambda: Cid.from_bytes(raw))


@fuzz
@given(
    st.sampled_from(range(len(DAGS))).flatmap(
        lambda i: st.tuples(st.just(i), inputs(DAGS[i][1][DAGS[i][0]], json_object=False))
    )
)
def test_unixfs_roots(case: tuple[int, bytes]) -> None:
    # The mutated root is served under its own CID, so it passes the hash check and reaches
    # the decoder; the children are the original leaves.
    index, root_block = case
    root, blocks = DAGS[index]
    version = root.version
    forged = Cid.for_block(root_block, version=version, codec=CODEC_DAG_PB)
    source = {**blocks, forged: root_block}

    def fetch(cid: Cid) -> bytes:
        if cid not in source:
            raise ContentNotFound(f"{cid} is not held")
        return source[cid]

    _only_package_errors(lambda: _decode_dag_pb(forged, root_block))
    _only_package_errors(lambda: sum(len(c) for c in iter_file(fetch, forged, max_bytes=1 << 20)))


# --- keystores -------------------------------------------------------------------------------


@fuzz
@given(inputs(KEYSTORE_BYTES))
def test_keystores(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "k.json"
        path.write_bytes(data)
        _only_package_errors(lambda: read_keystore_info(path))
        _only_package_errors(lambda: load_keystore(path, "pw"))


# --- a node's signed HTTP answers ------------------------------------------------------------


class _ScriptedNode(NodeHttpClient):
    """The client with its transport replaced: every answer is ``body``, signed by the node."""

    status_code = 200
    body = b""

    def _send(self, method: str, target: str, body: bytes, headers: dict[str, str]) -> _Response:
        signed = sign_response(
            NODE, status=self.status_code, body=self.body, request_nonce=headers[HEADER_NONCE]
        )
        return _Response(self.status_code, self.body, signed.as_headers())


@fuzz
@given(
    st.sampled_from([200, 200, 404, 500]),
    st.one_of(inputs(AVAILABILITY), inputs(COMPLETED)),
)
def test_node_answers(status: int, body: bytes) -> None:
    client = _ScriptedNode("http://127.0.0.1:9", REQUESTER, NODE.did)
    client.status_code, client.body = status, body
    _only_package_errors(client.availability)
    _only_package_errors(client.input_schema)
    _only_package_errors(lambda: client.status("job-1"))
