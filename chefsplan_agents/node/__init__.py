"""The provider node: a daemon that serves one local model on the task market.

:class:`ProviderNode` registers a signed offer, watches ``TaskPosted`` events, refuses what its
:class:`NodePolicy` rejects (before claiming, so it is never slashed for it), claims, runs the
model, stores a signed ResultBundle, commits, reveals and withdraws its earnings; its
:class:`NodeStateStore` lets it resume claimed tasks after a restart. :class:`NodeHttpServer`
and :class:`NodeHttpClient` are its signed HTTP job API for direct, off-chain jobs; a node's
:meth:`ProviderNode.run_bundle` is a :data:`JobRunner`.
"""

from chefsplan_agents.node._daemon import (
    NodeStatus,
    ProviderNode,
    RetryPolicy,
    task_generation_params,
    task_prompt,
)
from chefsplan_agents.node._http import (
    DEFAULT_MAX_BODY_BYTES,
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
from chefsplan_agents.node._policy import NodePolicy
from chefsplan_agents.node._state import NodeStateStore, TaskRecordState, TaskStage

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "JobContentStore",
    "JobHandle",
    "JobRunner",
    "JobState",
    "JobStatus",
    "NodeAvailability",
    "NodeHttpClient",
    "NodeHttpServer",
    "NodePolicy",
    "NodeStateStore",
    "NodeStatus",
    "ProviderNode",
    "RetryPolicy",
    "TaskRecordState",
    "TaskStage",
    "task_generation_params",
    "task_prompt",
]
