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
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Literal, Protocol, Self, runtime_checkable
from urllib.parse import parse_qs, urlsplit

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
    sign_response,
    verify_request,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "JobContentStore",
    "JobRunner",
    "JobState",
    "NodeHttpServer",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES: Final = 4 * 1024 * 1024
"""Largest request body the API reads (a TaskBundle's default size limit)."""

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


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-answer is routine; the stdlib would print a traceback.
        logger.debug("connection from %s failed", client_address, exc_info=True)


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
        authorize: Optional check of a requester DID; ``False`` answers 403.
        clock: Wall clock in Unix seconds (tests pass a fake one).
        socket_timeout_s: How long a connection may stall mid-request.
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
        socket_timeout_s: float = 30.0,
    ) -> None:
        if workers < 1:
            raise NodeError(f"workers must be at least 1, got {workers}")
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
        self._nonces = NonceCache(2 * max_clock_skew_s)
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
            httpd = _QuietServer((self._host, self._port), handler)
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

    def _start_job(self, requester_did: str, body: bytes) -> tuple[HTTPStatus, dict[str, Any]]:
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
        self, method: str, target: str, headers: Any, read_body: Callable[[int], bytes]
    ) -> tuple[HTTPStatus, bytes]:
        """Authenticate and route one request; returns the status and the JSON body."""
        parts = urlsplit(target)
        path, query = parts.path, parts.query
        # The body is read (or refused on its length) first so the connection stays usable.
        body = read_body(self._max_body)
        expected = _ROUTES.get(path)
        if expected is None:
            raise _ApiError(HTTPStatus.NOT_FOUND, "not_found", f"no endpoint {path[:80]!r}")
        if method != expected:
            raise _ApiError(
                HTTPStatus.METHOD_NOT_ALLOWED, "method_not_allowed", f"use {expected} {path}"
            )
        now = self._clock()
        try:
            signed = verify_request(
                headers,
                method=method,
                path=path,
                query=query,
                body=body,
                audience_did=self._identity.did,
                now=now,
                max_skew_s=self._max_skew,
            )
        except RequestAuthError as err:
            raise _ApiError(HTTPStatus.UNAUTHORIZED, err.code, str(err)) from err
        if not self._nonces.check_and_add(signed.did, signed.nonce, now=now):
            raise _ApiError(
                HTTPStatus.UNAUTHORIZED,
                "replayed_nonce",
                "request nonce was already used; send a freshly signed request",
            )
        if self._authorize is not None and not self._authorize(signed.did):
            raise _ApiError(
                HTTPStatus.FORBIDDEN, "forbidden", f"{signed.did} may not use this node"
            )
        status = HTTPStatus.OK
        result: dict[str, Any]
        if path == "/availability":
            result = self._availability()
        elif path == "/input_schema":
            return status, self._schema_body
        elif path == "/start_job":
            status, result = self._start_job(signed.did, body)
        else:
            result = self._status(signed.did, query)
        return status, canonical_json(result)

    def _sign(self, status: int, body: bytes, request_nonce: str) -> dict[str, str]:
        return sign_response(
            self._identity,
            status=status,
            body=body,
            request_nonce=request_nonce,
            now=self._clock(),
        ).as_headers()


def _error_body(code: str, message: str) -> bytes:
    return canonical_json({"error": {"code": code, "message": message}})


def _make_handler(server: NodeHttpServer) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "chefsplan-node"
        sys_version = ""
        timeout = server._socket_timeout

        def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def _read_body(self, limit: int) -> bytes:
            raw = self.headers.get("Content-Length")
            if raw is None:
                if self.headers.get("Transfer-Encoding"):
                    self.close_connection = True
                    raise _ApiError(
                        HTTPStatus.LENGTH_REQUIRED,
                        "length_required",
                        "send a Content-Length; chunked bodies are not accepted",
                    )
                return b""
            if not raw.strip().isdigit():
                self.close_connection = True
                raise _ApiError(
                    HTTPStatus.BAD_REQUEST, "bad_length", "Content-Length is not a number"
                )
            length = int(raw)
            if length > limit:
                self._discard(length, limit)
                raise _ApiError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    "body_too_large",
                    f"request body is {length} bytes, over this node's {limit}-byte limit",
                )
            return self.rfile.read(length)

        def _discard(self, length: int, limit: int) -> None:
            # Reading (not keeping) a moderately oversize body lets the client see the 413
            # instead of a reset connection; past that, drop the connection.
            self.close_connection = True
            budget = max(4 * limit, 16 * 1024 * 1024)
            if length > budget:
                return
            remaining = length
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 64 * 1024))
                if not chunk:
                    return
                remaining -= len(chunk)

        def _serve(self, method: str) -> None:
            nonce = self.headers.get(HEADER_NONCE) or ""
            try:
                status, body = server._handle(method, self.path, self.headers, self._read_body)
            except _ApiError as err:
                status, body = err.status, _error_body(err.code, err.message)
            except Exception:  # a bug must answer 500, not drop the connection
                logger.exception("node API failed on %s %s", method, self.path)
                status = HTTPStatus.INTERNAL_SERVER_ERROR
                body = _error_body("internal_error", "the node failed on this request")
            self.send_response(int(status))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in server._sign(int(status), body, nonce).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
            logger.debug("%s " + format, self.address_string(), *args)

    return _Handler
