"""The task market and the output log: typed clients for ``TaskMarket`` and ``OutputLog``.

A task's terms (:class:`TaskParams`) hash to its id; providers claim with a bond, commit to
:func:`make_commitment`, reveal, and anyone settles with :meth:`MarketClient.finalize`.
Values are in wei. :class:`Requester` is the requester's side of a delegation: sign and store
the bundle, post it, wait, then fetch the winning result by CID and check it against the chain.
"""

from chefsplan_agents.market._client import MarketClient, PostedTask
from chefsplan_agents.market._output_log import LoggedOutput, OutputLogClient
from chefsplan_agents.market._records import (
    MAX_CHALLENGE_WINDOW,
    MAX_COMMIT_TIMEOUT,
    MAX_REPLICAS,
    MAX_TASK_HORIZON,
    TASK_PARAMS_TYPE,
    ZERO_ADDRESS,
    ChallengeRecord,
    ChallengeState,
    ReplicaRecord,
    ReplicaState,
    RevealEntry,
    Settlement,
    TaskParams,
    TaskRecord,
    TaskResult,
    TaskStateRecord,
    VoteState,
    check_horizons,
    make_commitment,
    new_salt,
    result_cid_hash,
    task_id_of,
    vote_commitment,
)
from chefsplan_agents.market._requester import (
    DelegationProgress,
    DelegationReceipt,
    ReplicaReceipt,
    Requester,
    TaskHandle,
    Timeouts,
)

__all__ = [
    "MAX_CHALLENGE_WINDOW",
    "MAX_COMMIT_TIMEOUT",
    "MAX_REPLICAS",
    "MAX_TASK_HORIZON",
    "TASK_PARAMS_TYPE",
    "ZERO_ADDRESS",
    "ChallengeRecord",
    "ChallengeState",
    "DelegationProgress",
    "DelegationReceipt",
    "LoggedOutput",
    "MarketClient",
    "OutputLogClient",
    "PostedTask",
    "ReplicaReceipt",
    "ReplicaRecord",
    "ReplicaState",
    "Requester",
    "RevealEntry",
    "Settlement",
    "TaskHandle",
    "TaskParams",
    "TaskRecord",
    "TaskResult",
    "TaskStateRecord",
    "VoteState",
    "Timeouts",
    "check_horizons",
    "make_commitment",
    "vote_commitment",
    "new_salt",
    "result_cid_hash",
    "task_id_of",
]
