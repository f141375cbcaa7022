"""Verification: second opinions on delegated results.

Redundant execution with commit-reveal votes is enforced on chain by the ``TaskMarket``; this
package adds the checks a requester or watcher runs off chain, starting with the re-score
(:func:`rescore_result`): it binds the text, tokens, fingerprint, task and model of a result to
one prefill pass of the verifier's own model, in full or as a spot check. docs/verification.md
explains each check, its cost and its limits. :class:`VerificationPolicy` plans which checks a
task gets (from trust, the provider's reputation and stake, and the bounty) and :func:`arbitrate`
settles replicas whose outputs differ by re-scoring each. Canary tasks (:class:`CanaryPool`,
:class:`CanaryPolicy`, :func:`check_canary`) audit providers with prompts whose answers the
requester knows in advance, posted exactly like its real tasks. A :class:`Panelist` (run by
every provider node) votes on the challenges it is drawn for from its own re-score
(:func:`judge_outcome`); a :class:`Watcher` samples results inside their challenge window and
challenges the forged ones (``chefsplan watch``).
"""

from chefsplan_agents.verify._arbitrate import Arbitration, arbitrate
from chefsplan_agents.verify._canary import (
    Canaries,
    CanaryOutcome,
    CanaryPolicy,
    CanaryPool,
    CanaryVerdict,
    KnownAnswer,
    canary_bounty,
    canary_evidence,
    check_canary,
    known_answer,
)
from chefsplan_agents.verify._evidence import (
    EVIDENCE_KIND,
    MAX_EVIDENCE_BYTES,
    ChallengeEvidence,
    load_evidence,
    name_result_cid,
    publish_evidence,
)
from chefsplan_agents.verify._judge import (
    OutcomeJudgement,
    RevealedResult,
    TaskOnChain,
    judge_outcome,
    read_task,
)
from chefsplan_agents.verify._panel import (
    JUDGEMENTS_PER_TICK,
    LAST_CALL_S,
    PANEL_DEFAULT_VOTE,
    Panelist,
    PanelSeat,
    PanelStage,
)
from chefsplan_agents.verify._policy import Checks, ProviderStats, Trust, VerificationPolicy
from chefsplan_agents.verify._rescore import (
    DRIFT_NATS,
    EXACT_NATS,
    FINGERPRINT_K,
    NEAR_TIE_NATS,
    REPLAY_MISMATCH_FRACTION,
    SPOT_WIDTH,
    SUPPORT_NATS,
    RescoreMode,
    RescoreVerdict,
    rescore_result,
    spot_window,
    support_violation,
)
from chefsplan_agents.verify._suite import (
    BLIND_SPOTS,
    STRATEGIES,
    Models,
    StrategyStats,
    SuiteReport,
    run_adversarial_suite,
)
from chefsplan_agents.verify._watch import WatchedTask, Watcher, WatchEvent, WatchStage

__all__ = [
    "JUDGEMENTS_PER_TICK",
    "Canaries",
    "CanaryOutcome",
    "CanaryPolicy",
    "CanaryPool",
    "CanaryVerdict",
    "KnownAnswer",
    "canary_bounty",
    "canary_evidence",
    "check_canary",
    "known_answer",
    "LAST_CALL_S",
    "PANEL_DEFAULT_VOTE",
    "OutcomeJudgement",
    "PanelSeat",
    "PanelStage",
    "Panelist",
    "RevealedResult",
    "TaskOnChain",
    "judge_outcome",
    "read_task",
    "WatchEvent",
    "WatchStage",
    "WatchedTask",
    "Watcher",
    "EVIDENCE_KIND",
    "MAX_EVIDENCE_BYTES",
    "ChallengeEvidence",
    "load_evidence",
    "name_result_cid",
    "publish_evidence",
    "BLIND_SPOTS",
    "STRATEGIES",
    "Models",
    "StrategyStats",
    "SuiteReport",
    "run_adversarial_suite",
    "Arbitration",
    "Checks",
    "ProviderStats",
    "Trust",
    "VerificationPolicy",
    "arbitrate",
    "DRIFT_NATS",
    "EXACT_NATS",
    "FINGERPRINT_K",
    "NEAR_TIE_NATS",
    "REPLAY_MISMATCH_FRACTION",
    "SPOT_WIDTH",
    "SUPPORT_NATS",
    "RescoreMode",
    "RescoreVerdict",
    "rescore_result",
    "spot_window",
    "support_violation",
]
