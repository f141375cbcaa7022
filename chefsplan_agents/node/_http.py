"""The provider node's signed HTTP API for direct, low-latency off-chain jobs.

Shaped like an agentic-service API (MIP-003): ::

    GET  /availability           node DID, model, price, queue
    GET  /input_schema           JSON schema of the TaskBundle the node accepts
    POST /start_job              body: a signed TaskBundle (JSON) → job_id, task CID, status
    GET  /status?job_id=…        status; when completed the ResultBundle, its CID and hash

Every request is signed by its sender's DID and every response by the node's (see
``_signing``). Errors are JSON ``{"error": {"code": …, "message": …}}`` with a one-line message.
Jobs run on a small worker pool through a pluggable :data:`JobRunner`, and both the task and the
result are stored in a content store, so what travels over HTTP is also addressable by CID.

Jobs are free, so only requesters the operator names may start them (``allowed_requesters``;
``open_to_all`` lets anyone). Every request is treated as hostile, in this order, each step
before the next costs anything: connections beyond ``max_connections`` get 503 at once; the
route; ``Content-Length`` (ASCII digits only, at most ``max_body_bytes``); the signature
headers' lengths, forms and timestamp; the requester's authorization; the job queue's room;
only then is the body read, the signature checked, the nonce counted against the requester's
quota, and the body parsed (its JSON nesting bounded). Every malformed request gets a 4xx with
a one-line JSON error, and none is logged with a traceback.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Literal, Protocol, Self, runtime_checkable
from urllib.parse import parse_qs, urlsplit

from chefsplan_agents._json import JsonTooDeep
from chefsplan_agents._json import loads as json_loads
from chefsplan_agents.bundles import (
    SCHEMA_VERSION,
    OfferedModel,
    ResultBundle,
    TaskBundle,
    canonical_json,
    decode_task_bundle,
    encode_bundle,
    sign_bundle,
    verify_bundle,
)
from chefsplan_agents.errors import (
    BundleError,
    ChefsplanError,
    InvalidSignature,
    NodeError,
)
from chefsplan_agents.identity import Identity
from chefsplan_agents.node._signing import (
    DEFAULT_MAX_CLOCK_SKEW_S,
    HEADER_NONCE,
    NonceCache,
    RequestAuthError,
    SignedHeaders,
    parse_request_headers,
    sign_response,
    verify_request_signature,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CONNECTIONS",
    "JobContentStore",
    "JobRunner",
    "JobState",
    "NodeHttpServer",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES: Final = 4 * 1024 * 1024
"""Largest request body the API reads (a TaskBundle's default size limit)."""

DEFAULT_MAX_CONNECTIONS: Final = 32
"""Connections served at once (one thread each); more are answered 503 and closed."""

# Content-Length as RFC 9110 writes it: ASCII digits (str.isdigit() also takes "²" and "٣").
_CONTENT_LENGTH_RE: Final = re.compile(r"[0-9]{1,15}")

JobState = Literal["queued", "running", "completed", "failed"]

JobRunner = Callable[[TaskBundle, str], ResultBundle]
"""Runs a verified task: ``runner(bundle, bundle_cid) -> ResultBundle``.

The result must name the node's DID and ``task_cid == bundle_cid``; an unsigned result is signed
by the server with the node's identity. Raising fails the job with the error's message.
"""


@runtime_checkable
class JobContentStore(Protocol):
    """The part of a content store the HTTP API needs (every ``ContentStore`` has it)."""

    def put(self, data: bytes, /) -> str:
        """Store bytes and return their CID."""
        ...

    def get(self, cid: str, /) -> bytes:
        """Return the bytes a CID names."""
        ...


class _ApiError(Exception):
    def __init__(self, status: HTTPStatus, code: str, message: str) -> None:
        self.status = status
        self.code = code
        # One line, whatever the cause said.
        self.message = " ".join(message.split())
        super().__init__(self.message)


@dataclass
class _Job:
    job_id: str
    requester_did: str
    task_cid: str
    state: JobState = "queued"
    result: ResultBundle | None = None
    result_cid: str | None = None
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "job_id": self.job_id,
            "status": self.state,
            "task_cid": self.task_cid,
        }
        if self.result is not None:
            out["result_cid"] = self.result_cid
            out["output_hash"] = self.result.output_hash
            out["result"] = self.result.model_dump(mode="json")
        if self.error is not None:
            out["error"] = self.error
        return out


_ROUTES: Final[dict[str, str]] = {
    "/availability": "GET",
    "/input_schema": "GET",
    "/start_job": "POST",
    "/status": "GET",
}


def _busy_response() -> bytes:
    body = _error_body("busy", "the node serves as many connections as it may; retry later")
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _QuietServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` of them."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], max_connections: int
    ) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        self._busy = _busy_response()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            # Answered on the accept thread, so it must never wait on the client.
            try:
                request.settimeout(0.2)
                request.sendall(self._busy)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-answer is routine; the stdlib would print a traceback.
        logger.debug("connection from %s failed", client_address, exc_info=True)


class _Body(Protocol):
    """The request body, read only when the API asks (see ``_Handler``)."""

    def length(self, limit: int) -> int:
        """The announced length, checked; raises :class:`_ApiError`."""
        ...

    def read(self, length: int) -> bytes:
        """Exactly ``length`` bytes; raises :class:`_ApiError`."""
        ...


class NodeHttpServer:
    """A node's signed HTTP API on a background thread.

    Use it as a context manager; the port is chosen by the OS when ``port=0``::

        with NodeHttpServer(node_identity, runner, store) as server:
            client = NodeHttpClient(server.url, requester_identity, server.node_did)

    Args:
        identity: The node's identity; it signs every response and every result.
        runner: Runs each accepted task (see :data:`JobRunner`).
        store: Where the task and result bundles are put (their CIDs are returned).
        model: The model served, reported by ``/availability``.
        price_per_1k_tokens_wei: The price reported by ``/availability``.
        host: Interface to bind; loopback by default.
        port: TCP port; 0 picks a free one.
        workers: Jobs run at the same time.
        max_queued_jobs: Jobs waiting or running before ``/start_job`` answers 503.
        max_finished_jobs: Finished jobs kept for ``/status``; the oldest are forgotten first.
        max_body_bytes: Larger request bodies get 413, checked from ``Content-Length``.
        max_clock_skew_s: Requests whose timestamp is further off get 401.
        authorize: Optional check of a requester DID on every endpoint; ``False`` answers 403.
        clock: Wall clock in Unix seconds (tests pass a fake one).
        socket_timeout_s: How long a connection may stall mid-request (then 408 or closed).
        allowed_requesters: DIDs that may start jobs; everyone else gets 403 from
            ``/start_job`` before the body is read. Empty (the default): no one, unless
            ``open_to_all``.
        open_to_all: Let any DID start jobs (jobs are free: only for a trusted network).
        max_connections: Connections served at once; more get 503 and are closed at once.
        max_nonces_per_did: Requests one DID may send per twice the clock-skew window (its
            nonces are remembered that long); more get 429.
    """

    def __init__(
        self,
        identity: Identity,
        runner: JobRunner,
        store: JobContentStore,
        *,
        model: OfferedModel | None = None,
        price_per_1k_tokens_wei: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        workers: int = 2,
        max_queued_jobs: int = 64,
        max_finished_jobs: int = 1024,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_clock_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S,
        authorize: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.time,
        socket_timeout_s: float = 15.0,
        allowed_requesters: Collection[str] = (),
        open_to_all: bool = False,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_nonces_per_did: int = 2_000,
    ) -> None:
        if workers < 1:
            raise NodeError(f"workers must be at least 1, got {workers}")
        if max_connections < 1:
            raise NodeError(f"max_connections must be at least 1, got {max_connections}")
        if max_body_bytes < 1:
            raise NodeError(f"max_body_bytes must be positive, got {max_body_bytes}")
        if max_clock_skew_s <= 0:
            raise NodeError(f"max_clock_skew_s must be positive, got {max_clock_skew_s}")
        self._identity = identity
        self._runner = runner
        self._store = store
        self._model = model
        self._price = price_per_1k_tokens_wei
        self._host = host
        self._port = port
        self._workers = workers
        self._max_queued = max_queued_jobs
        self._max_finished = max_finished_jobs
        self._max_body = max_body_bytes
        self._max_skew = max_clock_skew_s
        self._authorize = authorize
        self._clock = clock
        self._socket_timeout = socket_timeout_s
        self._allowed = frozenset(allowed_requesters)
        self._open = open_to_all
        self._max_connections = max_connections
        self._nonces = NonceCache(2 * max_clock_skew_s, max_per_did=max_nonces_per_did)
        self._jobs: dict[str, _Job] = {}
        self._jobs_by_task: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._schema_body = canonical_json(TaskBundle.model_json_schema())
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind the socket and serve on a background thread.

        Raises:
            NodeError: The address cannot be bound.
        """
        if self._httpd is not None:
            return self
        handler = _make_handler(self)
        try:
            httpd = _QuietServer((self._host, self._port), handler, self._max_connections)
        except OSError as err:
            raise NodeError(
                f"cannot serve the node API on {self._host}:{self._port}: "
                f"{err.strerror or err}; pick another port"
            ) from err
        self._httpd = httpd
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="chefsplan-job")
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="chefsplan-node-http",
            daemon=True,
        )
        self._thread.start()
        logger.info("node API of %s serving on %s", self.node_did, self.url)
        return self

    def close(self) -> None:
        """Stop serving, wait for running jobs to finish, and release the socket."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def node_did(self) -> str:
        """The DID that signs every response."""
        return self._identity.did

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``.

        Raises:
            NodeError: The server is not started.
        """
        if self._httpd is None:
            raise NodeError("the node API is not started; call start() or use it in a with block")
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        host, port = self.address
        return f"http://{host}:{port}"

    @property
    def max_body_bytes(self) -> int:
        """Largest request body accepted."""
        return self._max_body

    # --- jobs -------------------------------------------------------------------------------

    def job_state(self, job_id: str) -> JobState | None:
        """The state of a job, or ``None`` for an unknown id (for the node daemon's own use)."""
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else job.state

    def _counts(self) -> tuple[int, int]:
        with self._lock:
            queued = sum(1 for job in self._jobs.values() if job.state == "queued")
            running = sum(1 for job in self._jobs.values() if job.state == "running")
        return queued, running

    def may_start_jobs(self, did: str) -> bool:
        """Whether ``did`` may start jobs (the allow-list, or an API open to all)."""
        return self._open or did in self._allowed

    def _check_room(self) -> None:
        with self._lock:
            active = sum(1 for job in self._jobs.values() if job.state in ("queued", "running"))
        if active >= self._max_queued:
            raise _ApiError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "busy",
                f"the node has {active} jobs queued or running; retry later",
            )

    def _start_job(self, requester_did: str, body: bytes) -> tuple[HTTPStatus, dict[str, Any]]:
        try:
            json_loads(body)  # nesting bounded before any parser recurses into it
        except JsonTooDeep as err:
            raise _ApiError(HTTPStatus.BAD_REQUEST, "invalid_bundle", str(err)) from err
        except ValueError:
            pass  # not JSON: the bundle decoder says so in its own words
        try:
            bundle = decode_task_bundle(body, max_bytes=self._max_body)
        except InvalidSignature as err:
            raise _ApiError(HTTPStatus.UNAUTHORIZED, "bad_bundle_signature", str(err)) from err
        except BundleError as err:
            raise _ApiError(HTTPStatus.BAD_REQUEST, "invalid_bundle", str(err)) from err
        if bundle.requester_did != requester_did:
            raise _ApiError(
                HTTPStatus.UNAUTHORIZED,
                "requester_mismatch",
                f"the bundle's requester_did {bundle.requester_did} is not the request's "
                f"signer {requester_did}; sign the request with the bundle's identity",
            )
        self._check_room()  # before anything is stored: a busy node keeps no bundles
        data = encode_bundle(bundle)
        try:
            task_cid = self._store.put(data)
        except ChefsplanError as err:
            raise _ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "store_failed", str(err)) from err
        with self._lock:
            existing = self._jobs_by_task.get((requester_did, task_cid))
            if existing is not None:
                # The same signed bundle again: report the job it already started.
                return HTTPStatus.OK, self._jobs[existing].view()
            active = sum(1 for job in self._jobs.values() if job.state in ("queued", "running"))
            if active >= self._max_queued:
                raise _ApiError(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    "busy",
                    f"the node has {active} jobs queued or running; retry later",
                )
            pool = self._pool
            if pool is None:
                raise _ApiError(
                    HTTPStatus.SERVICE_UNAVAILABLE, "shutting_down", "the node is shutting down"
                )
            self._forget_finished()
            job = _Job(secrets.token_hex(16), requester_did, task_cid)
            self._jobs[job.job_id] = job
            self._jobs_by_task[(requester_did, task_cid)] = job.job_id
            pool.submit(self._run_job, job, bundle)
            view = job.view()
        return HTTPStatus.ACCEPTED, view

    def _forget_finished(self) -> None:
        # Called with the lock held: keep the table bounded by dropping the oldest finished jobs.
        finished = [job for job in self._jobs.values() if job.finished_at is not None]
        excess = len(finished) - self._max_finished
        if excess <= 0:
            return
        finished.sort(key=lambda job: job.finished_at or 0.0)
        for job in finished[:excess]:
            del self._jobs[job.job_id]
            self._jobs_by_task.pop((job.requester_did, job.task_cid), None)

    def _run_job(self, job: _Job, bundle: TaskBundle) -> None:
        with self._lock:
            job.state = "running"
        try:
            result = self._checked_result(self._runner(bundle, job.task_cid), job.task_cid)
            result_cid = self._store.put(encode_bundle(result))
        except Exception as err:  # any runner failure fails this job, never the server
            if isinstance(err, ChefsplanError):
                message = str(err)
            else:
                logger.exception("job %s failed", job.job_id)
                message = f"{type(err).__name__}: {err}"
            with self._lock:
                job.state = "failed"
                job.error = " ".join(message.split()) or type(err).__name__
                job.finished_at = self._clock()
            return
        with self._lock:
            job.result, job.result_cid = result, result_cid
            job.state = "completed"
            job.finished_at = self._clock()

    def _checked_result(self, result: ResultBundle, task_cid: str) -> ResultBundle:
        if not isinstance(result, ResultBundle):
            raise NodeError(f"the job runner returned {type(result).__name__}, not a ResultBundle")
        if result.node_did != self._identity.did:
            raise NodeError(
                f"the job runner's result names node {result.node_did}, not this node "
                f"({self._identity.did})"
            )
        if result.task_cid != task_cid:
            raise NodeError(
                f"the job runner's result is for task {result.task_cid}, not {task_cid}"
            )
        if result.signature is None:
            return sign_bundle(result, self._identity)
        verify_bundle(result)
        return result

    def _status(self, requester_did: str, query: str) -> dict[str, Any]:
        values = parse_qs(query, keep_blank_values=True).get("job_id", [])
        if len(values) != 1 or not values[0]:
            raise _ApiError(
                HTTPStatus.BAD_REQUEST, "bad_query", "give exactly one job_id query parameter"
            )
        job_id = values[0]
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise _ApiError(
                    HTTPStatus.NOT_FOUND,
                    "unknown_job",
                    f"no job {job_id[:80]!r} on this node; use the job_id start_job returned",
                )
            if job.requester_did != requester_did:
                raise _ApiError(
                    HTTPStatus.FORBIDDEN,
                    "forbidden",
                    "only the requester who started a job may read its status",
                )
            return job.view()

    def _availability(self) -> dict[str, Any]:
        queued, running = self._counts()
        return {
            "status": "busy" if queued + running >= self._max_queued else "available",
            "node_did": self._identity.did,
            "schema_version": SCHEMA_VERSION,
            "model": None if self._model is None else self._model.model_dump(mode="json"),
            "price_per_1k_tokens_wei": str(self._price),
            "queued": queued,
            "running": running,
        }

    # --- request handling (called from handler threads) -----------------------------------

    def _handle(
        self, method: str, target: str, headers: Any, body: _Body
    ) -> tuple[HTTPStatus, bytes]:
        """Authenticate and route one request; returns the status and the JSON body.

        Everything that can be judged from the request line and headers is, before the body
        is read (see the module docs for the order).
        """
        try:
            parts = urlsplit(target)
        except ValueError as err:
            raise _ApiError(
                HTTPStatus.BAD_REQUEST, "bad_target", "the request target is not a URL"
            ) from err
        path, query = parts.path, parts.query
        expected = _ROUTES.get(path)
        if expected is None:
            raise _ApiError(HTTPStatus.NOT_FOUND, "not_found", f"no endpoint {path[:80]!r}")
        if method != expected:
            raise _ApiError(
                HTTPStatus.METHOD_NOT_ALLOWED, "method_not_allowed", f"use {expected} {path}"
            )
        length = body.length(self._max_body)
        now = self._clock()
        try:
            claimed = parse_request_headers(headers, now=now, max_skew_s=self._max_skew)
        except RequestAuthError as err:
            raise _ApiError(HTTPStatus.UNAUTHORIZED, err.code, str(err)) from err
        # Authorization by the claimed DID, before the body is read; the signature over the
        # body is checked next, before anything is done for the requester.
        if self._authorize is not None and not self._authorize(claimed.did):
            raise _ApiError(
                HTTPStatus.FORBIDDEN, "forbidden", f"{claimed.did} may not use this node"
            )
        if path == "/start_job":
            if not self.may_start_jobs(claimed.did):
                raise _ApiError(
                    HTTPStatus.FORBIDDEN,
                    "not_allowed",
                    f"{claimed.did} may not start jobs on this node; ask its operator to "
                    "allow your DID",
                )
            self._check_room()
        signed = self._verify(claimed, method, path, query, body.read(length), now)
        status = HTTPStatus.OK
        result: dict[str, Any]
        if path == "/availability":
            result = self._availability()
        elif path == "/input_schema":
            return status, self._schema_body
        elif path == "/start_job":
            status, result = self._start_job(signed.did, signed.body)
        else:
            result = self._status(signed.did, query)
        return status, canonical_json(result)

    def _verify(
        self, claimed: SignedHeaders, method: str, path: str, query: str, data: bytes, now: float
    ) -> _SignedRequest:
        try:
            verify_request_signature(
                claimed,
                method=method,
                path=path,
                query=query,
                body=data,
                audience_did=self._identity.did,
            )
        except RequestAuthError as err:
            raise _ApiError(HTTPStatus.UNAUTHORIZED, err.code, str(err)) from err
        verdict = self._nonces.admit(
            claimed.did, claimed.nonce, now=now, priority=claimed.did in self._allowed
        )
        if verdict == "replayed":
            raise _ApiError(
                HTTPStatus.UNAUTHORIZED,
                "replayed_nonce",
                "request nonce was already used; send a freshly signed request",
            )
        if verdict != "fresh":
            raise _ApiError(
                HTTPStatus.TOO_MANY_REQUESTS,
                "too_many_requests",
                f"too many requests from {claimed.did} (or from everyone) in the last "
                f"{2 * self._max_skew:g} s; retry later",
            )
        return _SignedRequest(claimed.did, data)

    def _sign(self, status: int, body: bytes, request_nonce: str) -> dict[str, str]:
        return sign_response(
            self._identity,
            status=status,
            body=body,
            request_nonce=request_nonce,
            now=self._clock(),
        ).as_headers()


@dataclass(frozen=True)
class _SignedRequest:
    did: str
    body: bytes


def _error_body(code: str, message: str) -> bytes:
    return canonical_json({"error": {"code": code, "message": " ".join(message.split())}})


# What the request parser's own refusals become: a 4xx, never a 5xx, with a fixed message (the
# parser's messages quote the request). 501 is an unknown method, 505 an HTTP/2+ version.
_PARSER_ERRORS: Final[dict[int, tuple[HTTPStatus, str, str]]] = {
    501: (HTTPStatus.METHOD_NOT_ALLOWED, "method_not_allowed", "use GET or POST"),
    505: (HTTPStatus.BAD_REQUEST, "bad_version", "send HTTP/1.1 (or HTTP/1.0)"),
    414: (HTTPStatus.REQUEST_URI_TOO_LONG, "uri_too_long", "the request line is too long"),
    431: (
        HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
        "a header line is too long or there are too many headers",
    ),
    408: (HTTPStatus.REQUEST_TIMEOUT, "timeout", "the request was not sent in time"),
}
_BAD_REQUEST = (
    HTTPStatus.BAD_REQUEST,
    "bad_request",
    "malformed request; send METHOD PATH HTTP/1.1, then headers",
)


def _make_handler(server: NodeHttpServer) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Errors found while parsing the request line are answered with a status line too
        # (the stdlib's default, HTTP/0.9, sends a bare body).
        default_request_version = "HTTP/1.0"
        server_version = "chefsplan-node"
        sys_version = ""
        timeout = server._socket_timeout
        _unread = False  # a request body not read (yet)

        def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def parse_request(self) -> bool:
            raw: bytes = getattr(self, "raw_requestline", b"")
            line = str(raw, "iso-8859-1").rstrip("\r\n")
            words = line.split()
            if len(words) != 3:
                # Blank lines and HTTP/0.9 requests: refused, with a status line.
                self.requestline = line[:200]
                self.command = ""
                self.request_version = self.default_request_version
                self.close_connection = True
                self.send_error(HTTPStatus.BAD_REQUEST)
                return False
            return super().parse_request()

        def handle_expect_100(self) -> bool:
            # No 100 Continue: the headers are judged first, and a refusal closes the
            # connection before the client sends the body.
            return True

        def send_error(
            self, code: int, message: str | None = None, explain: str | None = None
        ) -> None:
            # The parser's refusals, as JSON with a one-line message.
            status, error, text = _PARSER_ERRORS.get(int(code), _BAD_REQUEST)
            self.close_connection = True
            self._answer(status, _error_body(error, text), "")

        def length(self, limit: int) -> int:
            self._unread = False
            if self.headers.get("Transfer-Encoding") is not None:
                self.close_connection = True
                raise _ApiError(
                    HTTPStatus.LENGTH_REQUIRED,
                    "length_required",
                    "send a Content-Length; chunked bodies are not accepted",
                )
            values = self.headers.get_all("Content-Length") or []
            if not values:
                return 0
            raw = values[0].strip()
            if len(values) > 1 or not _CONTENT_LENGTH_RE.fullmatch(raw):
                self.close_connection = True
                raise _ApiError(
                    HTTPStatus.BAD_REQUEST,
                    "bad_length",
                    "send one Content-Length of ASCII digits",
                )
            length = int(raw)
            if length > limit:
                self._discard(length, limit)
                raise _ApiError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    "body_too_large",
                    f"request body is {length} bytes, over this node's {limit}-byte limit",
                )
            self._unread = length > 0
            return length

        def read(self, length: int) -> bytes:
            if length == 0:
                return b""
            try:
                data = self.rfile.read(length)
            except TimeoutError as err:
                self.close_connection = True
                raise _ApiError(
                    HTTPStatus.REQUEST_TIMEOUT,
                    "timeout",
                    "the request body was not sent in time",
                ) from err
            except OSError as err:
                self.close_connection = True
                raise _ApiError(
                    HTTPStatus.BAD_REQUEST, "bad_body", "the connection broke mid-body"
                ) from err
            self._unread = False
            if len(data) != length:
                self.close_connection = True
                raise _ApiError(
                    HTTPStatus.BAD_REQUEST,
                    "short_body",
                    f"the body ended after {len(data)} of {length} bytes",
                )
            return data

        def _discard(self, length: int, limit: int) -> None:
            # Reading (not keeping) a moderately oversize body lets the client see the 413
            # instead of a reset connection; past that, drop the connection.
            self.close_connection = True
            budget = max(4 * limit, 16 * 1024 * 1024)
            if length > budget:
                return
            remaining = length
            try:
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 64 * 1024))
                    if not chunk:
                        return
                    remaining -= len(chunk)
            except OSError:
                return

        def _serve(self, method: str) -> None:
            raw_nonce = self.headers.get(HEADER_NONCE) or ""
            # Echoed into a signed header: short printable ASCII only (a folded header line
            # would otherwise write a line break into the response's headers).
            echo = len(raw_nonce) <= 128 and raw_nonce.isascii() and raw_nonce.isprintable()
            nonce = raw_nonce if echo else ""
            # A body the API never reads leaves the connection unusable.
            self._unread = bool(
                self.headers.get("Content-Length", "0").strip() not in ("", "0")
                or self.headers.get("Transfer-Encoding")
            )
            try:
                status, body = server._handle(method, self.path, self.headers, self)
            except _ApiError as err:
                status, body = err.status, _error_body(err.code, err.message)
            except Exception:  # a bug must answer 500, not drop the connection
                logger.exception("node API failed on %s %s", method, self.path[:200])
                status = HTTPStatus.INTERNAL_SERVER_ERROR
                body = _error_body("internal_error", "the node failed on this request")
            if self._unread:
                self.close_connection = True
            self._answer(status, body, nonce)

        def _answer(self, status: HTTPStatus, body: bytes, nonce: str) -> None:
            try:
                self.send_response(int(status))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in server._sign(int(status), body, nonce).items():
                    self.send_header(name, value)
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                # The client went away: nothing to answer.
                self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
            logger.debug("%s " + format, self.address_string(), *args)

    return _Handler
