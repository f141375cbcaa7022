"""Verification: second opinions on delegated results.

Redundant execution with commit-reveal votes is enforced on chain by the ``TaskMarket``; this
package adds the checks a requester or watcher runs off chain, starting with the cheap re-score
(:func:`rescore_result`).
"""

from chefsplan_agents.verify._rescore import RescoreVerdict, rescore_result

__all__ = ["RescoreVerdict", "rescore_result"]
