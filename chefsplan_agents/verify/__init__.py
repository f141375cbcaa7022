"""Verification: second opinions on delegated results.

Redundant execution with commit-reveal votes is enforced on chain by the ``TaskMarket``; this
package adds the checks a requester or watcher runs off chain, starting with the re-score
(:func:`rescore_result`): it binds the text, tokens, fingerprint, task and model of a result to
one prefill pass of the verifier's own model, in full or as a spot check. docs/verification.md
explains each check, its cost and its limits.
"""

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

__all__ = [
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
