"""Solidity custom errors as Python exceptions, by name.

Every name resolves to the cached :class:`~chefsplan_agents.errors.TxReverted` subclass for that
Solidity error, so it can be imported and caught before any contract reverted::

    from chefsplan_agents.chain.errors import StakeTooLow

    try:
        registry.register(did, offer_cid, offer_hash, stake=1)
    except StakeTooLow as exc:
        print(exc.args_["minStake"])
"""

from __future__ import annotations

from chefsplan_agents.chain._revert import revert_error_class
from chefsplan_agents.errors import TxReverted

__all__ = ["TxReverted", "revert_error_class"]


def __getattr__(name: str) -> type[TxReverted]:
    if name.startswith("__") or not name[:1].isupper():
        raise AttributeError(name)
    return revert_error_class(name)
