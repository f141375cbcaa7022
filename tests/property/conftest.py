"""Hypothesis profiles for the property suites.

The default run is sized for ``make test``. Longer runs set ``HYPOTHESIS_PROFILE=ci`` or
``HYPOTHESIS_PROFILE=thorough``; the suites in this folder read that variable themselves, so the
profiles are registered here but never loaded globally (other test layers keep their settings).
"""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings

PROFILE_ENV = "HYPOTHESIS_PROFILE"

settings.register_profile(
    "ci",
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)
settings.register_profile(
    "thorough",
    max_examples=500,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)
