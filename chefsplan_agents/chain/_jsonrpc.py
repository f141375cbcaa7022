"""Any EVM node over JSON-RPC (HTTP): anvil, geth, an L2."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
from web3 import Web3
from web3.providers.base import JSONBaseProvider
from web3.types import RPCEndpoint, RPCResponse

from chefsplan_agents import _json
from chefsplan_agents.chain._base import Chain
from chefsplan_agents.errors import ChainError, ChainUnavailable, ConfigError

__all__ = ["MAX_RPC_REPLY_BYTES", "JsonRpcChain"]

MAX_RPC_REPLY_BYTES = 32 << 20
"""Largest JSON-RPC reply read from a node (32 MiB): far above a block with its transactions or
an ``eth_getLogs`` page over this package's events, far below what hurts a small machine."""

MAX_RPC_REPLY_DEPTH = _json.DEFAULT_MAX_JSON_DEPTH
"""Deepest nesting accepted in a reply; the replies this package asks for nest under 8 levels."""

# Compressed replies would be inflated a whole network chunk at a time before the cap applies.
_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    "Accept-Encoding": "identity",
}


class _BoundedHTTPProvider(JSONBaseProvider):
    """JSON-RPC over HTTP with every reply bounded in size, time and nesting depth.

    web3's ``HTTPProvider`` reads a whole reply into memory and parses it with plain ``json``:
    a hostile or broken endpoint could send gigabytes, drip bytes for ever under the per-read
    timeout, or nest arrays deep enough to overflow the C stack (py_ecc raises the recursion
    limit, so that is SIGSEGV, not an exception). Here a reply is read as it arrives and dropped
    past ``max_reply_bytes`` or ``timeout_s``, then parsed with
    :func:`chefsplan_agents._json.loads`. A reply that breaks a bound, an HTTP error status or
    anything but a JSON object is :class:`~chefsplan_agents.errors.ChainUnavailable`: the
    endpoint is not a usable node, which callers treat like one that does not answer (the node
    daemon backs off and retries). Batch requests are not supported (this package sends none).
    """

    def __init__(
        self, url: str, client: httpx.Client, *, timeout_s: float, max_reply_bytes: int
    ) -> None:
        super().__init__()
        self.endpoint_uri = url
        self._client = client
        self._timeout_s = timeout_s
        self._max = max_reply_bytes

    def __str__(self) -> str:
        return f"RPC connection {self.endpoint_uri}"

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        raw = self._post(method, self.encode_rpc_request(method, params))
        try:
            reply = _json.loads(raw, max_depth=MAX_RPC_REPLY_DEPTH)
        except ValueError as err:  # not UTF-8, not JSON, or nested too deep
            raise self._bad(method, _one_line(str(err))) from err
        if not isinstance(reply, dict):
            raise self._bad(method, f"a JSON {type(reply).__name__}, not an object")
        return cast(RPCResponse, reply)

    def _post(self, method: str, data: bytes) -> bytes:
        # httpx's timeout bounds each socket operation; the deadline bounds the whole reply.
        deadline = time.monotonic() + self._timeout_s
        try:
            with self._client.stream(
                "POST", self.endpoint_uri, content=data, headers=_HEADERS
            ) as response:
                if not response.is_success:
                    raise ChainUnavailable(
                        f"the chain node at {self.endpoint_uri} answered HTTP "
                        f"{response.status_code} to {method}; check chain.rpc_url and the node"
                    )
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > self._max:
                    raise self._too_large(method, f"declares {int(declared)} bytes")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > self._max:
                        raise self._too_large(method, "runs on")
                    if time.monotonic() > deadline:
                        raise ChainUnavailable(
                            f"the chain node at {self.endpoint_uri} did not finish its reply "
                            f"to {method} within {self._timeout_s:g} s; check the node or "
                            "raise chain.timeout_s"
                        )
        except httpx.HTTPError as err:  # cannot connect, timed out, broke off, bad framing
            raise ChainUnavailable(
                f"cannot reach the chain node at {self.endpoint_uri} ({_reason(err)}); "
                "start the node or fix chain.rpc_url"
            ) from err
        return bytes(body)

    def _too_large(self, method: str, how: str) -> ChainUnavailable:
        return ChainUnavailable(
            f"the chain node at {self.endpoint_uri} sent a reply to {method} that {how}, over "
            f"the limit of {self._max} bytes; check chain.rpc_url points at a trusted node"
        )

    def _bad(self, method: str, detail: str) -> ChainUnavailable:
        return ChainUnavailable(
            f"the chain node at {self.endpoint_uri} sent a reply to {method} that is not a "
            f"JSON-RPC reply ({detail}); check chain.rpc_url points at an EVM JSON-RPC node"
        )


def _reason(err: httpx.HTTPError) -> str:
    # The names the package's messages used before httpx carried the requests.
    if isinstance(err, httpx.ConnectError):
        return "ConnectionError"
    if isinstance(err, httpx.TimeoutException):
        return "Timeout"
    return type(err).__name__


def _one_line(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


class JsonRpcChain(Chain):
    """An EVM node reached over HTTP JSON-RPC; transactions are signed locally.

    The connection is checked when the chain is opened, so an unreachable node fails at once with
    :class:`~chefsplan_agents.errors.ChainUnavailable` rather than at the first transaction.
    Every reply is bounded before it is parsed: at most ``MAX_RPC_REPLY_BYTES`` (32 MiB),
    finished within ``timeout_s`` and nested at most 64 levels; a reply that breaks a bound or
    is not a JSON object is ``ChainUnavailable`` too.

    Args:
        rpc_url: The node's ``http(s)://`` endpoint.
        private_keys: Keys of the funded accounts to send from.
        chain_id: The expected chain id; a node on another chain is refused.
        timeout_s: Timeout for each request and for waiting on a receipt.
        confirmations: Extra blocks to wait for after inclusion.
        log_block_range: Most blocks one ``eth_getLogs`` may span on this node (public RPC
            endpoints often cap it); ``None`` for no limit.

    Raises:
        ConfigError: ``rpc_url`` is not an http(s) URL.
        ChainUnavailable: The node does not answer, or its answer is not a JSON-RPC reply.
        ChainError: The node is on a different chain than ``chain_id``.
    """

    def __init__(
        self,
        rpc_url: str,
        private_keys: Iterable[str | bytes] = (),
        *,
        chain_id: int | None = None,
        timeout_s: float = 30.0,
        confirmations: int = 0,
        log_block_range: int | None = None,
    ) -> None:
        parts = urlsplit(rpc_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"chain.rpc_url {rpc_url!r} is not an http(s) URL (e.g. http://127.0.0.1:8545)"
            )
        self._url = rpc_url
        # No retries here: a dead node fails fast, and the node daemon backs off by itself.
        self._http = httpx.Client(timeout=timeout_s)
        provider = _BoundedHTTPProvider(
            rpc_url, self._http, timeout_s=timeout_s, max_reply_bytes=MAX_RPC_REPLY_BYTES
        )
        super().__init__(
            Web3(provider),
            private_keys,
            timeout_s=timeout_s,
            confirmations=confirmations,
            log_block_range=log_block_range,
        )
        try:
            actual = self.chain_id  # also proves the node answers
        except BaseException:
            self._http.close()
            raise
        if chain_id is not None and actual != chain_id:
            self._http.close()
            raise ChainError(
                f"the node at {rpc_url} is on chain {actual}, not the configured {chain_id}; "
                "fix chain.chain_id or chain.rpc_url"
            )

    @property
    def endpoint(self) -> str:
        return self._url

    def close(self) -> None:
        self._http.close()

    def _dev_rpc(self, method: str, params: list[Any]) -> Any:
        try:
            response = self._w3.provider.make_request(method, params)  # type: ignore[arg-type]
        except Exception as err:
            raise self._translate(err, method) from err
        error = response.get("error")
        if error:
            message = error.get("message", error) if isinstance(error, dict) else error
            raise ChainError(
                f"the node at {self._url} does not support {method} ({_one_line(str(message))}); "
                "snapshots and time travel need a dev node such as anvil"
            )
        return response.get("result")

    def snapshot(self) -> str:
        return str(self._dev_rpc("evm_snapshot", []))

    def revert(self, snapshot_id: str) -> None:
        ok = self._dev_rpc("evm_revert", [snapshot_id])
        self._nonces.reset()
        if ok is False:
            raise ChainError(f"no snapshot {snapshot_id!r} on {self._url}")

    def advance_time(self, seconds: int) -> None:
        if seconds < 0:
            raise ChainError(f"cannot move the chain clock backwards ({seconds} s)")
        self._dev_rpc("evm_increaseTime", [max(int(seconds), 1)])
        self._dev_rpc("evm_mine", [])

    def mine(self, blocks: int = 1) -> None:
        for _ in range(blocks):
            self._dev_rpc("evm_mine", [])
