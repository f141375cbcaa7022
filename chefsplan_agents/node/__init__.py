"""The provider node: a daemon that serves one local model on the task market.

:class:`ProviderNode` registers a signed offer, watches ``TaskPosted`` events, refuses what its
:class:`NodePolicy` rejects (before claiming, so it is never slashed for it), claims, runs the
model, stores a signed ResultBundle, commits, reveals and withdraws its earnings; its
:class:`NodeStateStore` lets it resume claimed tasks after a restart, and never vets a task
twice (a bundle that crashes the node is not fetched again after it restarts).
:class:`NodeHttpServer` and :class:`NodeHttpClient` are its signed HTTP job API for direct,
off-chain jobs; a node's :meth:`ProviderNode.run_bundle` is a :data:`JobRunner`.
"""

from chefsplan_agents.node._daemon import (
    NewEvents,
    NodeDuty,
    NodeStatus,
    ProviderNode,
    RetryPolicy,
    read_new_events,
    task_prompt,
)
from chefsplan_agents.node._http import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    JobContentStore,
    JobRunner,
    JobState,
    NodeHttpServer,
)
from chefsplan_agents.node._http_client import (
    JobHandle,
    JobStatus,
    NodeAvailability,
    NodeHttpClient,
)
from chefsplan_agents.node._policy import (
    DEFAULT_BOND_FLOOR_WEI,
    DEFAULT_CHAIN_MARGIN_S,
    DEFAULT_MAX_BOND_PER_BOUNTY,
    DEFAULT_MAX_BOND_WEI,
    DEFAULT_MAX_CHALLENGE_WINDOW_S,
    DEFAULT_MAX_DEADLINE_HORIZON_S,
    DEFAULT_TIME_SAFETY_FACTOR,
    GenerationSpeed,
    NodePolicy,
)
from chefsplan_agents.node._state import (
    NodeStateStore,
    StepTransactions,
    TaskRecordState,
    TaskStage,
    read_cursor_file,
    read_state_file,
    write_cursor_file,
    write_state_file,
)

__all__ = [
    "DEFAULT_BOND_FLOOR_WEI",
    "DEFAULT_CHAIN_MARGIN_S",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_BOND_PER_BOUNTY",
    "DEFAULT_MAX_BOND_WEI",
    "DEFAULT_MAX_CHALLENGE_WINDOW_S",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_DEADLINE_HORIZON_S",
    "DEFAULT_TIME_SAFETY_FACTOR",
    "GenerationSpeed",
    "JobContentStore",
    "JobHandle",
    "JobRunner",
    "JobState",
    "JobStatus",
    "NewEvents",
    "NodeAvailability",
    "NodeDuty",
    "NodeHttpClient",
    "NodeHttpServer",
    "NodePolicy",
    "NodeStateStore",
    "NodeStatus",
    "ProviderNode",
    "RetryPolicy",
    "StepTransactions",
    "TaskRecordState",
    "TaskStage",
    "read_cursor_file",
    "read_new_events",
    "read_state_file",
    "task_prompt",
    "write_cursor_file",
    "write_state_file",
]
