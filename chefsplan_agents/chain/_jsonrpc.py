"""Any EVM node over JSON-RPC (HTTP): anvil, geth, an L2."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import requests
from web3 import HTTPProvider, Web3

from chefsplan_agents.chain._base import Chain
from chefsplan_agents.errors import ChainError, ConfigError

__all__ = ["JsonRpcChain"]


class JsonRpcChain(Chain):
    """An EVM node reached over HTTP JSON-RPC; transactions are signed locally.

    The connection is checked when the chain is opened, so an unreachable node fails at once with
    :class:`~chefsplan_agents.errors.ChainUnavailable` rather than at the first transaction.

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
        ChainUnavailable: The node does not answer.
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
        # web3's default retries turn a dead node into a long stall; fail fast instead.
        self._session = requests.Session()
        provider = HTTPProvider(
            rpc_url,
            request_kwargs={"timeout": timeout_s},
            session=self._session,
            exception_retry_configuration=None,
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
            self._session.close()
            raise
        if chain_id is not None and actual != chain_id:
            self._session.close()
            raise ChainError(
                f"the node at {rpc_url} is on chain {actual}, not the configured {chain_id}; "
                "fix chain.chain_id or chain.rpc_url"
            )

    @property
    def endpoint(self) -> str:
        return self._url

    def close(self) -> None:
        self._session.close()

    def _dev_rpc(self, method: str, params: list[Any]) -> Any:
        try:
            response = self._w3.provider.make_request(method, params)  # type: ignore[arg-type]
        except Exception as err:
            raise self._translate(err, method) from err
        error = response.get("error")
        if error:
            message = error.get("message", error) if isinstance(error, dict) else error
            raise ChainError(
                f"the node at {self._url} does not support {method} ({message}); "
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
