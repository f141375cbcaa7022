"""Random and mutated raw HTTP requests against a real node API server on 127.0.0.1.

Whatever arrives, the server answers with a 2xx or 4xx status line (never a 5xx, never
silence), closes the connection within a bounded time once the client has finished, logs no
error, and still serves a valid signed request afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from _raw_http import exchange, reversing_runner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chefsplan_agents.bundles import (
    ModelRequirement,
    TaskBundle,
    encode_bundle,
    sign_bundle,
)
from chefsplan_agents.identity import Identity
from chefsplan_agents.node import NodeHttpClient, NodeHttpServer
from chefsplan_agents.node._signing import sign_request
from chefsplan_agents.storage import MemoryCidStore

NODE = Identity.generate()
REQUESTER = Identity.generate()


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def server() -> Iterator[NodeHttpServer]:
    # A short socket timeout bounds what a request that never ends can hold.
    with NodeHttpServer(
        NODE,
        reversing_runner(NODE),
        MemoryCidStore(),
        allowed_requesters=[REQUESTER.did],
        socket_timeout_s=1.0,
        max_body_bytes=64 * 1024,
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def errors() -> Iterator[_Errors]:
    handler = _Errors()
    logger = logging.getLogger("chefsplan_agents.node._http")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _valid_parts() -> tuple[bytes, dict[str, str], bytes]:
    task = sign_bundle(
        TaskBundle(
            kind="completion",
            prompt="soup",
            model=ModelRequirement(name="tiny-chef"),
            requester_did=REQUESTER.did,
        ),
        REQUESTER,
    )
    body = encode_bundle(task)
    headers = sign_request(
        REQUESTER, method="POST", path="/start_job", query="", body=body, audience_did=NODE.did
    ).as_headers()
    return b"POST /start_job HTTP/1.1", headers, body


_LINE, _SIGNED, _BODY = _valid_parts()

_methods = st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"get", b"OPTIONS", b""]) | st.binary(
    max_size=12
)
_targets = st.sampled_from(
    [b"/start_job", b"/availability", b"/status?job_id=x", b"/input_schema", b"*", b"//x"]
) | st.binary(max_size=64)
_versions = st.sampled_from(
    [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1", b"HTTP/1.1.1", b"HTTP/x", b""]
) | st.binary(max_size=12)
_lengths = st.sampled_from(
    ["0", "1", "²", "³", "¹", "٣", "-1", "1e3", " 5", "0x10", "9" * 30, "65537", str(1 << 40), ""]
) | st.integers(min_value=0, max_value=100_000).map(str)
_header_names = st.sampled_from(
    [
        "Content-Length",
        "Transfer-Encoding",
        "Expect",
        "Connection",
        "X-Chefsplan-Did",
        "X-Chefsplan-Nonce",
        "X-Chefsplan-Timestamp",
        "X-Chefsplan-Signature",
        "Host",
    ]
) | st.text(min_size=1, max_size=20)
_header_values = (
    _lengths
    | st.sampled_from(["chunked", "100-continue", "close", "keep-alive", "did:key:z6Mk"])
    | st.text(max_size=200)
)
_headers = st.lists(st.tuples(_header_names, _header_values), max_size=8)


def _encode(text: str) -> bytes:
    # Latin-1 where it can be (the server decodes headers so: "²" arrives as one byte), else
    # UTF-8 (more bytes the server sees as Latin-1 text).
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _encode_headers(pairs: list[tuple[str, str]]) -> bytes:
    return b"".join(_encode(f"{name}: {value}") + b"\r\n" for name, value in pairs)


_valid_lines = st.sampled_from(
    [
        b"GET /availability HTTP/1.1",
        b"POST /start_job HTTP/1.1",
        b"GET /status?job_id=x HTTP/1.1",
        b"GET /input_schema HTTP/1.0",
    ]
)


@st.composite
def _structured(draw: st.DrawFn) -> bytes:
    """A request built from parts, each part either plausible or garbage."""
    garbage_line = st.tuples(_methods, _targets, _versions).map(b" ".join)
    line = draw(_valid_lines | garbage_line)
    pairs = draw(_headers)
    length = draw(st.one_of(st.none(), _lengths, _lengths))
    if length is not None:
        pairs.insert(draw(st.integers(0, len(pairs))), ("Content-Length", length))
    headers = _encode_headers(pairs)
    if draw(st.booleans()):
        # The valid signature headers, so the request gets past the cheap checks.
        headers += _encode_headers(list(_SIGNED.items()))
    body = draw(st.sampled_from([b"", _BODY, b"[" * 5000, b"{}"]) | st.binary(max_size=512))
    return line + b"\r\n" + headers + b"\r\n" + body


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    """The valid signed request with a few bytes flipped, dropped or inserted."""
    headers = _encode_headers([*list(_SIGNED.items()), ("Content-Length", str(len(_BODY)))])
    data = bytearray(_LINE + b"\r\n" + headers + b"\r\n" + _BODY)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(data) - 1))
        action = draw(st.sampled_from(["flip", "drop", "insert"]))
        if action == "flip":
            data[at] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif action == "drop":
            del data[at]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


# Built requests twice as often as the others: they get furthest into the server.
_requests = st.one_of(
    _structured(), _structured(), _mutated(), st.binary(min_size=1, max_size=2048)
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=_requests)
@example(data=b"GET /availability HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n")
def test_every_request_gets_a_4xx_or_2xx_status_line(
    server: NodeHttpServer, errors: _Errors, data: bytes
) -> None:
    answer = exchange(server.address, data, timeout_s=5.0)
    assert answer.status is not None, answer.data[:200]
    assert 200 <= answer.status < 300 or 400 <= answer.status < 500, answer.data[:300]
    assert answer.closed  # the request stream ended, so the server must hang up in time


def test_the_server_still_serves_and_logged_no_error(
    server: NodeHttpServer, errors: _Errors
) -> None:
    client = NodeHttpClient(server.url, REQUESTER, NODE.did, timeout_s=10)
    assert client.availability().status == "available"
    assert errors.records == []
