"""The node's signed HTTP API: a real server on 127.0.0.1 in a thread, a real client, no mocks."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chefsplan_agents.bundles import (
    ModelRequirement,
    OfferedModel,
    ResultBundle,
    TaskBundle,
    Timings,
    decode_result_bundle,
    decode_task_bundle,
    encode_bundle,
    output_hash,
    sign_bundle,
    verify_bundle,
)
from chefsplan_agents.errors import (
    BundleError,
    InvalidSignature,
    JobFailed,
    JobNotFound,
    JobTimeout,
    NodeError,
    NodeRequestRejected,
    NodeUnavailable,
    VerificationError,
)
from chefsplan_agents.identity import Identity
from chefsplan_agents.node._http import JobContentStore, NodeHttpServer
from chefsplan_agents.node._http_client import NodeHttpClient
from chefsplan_agents.node._signing import (
    HEADER_DID,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    NonceCache,
    sign_request,
    sign_response,
    verify_response,
)
from chefsplan_agents.storage import MemoryCidStore, compute_cid

SHA = "cd" * 32
MODEL = OfferedModel(name="tiny-chef", sha256=SHA, quantization="Q4_1", context_length=2048)
PRICE = 1_500_000_000_000_000_000_000  # larger than a float can hold exactly


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node() -> Identity:
    return Identity.generate()


@pytest.fixture(scope="module")
def requester() -> Identity:
    return Identity.generate()


@pytest.fixture(scope="module")
def stranger() -> Identity:
    return Identity.generate()


def reversing_runner(node: Identity, *, sign: bool = True) -> Callable[[TaskBundle, str], Any]:
    """A job runner with no model: the output is the prompt reversed, as a real ResultBundle."""

    def run(bundle: TaskBundle, bundle_cid: str) -> ResultBundle:
        text = (bundle.prompt or "")[::-1]
        result = ResultBundle(
            task_cid=bundle_cid,
            output=text,
            token_ids=tuple(ord(ch) for ch in text),
            model_sha256=SHA,
            llama_cpp_build="test-build",
            timings=Timings(
                prompt_tokens=len(text),
                generated_tokens=len(text),
                prompt_ms=1.0,
                generation_ms=2.5,
            ),
            node_did=node.did,
            output_hash=output_hash(text),
        )
        return sign_bundle(result, node) if sign else result

    return run


def make_task(requester: Identity, prompt: str = "soup of the day", **extra: Any) -> TaskBundle:
    task = TaskBundle(
        kind="completion",
        prompt=prompt,
        model=ModelRequirement(name="tiny-chef"),
        requester_did=requester.did,
        **extra,
    )
    return sign_bundle(task, requester)


@pytest.fixture(scope="module")
def store() -> MemoryCidStore:
    return MemoryCidStore()


@pytest.fixture(scope="module")
def server(
    node: Identity, requester: Identity, stranger: Identity, store: MemoryCidStore
) -> Iterator[NodeHttpServer]:
    with NodeHttpServer(
        node,
        reversing_runner(node),
        store,
        model=MODEL,
        price_per_1k_tokens_wei=PRICE,
        allowed_requesters=(requester.did, stranger.did),
    ) as srv:
        yield srv


@pytest.fixture
def client(server: NodeHttpServer, requester: Identity, node: Identity) -> NodeHttpClient:
    return NodeHttpClient(server.url, requester, node.did, timeout_s=10)


class Gate:
    """A runner that blocks until released, to observe queued/running jobs without sleeping."""

    def __init__(self, node: Identity) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self._inner = reversing_runner(node)

    def __call__(self, bundle: TaskBundle, bundle_cid: str) -> ResultBundle:
        self.started.set()
        assert self.release.wait(30)
        result: ResultBundle = self._inner(bundle, bundle_cid)
        return result


# --- raw signed requests (to craft what a well-behaved client never sends) ----------------


class Raw:
    """One HTTP exchange, its response signature checked against the node."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body
        self.json: dict[str, Any] = json.loads(body)

    @property
    def code(self) -> str:
        return str(self.json["error"]["code"])

    @property
    def message(self) -> str:
        message = str(self.json["error"]["message"])
        assert message and "\n" not in message
        return message


def raw_request(
    server: NodeHttpServer,
    signer: Identity,
    method: str,
    path: str,
    *,
    query: str = "",
    body: bytes = b"",
    sent_body: bytes | None = None,
    audience: str | None = None,
    now: float | None = None,
    headers: dict[str, str] | None = None,
    drop: tuple[str, ...] = (),
) -> Raw:
    signed = sign_request(
        signer,
        method=method,
        path=path,
        query=query,
        body=body,
        audience_did=audience or server.node_did,
        now=now,
    )
    send = signed.as_headers()
    for name in drop:
        del send[name]
    send.update(headers or {})
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        target = path + (f"?{query}" if query else "")
        payload = body if sent_body is None else sent_body
        conn.request(method, target, body=payload or None, headers=send)
        reply = conn.getresponse()
        raw = Raw(reply.status, dict(reply.getheaders()), reply.read())
    finally:
        conn.close()
    # Every answer, errors included, is signed by the node for this request.
    verify_response(
        raw.headers,
        status=raw.status,
        body=raw.body,
        request_nonce=send.get(HEADER_NONCE, ""),
        node_did=server.node_did,
        now=time.time(),
    )
    return raw


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text
    return text


# --- happy path ---------------------------------------------------------------------------


def test_availability_reports_node_model_and_price(client: NodeHttpClient, node: Identity) -> None:
    info = client.availability()
    assert info.status == "available"
    assert info.node_did == node.did
    assert info.model == MODEL
    assert info.price_per_1k_tokens_wei == PRICE
    assert info.schema_version == 1


def test_input_schema_is_the_task_bundle_schema(client: NodeHttpClient) -> None:
    schema = client.input_schema()
    assert schema == json.loads(json.dumps(TaskBundle.model_json_schema()))
    assert "requester_did" in schema["required"]


def test_start_job_to_verified_signed_result(
    client: NodeHttpClient, requester: Identity, node: Identity, store: MemoryCidStore
) -> None:
    task = make_task(requester, "tomato basil")
    handle = client.start_job(task)
    assert handle.status in ("queued", "running")
    assert handle.task_cid == compute_cid(encode_bundle(task))
    assert handle.node_did == node.did

    done = client.wait(handle.job_id, timeout=30)
    assert done.status == "completed" and done.done
    result = done.result
    assert result is not None
    assert result.output == "lisab otamot"
    assert result.task_cid == handle.task_cid
    assert result.node_did == node.did
    verify_bundle(result)
    assert done.output_hash == output_hash("lisab otamot") == result.output_hash
    # Both bundles are in the content store under the CIDs the API returned.
    assert done.result_cid == compute_cid(encode_bundle(result))
    assert decode_result_bundle(store.get(done.result_cid)) == result
    assert decode_task_bundle(store.get(handle.task_cid)) == task


def test_same_bundle_twice_is_the_same_job(client: NodeHttpClient, requester: Identity) -> None:
    task = make_task(requester, "same twice")
    first = client.start_job(task)
    second = client.start_job(task)
    assert second.job_id == first.job_id
    assert client.wait(first.job_id, timeout=30).status == "completed"


def test_unsigned_result_is_signed_by_the_node(
    node: Identity, requester: Identity, store: MemoryCidStore
) -> None:
    with NodeHttpServer(
        node, reversing_runner(node, sign=False), store, allowed_requesters=[requester.did]
    ) as srv:
        client = NodeHttpClient(srv.url, requester, node.did)
        done = client.wait(client.start_job(make_task(requester, "abc")).job_id, timeout=30)
    assert done.result is not None and done.result.signature is not None
    verify_bundle(done.result)


def test_job_states_while_the_runner_works(
    node: Identity, requester: Identity, store: MemoryCidStore
) -> None:
    gate = Gate(node)
    with NodeHttpServer(
        node, gate, store, max_queued_jobs=1, allowed_requesters=[requester.did]
    ) as srv:
        client = NodeHttpClient(srv.url, requester, node.did)
        try:
            handle = client.start_job(make_task(requester, "slow"))
            assert gate.started.wait(30)
            status = client.status(handle.job_id)
            assert status.status == "running" and not status.done and status.result is None
            assert client.availability().status == "busy"
            with pytest.raises(NodeRequestRejected) as busy:
                client.start_job(make_task(requester, "one too many"))
            assert (busy.value.status, busy.value.code) == (503, "busy")
            with pytest.raises(JobTimeout, match="still running"):
                client.wait(handle.job_id, timeout=0)
        finally:
            gate.release.set()
        assert client.wait(handle.job_id, timeout=30).result is not None


def test_failing_runner_fails_the_job_not_the_server(
    node: Identity, requester: Identity, store: MemoryCidStore
) -> None:
    def broken(bundle: TaskBundle, bundle_cid: str) -> ResultBundle:
        raise RuntimeError("model file vanished\nsecond line")

    with NodeHttpServer(node, broken, store, allowed_requesters=[requester.did]) as srv:
        client = NodeHttpClient(srv.url, requester, node.did)
        handle = client.start_job(make_task(requester))
        with pytest.raises(JobFailed, match="RuntimeError: model file vanished second line") as exc:
            client.wait(handle.job_id, timeout=30)
        _one_line(exc.value)
        assert client.availability().status == "available"


def test_result_for_another_node_fails_the_job(
    node: Identity, stranger: Identity, requester: Identity, store: MemoryCidStore
) -> None:
    with NodeHttpServer(
        node, reversing_runner(stranger), store, allowed_requesters=[requester.did]
    ) as srv:
        client = NodeHttpClient(srv.url, requester, node.did)
        handle = client.start_job(make_task(requester))
        with pytest.raises(JobFailed, match="not this node"):
            client.wait(handle.job_id, timeout=30)


# --- request authentication ---------------------------------------------------------------


def test_valid_raw_request_is_accepted(server: NodeHttpServer, requester: Identity) -> None:
    reply = raw_request(server, requester, "GET", "/availability")
    assert reply.status == 200 and reply.json["node_did"] == server.node_did


def test_signature_by_another_key_is_refused(
    server: NodeHttpServer, requester: Identity, stranger: Identity
) -> None:
    reply = raw_request(
        server, stranger, "GET", "/availability", headers={HEADER_DID: requester.did}
    )
    assert (reply.status, reply.code) == (401, "bad_signature")
    assert requester.did in reply.message


def test_tampered_body_is_refused(server: NodeHttpServer, requester: Identity) -> None:
    body = encode_bundle(make_task(requester, "lemon tart"))
    tampered = body.replace(b"lemon tart", b"lemon pie!")
    assert len(tampered) == len(body) and tampered != body
    reply = raw_request(server, requester, "POST", "/start_job", body=body, sent_body=tampered)
    assert (reply.status, reply.code) == (401, "bad_signature")


def test_tampered_query_is_refused(server: NodeHttpServer, requester: Identity) -> None:
    signed = raw_request(server, requester, "GET", "/status", query="job_id=aaaa")
    assert (signed.status, signed.code) == (404, "unknown_job")  # authenticated, then looked up
    host, port = server.address
    headers = sign_request(
        requester,
        method="GET",
        path="/status",
        query="job_id=aaaa",
        body=b"",
        audience_did=server.node_did,
    ).as_headers()
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", "/status?job_id=bbbb", headers=headers)
        reply2 = conn.getresponse()
        assert reply2.status == 401
        assert json.loads(reply2.read())["error"]["code"] == "bad_signature"
    finally:
        conn.close()


def test_replayed_nonce_is_refused(server: NodeHttpServer, requester: Identity) -> None:
    signed = sign_request(
        requester,
        method="GET",
        path="/availability",
        query="",
        body=b"",
        audience_did=server.node_did,
    )
    host, port = server.address
    statuses, codes = [], []
    for _ in range(2):
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request("GET", "/availability", headers=signed.as_headers())
            reply = conn.getresponse()
            statuses.append(reply.status)
            codes.append(json.loads(reply.read()).get("error", {}).get("code"))
        finally:
            conn.close()
    assert statuses == [200, 401]
    assert codes == [None, "replayed_nonce"]


@pytest.mark.parametrize("offset", [-120, 120])
def test_stale_timestamp_is_refused(
    server: NodeHttpServer, requester: Identity, offset: int
) -> None:
    reply = raw_request(server, requester, "GET", "/availability", now=time.time() + offset)
    assert (reply.status, reply.code) == (401, "stale_request")
    assert "±60 s" in reply.message


def test_clock_skew_window_is_configurable(
    node: Identity, requester: Identity, store: MemoryCidStore, server: NodeHttpServer
) -> None:
    earlier = time.time() - 30
    assert raw_request(server, requester, "GET", "/availability", now=earlier).status == 200
    with NodeHttpServer(node, reversing_runner(node), store, max_clock_skew_s=5) as strict:
        reply = raw_request(strict, requester, "GET", "/availability", now=earlier)
    assert (reply.status, reply.code) == (401, "stale_request")


@pytest.mark.parametrize(
    ("headers", "drop", "code"),
    [
        ({HEADER_DID: "did:web:example.com"}, (), "invalid_did"),
        ({HEADER_DID: "did:key:z6MkNOTAKEY"}, (), "invalid_did"),
        ({}, (HEADER_SIGNATURE,), "missing_signature"),
        ({}, (HEADER_NONCE,), "missing_signature"),
        ({HEADER_TIMESTAMP: "yesterday"}, (), "bad_timestamp"),
        ({HEADER_NONCE: "short"}, (), "bad_nonce"),
        ({HEADER_SIGNATURE: "not-base64-!!"}, (), "bad_signature"),
    ],
)
def test_malformed_signature_headers_are_refused(
    server: NodeHttpServer,
    requester: Identity,
    headers: dict[str, str],
    drop: tuple[str, ...],
    code: str,
) -> None:
    reply = raw_request(server, requester, "GET", "/availability", headers=headers, drop=drop)
    assert (reply.status, reply.code) == (401, code)
    reply.message  # noqa: B018 - asserts one line


def test_request_signed_for_another_node_is_refused(
    server: NodeHttpServer, requester: Identity, stranger: Identity
) -> None:
    reply = raw_request(server, requester, "GET", "/availability", audience=stranger.did)
    assert (reply.status, reply.code) == (401, "bad_signature")


def test_client_expecting_another_node_rejects_the_answer(
    server: NodeHttpServer, requester: Identity, stranger: Identity
) -> None:
    client = NodeHttpClient(server.url, requester, stranger.did)
    with pytest.raises(InvalidSignature, match="not by the node asked") as exc:
        client.availability()
    _one_line(exc.value)


def test_authorize_hook_refuses_requesters(
    node: Identity, requester: Identity, stranger: Identity, store: MemoryCidStore
) -> None:
    with NodeHttpServer(
        node, reversing_runner(node), store, authorize=lambda did: did == requester.did
    ) as srv:
        assert NodeHttpClient(srv.url, requester, node.did).availability().node_did == node.did
        with pytest.raises(NodeRequestRejected) as exc:
            NodeHttpClient(srv.url, stranger, node.did).availability()
    assert (exc.value.status, exc.value.code) == (403, "forbidden")


# --- bundle checks ------------------------------------------------------------------------


def test_bundle_of_another_requester_is_refused(
    server: NodeHttpServer, requester: Identity, stranger: Identity
) -> None:
    body = encode_bundle(make_task(requester, "not yours"))
    reply = raw_request(server, stranger, "POST", "/start_job", body=body)
    assert (reply.status, reply.code) == (401, "requester_mismatch")
    assert stranger.did in reply.message


def test_tampered_bundle_signature_is_refused(client: NodeHttpClient, requester: Identity) -> None:
    task = make_task(requester, "honest prompt")
    forged = task.model_copy(update={"prompt": "forged prompt"})
    with pytest.raises(NodeRequestRejected) as exc:
        client.start_job(forged)
    assert (exc.value.status, exc.value.code) == (401, "bad_bundle_signature")
    _one_line(exc.value)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid UTF-8 JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"schema_version": 1, "kind": "chat"}', "TaskBundle field"),
        (b'{"schema_version": 7}', "schema_version 7"),
    ],
)
def test_malformed_bundles_get_400_with_the_bundle_message(
    server: NodeHttpServer, requester: Identity, body: bytes, fragment: str
) -> None:
    reply = raw_request(server, requester, "POST", "/start_job", body=body)
    assert (reply.status, reply.code) == (400, "invalid_bundle")
    assert fragment in reply.message


def test_oversize_body_gets_413(node: Identity, requester: Identity, store: MemoryCidStore) -> None:
    with NodeHttpServer(
        node, reversing_runner(node), store, max_body_bytes=2048, allowed_requesters=[requester.did]
    ) as srv:
        client = NodeHttpClient(srv.url, requester, node.did)
        with pytest.raises(NodeRequestRejected) as exc:
            client.start_job(make_task(requester, "x" * 4096))
        assert (exc.value.status, exc.value.code) == (413, "body_too_large")
        assert "2048-byte limit" in _one_line(exc.value)
        # The server is still fine afterwards.
        assert client.availability().status == "available"


def test_oversize_is_judged_from_content_length_before_reading(
    server: NodeHttpServer, requester: Identity
) -> None:
    # A body is announced but never sent: a server that read it first would stall until timeout.
    announced = str(1 << 40)
    reply = raw_request(
        server, requester, "POST", "/start_job", headers={"Content-Length": announced}
    )
    assert (reply.status, reply.code) == (413, "body_too_large")
    assert announced in reply.message


# --- routing and jobs ---------------------------------------------------------------------


def test_unknown_job_is_404(client: NodeHttpClient) -> None:
    with pytest.raises(JobNotFound) as exc:
        client.status("0123456789abcdef")
    assert isinstance(exc.value, LookupError)
    assert exc.value.status == 404
    _one_line(exc.value)


def test_status_needs_exactly_one_job_id(server: NodeHttpServer, requester: Identity) -> None:
    reply = raw_request(server, requester, "GET", "/status")
    assert (reply.status, reply.code) == (400, "bad_query")


def test_only_the_requester_reads_a_jobs_status(
    client: NodeHttpClient, server: NodeHttpServer, requester: Identity, stranger: Identity
) -> None:
    handle = client.start_job(make_task(requester, "private"))
    nosy = NodeHttpClient(server.url, stranger, server.node_did)
    with pytest.raises(NodeRequestRejected) as exc:
        nosy.status(handle.job_id)
    assert (exc.value.status, exc.value.code) == (403, "forbidden")
    assert client.wait(handle.job_id, timeout=30).status == "completed"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nowhere", 404, "not_found"),
        ("POST", "/availability", 405, "method_not_allowed"),
        ("GET", "/start_job", 405, "method_not_allowed"),
    ],
)
def test_unknown_routes(
    server: NodeHttpServer, requester: Identity, method: str, path: str, status: int, code: str
) -> None:
    reply = raw_request(server, requester, method, path)
    assert (reply.status, reply.code) == (status, code)


# --- a man in the middle ------------------------------------------------------------------


Transform = Callable[
    [dict[str, str], int, dict[str, str], bytes], tuple[int, dict[str, str], bytes]
]


class Proxy:
    """A forwarding HTTP proxy on 127.0.0.1 that may rewrite the node's answers."""

    def __init__(self, upstream: NodeHttpServer, transform: Transform) -> None:
        host, port = upstream.address

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                request_headers = dict(self.headers.items())
                conn = http.client.HTTPConnection(host, port, timeout=10)
                try:
                    conn.request(
                        self.command, self.path, body=body or None, headers=request_headers
                    )
                    reply = conn.getresponse()
                    status, headers, data = transform(
                        request_headers, reply.status, dict(reply.getheaders()), reply.read()
                    )
                finally:
                    conn.close()
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("content-length", "connection", "server", "date"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> Proxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def test_honest_proxy_changes_nothing(server: NodeHttpServer, requester: Identity) -> None:
    with Proxy(server, lambda req, status, headers, body: (status, headers, body)) as proxy:
        client = NodeHttpClient(proxy.url, requester, server.node_did)
        assert client.availability().price_per_1k_tokens_wei == PRICE


def test_tampered_response_raises_invalid_signature(
    server: NodeHttpServer, requester: Identity
) -> None:
    def cheaper(req: dict[str, str], status: int, headers: dict[str, str], body: bytes) -> Any:
        return status, headers, body.replace(str(PRICE).encode(), b"1")

    with Proxy(server, cheaper) as proxy:
        client = NodeHttpClient(proxy.url, requester, server.node_did)
        with pytest.raises(InvalidSignature, match="altered in transit") as exc:
            client.availability()
    _one_line(exc.value)


def test_replayed_response_raises_invalid_signature(
    server: NodeHttpServer, requester: Identity
) -> None:
    recorded: list[tuple[int, dict[str, str], bytes]] = []

    def replay(req: dict[str, str], status: int, headers: dict[str, str], body: bytes) -> Any:
        if not recorded:
            recorded.append((status, headers, body))
        return recorded[0]

    with Proxy(server, replay) as proxy:
        client = NodeHttpClient(proxy.url, requester, server.node_did)
        client.availability()
        with pytest.raises(InvalidSignature, match="does not answer this request"):
            client.availability()


def test_unsigned_response_raises_invalid_signature(
    server: NodeHttpServer, requester: Identity
) -> None:
    def strip(req: dict[str, str], status: int, headers: dict[str, str], body: bytes) -> Any:
        return status, {k: v for k, v in headers.items() if k != HEADER_SIGNATURE}, body

    with Proxy(server, strip) as proxy:
        client = NodeHttpClient(proxy.url, requester, server.node_did)
        with pytest.raises(InvalidSignature, match="no X-Chefsplan-Signature"):
            client.availability()


def test_lying_node_result_cid_raises_verification_error(
    server: NodeHttpServer, requester: Identity, node: Identity
) -> None:
    """A node that signs a wrong result CID is caught by the client's own CID check."""
    fake_cid = compute_cid(b"some other content")

    def lie(req: dict[str, str], status: int, headers: dict[str, str], body: bytes) -> Any:
        data = json.loads(body)
        if data.get("status") != "completed":
            return status, headers, body
        data["result_cid"] = fake_cid
        new_body = json.dumps(data).encode()
        signed = sign_response(node, status=status, body=new_body, request_nonce=req[HEADER_NONCE])
        return status, {**headers, **signed.as_headers()}, new_body

    client = NodeHttpClient(server.url, requester, node.did)
    handle = client.start_job(make_task(requester, "lie to me"))
    client.wait(handle.job_id, timeout=30)
    with Proxy(server, lie) as proxy:
        liar = NodeHttpClient(proxy.url, requester, node.did)
        with pytest.raises(VerificationError, match="result CID"):
            liar.status(handle.job_id)


def test_lying_node_task_cid_raises_verification_error(
    server: NodeHttpServer, requester: Identity, node: Identity
) -> None:
    fake_cid = compute_cid(b"a different task")

    def lie(req: dict[str, str], status: int, headers: dict[str, str], body: bytes) -> Any:
        data = json.loads(body)
        data["task_cid"] = fake_cid
        new_body = json.dumps(data).encode()
        signed = sign_response(node, status=status, body=new_body, request_nonce=req[HEADER_NONCE])
        return status, {**headers, **signed.as_headers()}, new_body

    with Proxy(server, lie) as proxy:
        liar = NodeHttpClient(proxy.url, requester, node.did)
        with pytest.raises(VerificationError, match="do not trust"):
            liar.start_job(make_task(requester, "which task?"))


# --- the client's own checks --------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_node_is_one_line_node_unavailable(requester: Identity, node: Identity) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    client = NodeHttpClient(url, requester, node.did, timeout_s=5)
    with pytest.raises(NodeUnavailable) as exc:
        client.availability()
    assert isinstance(exc.value, ConnectionError) and isinstance(exc.value, NodeError)
    assert url in _one_line(exc.value)


def test_client_refuses_unsigned_or_foreign_bundles(
    client: NodeHttpClient, requester: Identity, stranger: Identity
) -> None:
    unsigned = make_task(requester).model_copy(update={"signature": None})
    with pytest.raises(BundleError, match="not signed"):
        client.start_job(unsigned)
    with pytest.raises(BundleError, match="use the requester's identity"):
        client.start_job(make_task(stranger))


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:1", "127.0.0.1:8080", ""])
def test_client_refuses_bad_urls(url: str, requester: Identity, node: Identity) -> None:
    with pytest.raises(NodeError, match="not http"):
        NodeHttpClient(url, requester, node.did)


def test_server_url_before_start_is_an_error(node: Identity, store: MemoryCidStore) -> None:
    srv = NodeHttpServer(node, reversing_runner(node), store)
    with pytest.raises(NodeError, match="not started"):
        srv.url  # noqa: B018


def test_busy_port_is_a_one_line_error(
    server: NodeHttpServer, node: Identity, store: MemoryCidStore
) -> None:
    _, port = server.address
    with pytest.raises(NodeError, match="pick another port") as exc:
        NodeHttpServer(node, reversing_runner(node), store, port=port).start()
    _one_line(exc.value)


def test_memory_store_fits_the_narrow_store_protocol(store: MemoryCidStore) -> None:
    assert isinstance(store, JobContentStore)


def test_nonce_cache_forgets_after_ttl_and_bounds_its_size() -> None:
    cache = NonceCache(10, max_entries=2)
    assert cache.check_and_add("did:a", "n1", now=100)
    assert not cache.check_and_add("did:a", "n1", now=105)
    assert cache.check_and_add("did:b", "n1", now=105)  # nonces are per requester
    assert not cache.check_and_add("did:a", "n2", now=106)  # full
    assert cache.check_and_add("did:a", "n1", now=111)  # the first one expired
    assert len(cache) == 2
