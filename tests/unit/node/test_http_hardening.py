"""The node's HTTP API against hostile requests: a real server on 127.0.0.1, raw sockets."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator

import pytest
from _raw_http import exchange, request, reversing_runner

from chefsplan_agents.bundles import (
    ModelRequirement,
    ResultBundle,
    TaskBundle,
    encode_bundle,
    sign_bundle,
)
from chefsplan_agents.errors import NodeRequestRejected, NodeUnavailable
from chefsplan_agents.identity import Identity
from chefsplan_agents.node import NodeHttpClient, NodeHttpServer
from chefsplan_agents.node._signing import (
    HEADER_DID,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    NonceCache,
    sign_request,
)
from chefsplan_agents.storage import MemoryCidStore

# ---------------------------------------------------------------------------- HTTP API


def _task(requester: Identity, prompt: str = "soup") -> TaskBundle:
    task = TaskBundle(
        kind="completion",
        prompt=prompt,
        model=ModelRequirement(name="tiny-chef"),
        requester_did=requester.did,
    )
    return sign_bundle(task, requester)


class _CountingStore(MemoryCidStore):
    def __init__(self) -> None:
        super().__init__()
        self.puts = 0

    def put(self, data: bytes, *, pin: bool = True) -> str:
        self.puts += 1
        return super().put(data, pin=pin)


@pytest.fixture
def api_errors() -> Iterator[list[logging.LogRecord]]:
    """Records the HTTP API logs at WARNING or above (a traceback would be one)."""
    records: list[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = _Keep(logging.WARNING)
    logger = logging.getLogger("chefsplan_agents.node._http")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def _signed(
    signer: Identity, server: NodeHttpServer, path: str, body: bytes = b""
) -> dict[str, str]:
    method = "POST" if path == "/start_job" else "GET"
    headers = sign_request(
        signer, method=method, path=path, query="", body=body, audience_did=server.node_did
    ).as_headers()
    return headers


def test_http_jobs_need_an_allowed_requester(api_errors: list[logging.LogRecord]) -> None:
    node, allowed, stranger = Identity.generate(), Identity.generate(), Identity.generate()
    store = _CountingStore()
    with NodeHttpServer(
        node, reversing_runner(node), store, allowed_requesters=[allowed.did]
    ) as srv:
        client = NodeHttpClient(srv.url, allowed, node.did, timeout_s=10)
        assert client.wait(client.start_job(_task(allowed)).job_id, timeout=30).result
        body = encode_bundle(_task(stranger))
        headers = _signed(stranger, srv, "/start_job", body)
        # The body is announced but never sent: refused on the headers, without waiting for it.
        headers["Content-Length"] = str(len(body))
        answer = exchange(srv.address, request("POST", "/start_job", headers), half_close=False)
        assert answer.status == 403 and answer.body["error"]["code"] == "not_allowed"
        assert store.puts == 2  # the allowed job's task and result only
    with NodeHttpServer(node, reversing_runner(node), MemoryCidStore()) as closed:
        client = NodeHttpClient(closed.url, allowed, node.did, timeout_s=10)
        with pytest.raises(NodeRequestRejected, match="may not start jobs"):
            client.start_job(_task(allowed))
    with NodeHttpServer(node, reversing_runner(node), MemoryCidStore(), open_to_all=True) as srv:
        client = NodeHttpClient(srv.url, stranger, node.did, timeout_s=10)
        assert client.wait(client.start_job(_task(stranger)).job_id, timeout=30).result
    assert api_errors == []


def test_a_busy_node_stores_nothing() -> None:
    node, requester = Identity.generate(), Identity.generate()
    store = _CountingStore()
    release = threading.Event()
    runner = reversing_runner(node)

    def gated(bundle: TaskBundle, cid: str) -> ResultBundle:
        assert release.wait(30)
        result: ResultBundle = runner(bundle, cid)
        return result

    with NodeHttpServer(
        node, gated, store, max_queued_jobs=1, allowed_requesters=[requester.did]
    ) as srv:
        client = NodeHttpClient(srv.url, requester, node.did, timeout_s=10)
        first = client.start_job(_task(requester, "first"))
        stored = store.puts
        for i in range(5):
            with pytest.raises(NodeRequestRejected, match="busy"):
                client.start_job(_task(requester, f"flood {i}"))
        assert store.puts == stored
        release.set()
        assert client.wait(first.job_id, timeout=30).result


@pytest.mark.parametrize(
    ("length", "code"),
    [
        ("²", "bad_length"),
        ("³", "bad_length"),
        ("-1", "bad_length"),
        ("1e3", "bad_length"),
        ("9" * 40, "bad_length"),
        ("0x10", "bad_length"),
    ],
)
def test_content_length_is_parsed_strictly(
    length: str, code: str, api_errors: list[logging.LogRecord]
) -> None:
    node, requester = Identity.generate(), Identity.generate()
    with NodeHttpServer(node, reversing_runner(node), MemoryCidStore()) as srv:
        headers = _signed(requester, srv, "/availability")
        # As the bytes arrive: http.server decodes headers as Latin-1, where "²" is one byte.
        raw = f"Content-Length: {length}\r\n".encode("latin-1")
        head = request("GET", "/availability", headers, raw_headers=raw)
        answer = exchange(srv.address, head)
        assert answer.status == 400 and answer.body["error"]["code"] == code
        assert answer.closed
        assert NodeHttpClient(srv.url, requester, node.did).availability().status == "available"
    assert api_errors == []


def test_signature_headers_are_bounded_before_decoding(api_errors: list[logging.LogRecord]) -> None:
    node, requester = Identity.generate(), Identity.generate()
    with NodeHttpServer(node, reversing_runner(node), MemoryCidStore()) as srv:
        headers = _signed(requester, srv, "/availability")
        for name, value, code in (
            # Refused on its length: never handed to the base58 decoder.
            (HEADER_DID, "did:key:z" + "1" * 60_000, "bad_header"),
            (HEADER_SIGNATURE, "A" * 10_000, "bad_header"),
            (HEADER_NONCE, "n" * 10_000, "bad_header"),
            (HEADER_TIMESTAMP, "1" * 10_000, "bad_header"),
            (HEADER_DID, "did:key:z6Mk\u00e9", "invalid_did"),
        ):
            answer = exchange(
                srv.address, request("GET", "/availability", {**headers, name: value})
            )
            assert answer.status == 401, (name, answer.data[:200])
            assert answer.body["error"]["code"] == code
            assert "\n" not in answer.body["error"]["message"]
    assert api_errors == []


def test_connections_are_bounded() -> None:
    node, requester = Identity.generate(), Identity.generate()
    with NodeHttpServer(
        node, reversing_runner(node), MemoryCidStore(), max_connections=2, socket_timeout_s=30
    ) as srv:
        held = [socket.create_connection(srv.address, timeout=10) for _ in range(2)]
        try:
            held[0].sendall(b"GET /availability HTTP/1.1\r\n")  # a request that never ends
            answer = exchange(srv.address, request("GET", "/availability"))
            assert answer.status == 503 and answer.body["error"]["code"] == "busy"
            # The client says the node is busy, not that its answer was forged.
            busy = NodeHttpClient(srv.url, requester, node.did, timeout_s=10)
            with pytest.raises(NodeUnavailable, match=r"is busy \(503") as err:
                busy.availability()
            assert "\n" not in str(err.value)
        finally:
            for sock in held:
                sock.close()
        client = NodeHttpClient(srv.url, requester, node.did, timeout_s=10)
        for _ in range(50):  # slots come back when connections end
            try:
                assert client.availability().status == "available"
                break
            except (NodeRequestRejected, NodeUnavailable):
                # A held connection's thread may still be finishing: an unsigned 503.
                threading.Event().wait(0.1)
        else:
            raise AssertionError("the server never served again")


def test_one_did_cannot_fill_the_nonce_cache_for_everyone() -> None:
    cache = NonceCache(100, max_per_did=3, max_dids=2)
    assert all(cache.admit("did:a", f"n{i}", now=0) == "fresh" for i in range(3))
    assert cache.admit("did:a", "n9", now=1) == "over_quota"
    assert cache.admit("did:a", "n0", now=1) == "replayed"
    assert cache.admit("did:b", "n0", now=1) == "fresh"  # another DID is not locked out
    assert cache.admit("did:c", "n0", now=1) == "full"  # but the DIDs tracked are bounded
    assert cache.admit("did:c", "n0", now=1, priority=True) == "fresh"  # named by the operator
    assert cache.admit("did:a", "n9", now=101) == "fresh"  # forgotten after the ttl
    assert cache.dids <= 3


def test_per_did_quota_answers_429_and_spares_others() -> None:
    node, flooder, other = Identity.generate(), Identity.generate(), Identity.generate()
    with NodeHttpServer(
        node, reversing_runner(node), MemoryCidStore(), max_nonces_per_did=3
    ) as srv:
        flood = NodeHttpClient(srv.url, flooder, node.did, timeout_s=10)
        for _ in range(3):
            flood.availability()
        with pytest.raises(NodeRequestRejected) as exc:
            flood.availability()
        assert (exc.value.status, exc.value.code) == (429, "too_many_requests")
        assert NodeHttpClient(srv.url, other, node.did).availability().status == "available"


@pytest.mark.parametrize(
    "data",
    [
        b"\r\n",
        b"GET /availability\r\n\r\n",  # HTTP/0.9
        b"BREW /availability HTTP/1.1\r\n\r\n",
        b"HEAD /availability HTTP/1.1\r\n\r\n",
        b"GET /availability HTTP/2.0\r\n\r\n",
        b"GET /availability HTTP/1.1\r\nbroken header line\r\n\r\n",
        b"GET http://[::1/availability HTTP/1.1\r\n\r\n",
        b"POST /start_job HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /start_job HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",
    ],
)
def test_malformed_requests_get_a_one_line_json_4xx(
    data: bytes, api_errors: list[logging.LogRecord]
) -> None:
    node, requester = Identity.generate(), Identity.generate()
    with NodeHttpServer(node, reversing_runner(node), MemoryCidStore()) as srv:
        answer = exchange(srv.address, data)
        assert answer.status is not None and 400 <= answer.status < 500, answer.data[:300]
        error = answer.body["error"]
        assert error["code"] and "\n" not in error["message"]
        assert NodeHttpClient(srv.url, requester, node.did).availability().status == "available"
    assert api_errors == []


def test_deep_json_job_is_refused_before_parsing(api_errors: list[logging.LogRecord]) -> None:
    node, requester = Identity.generate(), Identity.generate()
    with NodeHttpServer(
        node, reversing_runner(node), MemoryCidStore(), allowed_requesters=[requester.did]
    ) as srv:
        body = b"[" * 200_000 + b"]" * 200_000
        headers = _signed(requester, srv, "/start_job", body)
        headers["Content-Length"] = str(len(body))
        answer = exchange(srv.address, request("POST", "/start_job", headers, body))
        assert answer.status == 400 and "nests" in answer.body["error"]["message"]
    assert api_errors == []
