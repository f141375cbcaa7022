"""A client for a node's signed HTTP API that trusts nothing it cannot check.

Every request is signed by the client's identity for one node DID (known from the registry);
every response must be signed by that DID for that request. Results are checked end to end: the
task CID is the CID of the bundle sent, the ResultBundle is signed by the node and hashes to its
``output_hash``, and the returned CIDs are recomputed locally.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

from pydantic import ValidationError

from chefsplan_agents import _json
from chefsplan_agents.bundles import (
    OfferedModel,
    ResultBundle,
    TaskBundle,
    canonical_json,
    decode_result_bundle,
    encode_bundle,
)
from chefsplan_agents.errors import (
    BundleError,
    InvalidCid,
    InvalidSignature,
    JobFailed,
    JobNotFound,
    JobTimeout,
    NodeError,
    NodeRequestRejected,
    NodeUnavailable,
    VerificationError,
)
from chefsplan_agents.identity import Identity, public_key_from_did
from chefsplan_agents.node._http import JobState
from chefsplan_agents.node._signing import (
    DEFAULT_MAX_CLOCK_SKEW_S,
    RequestAuthError,
    sign_request,
    verify_response,
)
from chefsplan_agents.storage import compute_cid, parse_cid

__all__ = ["JobHandle", "JobStatus", "NodeAvailability", "NodeHttpClient"]

_MAX_RESPONSE_BYTES: Final = 64 * 1024 * 1024
_JOB_STATES: Final = frozenset({"queued", "running", "completed", "failed"})


@dataclass(frozen=True)
class NodeAvailability:
    """What ``/availability`` reports."""

    status: str
    node_did: str
    schema_version: int
    model: OfferedModel | None
    price_per_1k_tokens_wei: int
    queued: int
    running: int


@dataclass(frozen=True)
class JobHandle:
    """A job a node accepted.

    Attributes:
        job_id: The node's id for the job.
        task_cid: The CID of the task bundle (checked against the bundle sent).
        status: ``queued`` or ``running`` when accepted (or the state of an earlier identical
            submission).
        node_did: The node running it.
    """

    job_id: str
    task_cid: str
    status: JobState
    node_did: str


@dataclass(frozen=True)
class JobStatus:
    """A job's state; ``result`` and its CID are set once ``status == "completed"``."""

    job_id: str
    status: JobState
    task_cid: str
    result_cid: str | None = None
    output_hash: str | None = None
    result: ResultBundle | None = None
    error: str | None = None

    @property
    def done(self) -> bool:
        """Whether the job has finished, successfully or not."""
        return self.status in ("completed", "failed")


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    headers: dict[str, str]


def _cid_of(data: bytes, like: str) -> str:
    """The CID of ``data`` in the same version as the CID ``like``."""
    return compute_cid(data, cid_version=parse_cid(like).version)


class NodeHttpClient:
    """Talks to one node's signed HTTP API.

    Args:
        base_url: ``http://host:port`` of the node (its offer's endpoint).
        identity: The requester; signs every request (and must sign the bundles it sends).
        node_did: The node's DID, from the registry; every response must be signed by it.
        timeout_s: Socket timeout per request.
        max_clock_skew_s: How far a response's timestamp may be from this clock.
        clock: Wall clock in Unix seconds (tests pass a skewed one).

    Raises:
        NodeError: ``base_url`` is not an http(s) URL.
        InvalidDid: ``node_did`` is not a resolvable DID.
    """

    def __init__(
        self,
        base_url: str,
        identity: Identity,
        node_did: str,
        *,
        timeout_s: float = 10.0,
        max_clock_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise NodeError(f"node URL {base_url!r} is not http(s)://host:port; check the offer")
        public_key_from_did(node_did)
        self._base_url = base_url.rstrip("/")
        self._scheme = parts.scheme
        self._netloc = parts.netloc
        self._prefix = parts.path.rstrip("/")
        self._identity = identity
        self._node_did = node_did
        self._timeout = timeout_s
        self._max_skew = max_clock_skew_s
        self._clock = clock
        self._task_cids: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"NodeHttpClient({self._base_url!r}, node_did={self._node_did!r})"

    @property
    def base_url(self) -> str:
        """The node's URL."""
        return self._base_url

    @property
    def node_did(self) -> str:
        """The DID every response must be signed by."""
        return self._node_did

    # --- endpoints --------------------------------------------------------------------------

    def availability(self) -> NodeAvailability:
        """Ask whether the node is available, what it serves and at what price.

        Raises:
            NodeUnavailable: The node cannot be reached, or is at its connection limit.
            InvalidSignature: The response is not signed by the node for this request.
            NodeRequestRejected: The node refused the request.
        """
        data = self._call("GET", "/availability")
        try:
            model = data.get("model")
            return NodeAvailability(
                status=str(data["status"]),
                node_did=str(data["node_did"]),
                schema_version=int(data["schema_version"]),
                model=None if model is None else OfferedModel.model_validate(model),
                price_per_1k_tokens_wei=int(data["price_per_1k_tokens_wei"]),
                queued=int(data["queued"]),
                running=int(data["running"]),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as err:  # int(Infinity)
            raise self._malformed("/availability", err) from err

    def input_schema(self) -> dict[str, Any]:
        """The JSON schema of the task bundle the node accepts.

        Raises:
            NodeUnavailable: The node cannot be reached, or is at its connection limit.
            InvalidSignature: The response is not signed by the node for this request.
        """
        return self._call("GET", "/input_schema")

    def start_job(self, bundle: TaskBundle) -> JobHandle:
        """Send a signed task bundle to the node to run.

        Args:
            bundle: A task signed by this client's identity (see ``sign_bundle``).

        Returns:
            The accepted job; its ``task_cid`` is checked against the bundle's own CID.

        Raises:
            BundleError: The bundle is unsigned or names another requester.
            NodeUnavailable: The node cannot be reached, or is at its connection limit.
            InvalidSignature: The response is not signed by the node for this request.
            NodeRequestRejected: The node refused the bundle (``status``/``code`` say why).
            VerificationError: The node reports a task CID that is not the bundle's.
        """
        if bundle.signature is None:
            raise BundleError("the task bundle is not signed; sign it with sign_bundle() first")
        if bundle.requester_did != self._identity.did:
            raise BundleError(
                f"the task names requester {bundle.requester_did} but this client signs as "
                f"{self._identity.did}; use the requester's identity"
            )
        body = encode_bundle(bundle)
        data = self._call("POST", "/start_job", body=body)
        try:
            job_id, task_cid, state = str(data["job_id"]), str(data["task_cid"]), data["status"]
            if state not in _JOB_STATES:
                raise ValueError(f"unknown job status {state!r}")
            expected = _cid_of(body, task_cid)
        except (KeyError, TypeError, ValueError, InvalidCid) as err:
            raise self._malformed("/start_job", err) from err
        if task_cid != expected:
            raise VerificationError(
                f"node {self._node_did} reports task CID {task_cid} but the bundle sent has "
                f"CID {expected}; do not trust this node's result"
            )
        self._task_cids[job_id] = task_cid
        return JobHandle(job_id, task_cid, state, self._node_did)

    def status(self, job_id: str) -> JobStatus:
        """A job's status; once completed, its verified ResultBundle.

        Args:
            job_id: From :meth:`start_job`.

        Raises:
            JobNotFound: The node does not know the job.
            NodeRequestRejected: Another requester's job (``status`` 403), or another refusal.
            NodeUnavailable: The node cannot be reached, or is at its connection limit.
            InvalidSignature: The response or the ResultBundle is not signed by the node.
            VerificationError: The result is for another task, or a CID or hash does not match.
        """
        data = self._call("GET", "/status", query=urlencode({"job_id": job_id}))
        try:
            state = data["status"]
            if state not in _JOB_STATES:
                raise ValueError(f"unknown job status {state!r}")
            status = JobStatus(
                job_id=str(data["job_id"]),
                status=state,
                task_cid=str(data["task_cid"]),
                error=None if data.get("error") is None else str(data["error"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise self._malformed("/status", err) from err
        if status.job_id != job_id:
            raise VerificationError(f"node answered about job {status.job_id}, not {job_id}")
        expected_task = self._task_cids.get(job_id, status.task_cid)
        if status.task_cid != expected_task:
            raise VerificationError(
                f"node reports job {job_id} is for task {status.task_cid}, not {expected_task}"
            )
        if state != "completed":
            return status
        return self._verified_result(status, data)

    def wait(self, job_id: str, timeout: float = 60.0, *, poll_s: float = 0.05) -> JobStatus:
        """Poll a job's status until it completes.

        Args:
            job_id: From :meth:`start_job`.
            timeout: Seconds to wait at most.
            poll_s: First polling interval; it doubles up to one second.

        Returns:
            The completed status with its verified result.

        Raises:
            JobFailed: The node reports the job failed.
            JobTimeout: Still not finished after ``timeout`` seconds.
            NodeError: Anything :meth:`status` raises.
        """
        deadline = time.monotonic() + timeout
        delay = poll_s
        while True:
            status = self.status(job_id)
            if status.status == "completed":
                return status
            if status.status == "failed":
                raise JobFailed(f"job {job_id} failed on node {self._node_did}: {status.error}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JobTimeout(
                    f"job {job_id} is still {status.status} after {timeout:g} s; "
                    "wait longer or ask another node"
                )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 1.0)

    # --- verification -----------------------------------------------------------------------

    def _verified_result(self, status: JobStatus, data: dict[str, Any]) -> JobStatus:
        raw = data.get("result")
        result_cid = data.get("result_cid")
        claimed_hash = data.get("output_hash")
        if not isinstance(raw, dict) or not isinstance(result_cid, str):
            raise self._malformed("/status", ValueError("a completed job has no result"))
        result_bytes = canonical_json(raw)
        try:
            # The node signs results over their canonical form, so re-encoding loses nothing.
            result = decode_result_bundle(result_bytes, max_bytes=_MAX_RESPONSE_BYTES)
        except InvalidSignature as err:
            raise InvalidSignature(
                f"the ResultBundle of job {status.job_id} does not verify: {err}"
            ) from err
        if result.node_did != self._node_did:
            raise InvalidSignature(
                f"the ResultBundle of job {status.job_id} is signed by {result.node_did}, "
                f"not by the node asked ({self._node_did})"
            )
        if result.task_cid != status.task_cid:
            raise VerificationError(
                f"the ResultBundle is for task {result.task_cid}, not {status.task_cid}"
            )
        if claimed_hash != result.output_hash:
            raise VerificationError(
                f"node reports output hash {claimed_hash} but the ResultBundle's is "
                f"{result.output_hash}"
            )
        try:
            expected_cid = _cid_of(encode_bundle(result), result_cid)
        except InvalidCid as err:
            raise self._malformed("/status", err) from err
        if result_cid != expected_cid:
            raise VerificationError(
                f"node reports result CID {result_cid} but the ResultBundle's CID is {expected_cid}"
            )
        return JobStatus(
            job_id=status.job_id,
            status="completed",
            task_cid=status.task_cid,
            result_cid=result_cid,
            output_hash=result.output_hash,
            result=result,
        )

    def _malformed(self, endpoint: str, err: Exception) -> NodeError:
        if isinstance(err, ValidationError):  # its text spans lines; keep the first error
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "value"
            detail = f"{where}: {first['msg']}"
        else:
            detail = " ".join(str(err).split())
        return NodeError(
            f"node {self._base_url} sent a malformed {endpoint} answer ({detail[:300]}); "
            "it may run an incompatible version"
        )

    # --- transport --------------------------------------------------------------------------

    def _call(
        self, method: str, path: str, *, query: str = "", body: bytes = b""
    ) -> dict[str, Any]:
        full_path = self._prefix + path
        signed = sign_request(
            self._identity,
            method=method,
            path=full_path,
            query=query,
            body=body,
            audience_did=self._node_did,
            now=self._clock(),
        )
        headers = signed.as_headers()
        headers["Accept"] = "application/json"
        if method == "POST":
            headers["Content-Type"] = "application/json"
        target = full_path + (f"?{query}" if query else "")
        response = self._send(method, target, body, headers)
        try:
            verify_response(
                response.headers,
                status=response.status,
                body=response.body,
                request_nonce=signed.nonce,
                node_did=self._node_did,
                now=self._clock(),
                max_skew_s=self._max_skew,
            )
        except RequestAuthError as err:
            if response.status == HTTPStatus.SERVICE_UNAVAILABLE:
                # A node at its connection limit answers before it reads the request, so it
                # cannot sign; nothing in the answer is used, only "try again later".
                raise NodeUnavailable(
                    f"node {self._base_url} is busy (503, at its connection limit); retry later"
                ) from err
            raise InvalidSignature(f"{self._base_url}{path}: {err}") from err
        try:
            data = _json.loads(response.body)
        except ValueError as err:  # not UTF-8, not JSON, or nested too deep
            raise self._malformed(path, err) from err
        if not isinstance(data, dict):
            raise self._malformed(path, ValueError("the answer is not a JSON object"))
        if response.status >= 400:
            raise self._rejection(path, response.status, data)
        return data

    def _rejection(self, path: str, status: int, data: dict[str, Any]) -> NodeRequestRejected:
        error = data.get("error")
        code, message = "http_error", f"HTTP {status}"
        if isinstance(error, dict):
            code = str(error.get("code", code))
            message = str(error.get("message", message))
        text = f"node {self._base_url} refused {path} ({status} {code}): {message}"
        if status == 404 and code == "unknown_job":
            return JobNotFound(text, status=status, code=code)
        return NodeRequestRejected(text, status=status, code=code)

    def _send(self, method: str, target: str, body: bytes, headers: dict[str, str]) -> _Response:
        connection_type = (
            http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        )
        connection = connection_type(self._netloc, timeout=self._timeout)
        try:
            connection.request(method, target, body=body or None, headers=headers)
            reply = connection.getresponse()
            length = reply.getheader("Content-Length")
            if length is not None and length.isdigit() and int(length) > _MAX_RESPONSE_BYTES:
                raise NodeError(
                    f"node {self._base_url} sent a {length}-byte answer, over the "
                    f"{_MAX_RESPONSE_BYTES}-byte limit"
                )
            payload = reply.read(_MAX_RESPONSE_BYTES + 1)
            if len(payload) > _MAX_RESPONSE_BYTES:
                raise NodeError(
                    f"node {self._base_url} sent an answer over the "
                    f"{_MAX_RESPONSE_BYTES}-byte limit"
                )
            return _Response(reply.status, payload, dict(reply.getheaders()))
        except (OSError, http.client.HTTPException) as err:
            reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
            raise NodeUnavailable(
                f"node at {self._base_url} cannot be reached ({reason}); check the URL and "
                "that the node is running"
            ) from err
        finally:
            connection.close()
