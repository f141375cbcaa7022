"""Sensitive data: which texts the app's policy marks sensitive, and who may see them.

The tools apply this themselves, so a model that drives the tools (or any other caller) cannot
send sensitive data where the policy forbids it, whatever arguments it chooses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from chefsplan_agents.config import PolicySettings
from chefsplan_agents.tools._receipts import ProviderInfo

__all__ = ["is_sensitive", "sensitive_refusal"]


def is_sensitive(texts: Iterable[str], policy: PolicySettings) -> bool:
    """Whether any of ``texts`` matches one of the policy's ``sensitive_patterns``."""
    patterns = policy.sensitive_patterns
    return bool(patterns) and any(re.search(p, t) for t in texts for p in patterns)


def _states_model(p: ProviderInfo, model: str) -> bool:
    wanted = model.lower().removeprefix("0x")
    return wanted in (p.model_name.lower(), p.model_sha256.lower())


def sensitive_refusal(provider: ProviderInfo, policy: PolicySettings) -> str | None:
    """Why ``provider`` may not see sensitive data under ``policy`` (``None``: it may).

    The criteria are the policy's ``sensitive_providers`` (DIDs or addresses),
    ``sensitive_models`` (names or sha256s the signed offer must state),
    ``sensitive_max_price_per_1k_wei`` and ``sensitive_tags`` (tags the signed offer must
    state, each with that value); a policy with none of them trusts nobody.
    """
    if not (
        policy.sensitive_providers
        or policy.sensitive_models
        or policy.sensitive_max_price_per_1k_wei is not None
        or policy.sensitive_tags
    ):
        return "the policy names no criteria for sensitive data"
    if policy.sensitive_providers:
        allowed = {a.lower() for a in policy.sensitive_providers}
        if provider.did.lower() not in allowed and provider.address.lower() not in allowed:
            return "not in policy.sensitive_providers"
    if policy.sensitive_models and not any(
        _states_model(provider, m) for m in policy.sensitive_models
    ):
        return f"its offer's model {provider.model_name} is not in policy.sensitive_models"
    cap = policy.sensitive_max_price_per_1k_wei
    if cap is not None and provider.price_per_1k_tokens_wei > cap:
        return f"its offered price {provider.price_per_1k_tokens_wei} wei/1k is over {cap}"
    for key, wanted in sorted(policy.sensitive_tags.items()):
        stated = provider.tags.get(key)
        if stated != wanted:
            said = "states no " + key if stated is None else f"states {key}={stated}"
            return f"its signed offer {said}, policy.sensitive_tags wants {key}={wanted}"
    return None
