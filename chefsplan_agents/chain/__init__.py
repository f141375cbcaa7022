"""The chain layer: one :class:`Chain` interface over an in-process EVM or any JSON-RPC node.

:func:`open_chain` picks the backend from :class:`~chefsplan_agents.config.ChainSettings`;
:func:`deploy_contracts` / :func:`attach_contracts` give the package's contracts on it.
Solidity custom errors surface as :class:`~chefsplan_agents.errors.TxReverted` subclasses named
after the error (:func:`revert_error_class`, :mod:`chefsplan_agents.chain.errors`).
"""

from chefsplan_agents.chain._artifacts import Artifact, load_artifact
from chefsplan_agents.chain._base import BoundContract, Chain, Event, FnCall, Receipt
from chefsplan_agents.chain._deploy import (
    CONTRACT_NAMES,
    DEFAULT_CHALLENGE_BOND,
    DEFAULT_MIN_STAKE,
    DEFAULT_UNSTAKE_COOLDOWN,
    Deployment,
    attach_contracts,
    deploy_contracts,
    open_deployment,
)
from chefsplan_agents.chain._embedded import EmbeddedChain
from chefsplan_agents.chain._factory import open_chain
from chefsplan_agents.chain._jsonrpc import MAX_RPC_REPLY_BYTES, JsonRpcChain
from chefsplan_agents.chain._revert import RevertDecoder, revert_error_class
from chefsplan_agents.chain._values import to_address, to_bytes32

__all__ = [
    "CONTRACT_NAMES",
    "DEFAULT_CHALLENGE_BOND",
    "DEFAULT_MIN_STAKE",
    "DEFAULT_UNSTAKE_COOLDOWN",
    "MAX_RPC_REPLY_BYTES",
    "Artifact",
    "BoundContract",
    "Chain",
    "Deployment",
    "EmbeddedChain",
    "Event",
    "FnCall",
    "JsonRpcChain",
    "Receipt",
    "RevertDecoder",
    "attach_contracts",
    "deploy_contracts",
    "load_artifact",
    "open_chain",
    "open_deployment",
    "revert_error_class",
    "to_address",
    "to_bytes32",
]
