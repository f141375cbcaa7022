"""Pick a chain backend from settings: the one place that knows which backends exist."""

from __future__ import annotations

from collections.abc import Iterable

from chefsplan_agents.chain._base import Chain
from chefsplan_agents.chain._embedded import EmbeddedChain
from chefsplan_agents.chain._jsonrpc import JsonRpcChain
from chefsplan_agents.config import ChainSettings
from chefsplan_agents.errors import ConfigError

__all__ = ["open_chain"]


def open_chain(
    settings: ChainSettings | None = None, *, private_keys: Iterable[str | bytes] = ()
) -> Chain:
    """Open the chain the settings describe.

    Args:
        settings: Chain settings; ``None`` is the embedded default.
        private_keys: Keys of funded accounts to send from (JSON-RPC backends). The embedded
            chain brings its own pre-funded accounts; keys given here are added to them.

    Returns:
        An open chain; use it as a context manager.

    Raises:
        ConfigError: The backend is unknown or the URL is malformed.
        ChainUnavailable: A JSON-RPC node does not answer.
    """
    settings = settings or ChainSettings()
    if settings.backend == "embedded":
        chain: Chain = EmbeddedChain(timeout_s=settings.timeout_s)
        for key in private_keys:
            chain.add_account(key)
        return chain
    if settings.backend == "jsonrpc":
        return JsonRpcChain(
            settings.rpc_url,
            private_keys,
            chain_id=settings.chain_id,
            timeout_s=settings.timeout_s,
            confirmations=settings.confirmations,
        )
    raise ConfigError(f"unknown chain.backend {settings.backend!r} (use embedded or jsonrpc)")
