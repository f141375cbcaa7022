"""Cheats by name, for ``chefsplan node run --testing-cheat`` and scripted devnets."""

from __future__ import annotations

from chefsplan_agents.errors import ConfigError
from chefsplan_agents.llm import LLMBackend
from chefsplan_agents.testing._cheats import (
    Adaptive,
    ChangeToken,
    Cheat,
    ChosenSeed,
    Lazy,
    Pad,
    SampledWhenGreedy,
    Tamper,
    TextSwap,
    Truncate,
    WrongModel,
)

__all__ = ["CHEAT_NAMES", "cheat_by_name", "check_cheat"]

#: The cheats a node can be started with by name (``wrong-model`` needs another model).
CHEAT_NAMES: tuple[str, ...] = (
    "lazy",
    "wrong-model",
    "tamper",
    "text-swap",
    "truncate",
    "pad",
    "sampled-when-greedy",
    "chosen-seed",
    "change-token",
)


def check_cheat(name: str, *, other_model: bool, fraction: float) -> None:
    """Check :func:`cheat_by_name`'s arguments before any model is loaded.

    Raises:
        ConfigError: Unknown name, a missing or unneeded other model, a fraction out of range.
    """
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"the cheating fraction must be in (0, 1] (got {fraction})")
    if name not in CHEAT_NAMES:
        raise ConfigError(f"unknown cheat {name!r}; choose one of: {', '.join(CHEAT_NAMES)}")
    if (name == "wrong-model") != other_model:
        raise ConfigError(
            "the wrong-model cheat needs the other model it runs (--testing-cheat-model GGUF); "
            "no other cheat takes one"
        )


def cheat_by_name(
    name: str, *, other_model: LLMBackend | None = None, fraction: float = 1.0
) -> Cheat:
    """The cheat called ``name``, cheating on ``fraction`` of its tasks.

    Args:
        name: One of :data:`CHEAT_NAMES`.
        other_model: The cheaper model a ``wrong-model`` cheat runs (and claims is the pinned
            one); required for it, refused for the others.
        fraction: Share of tasks cheated on, in ``(0, 1]``; below 1 the cheat is
            :class:`~chefsplan_agents.testing.Adaptive` (honest on the rest).

    Raises:
        ConfigError: Unknown name, a missing or unneeded other model, a fraction out of range.
    """
    check_cheat(name, other_model=other_model is not None, fraction=fraction)
    cheat: Cheat
    if other_model is not None:
        cheat = WrongModel(other_model)
    else:
        by_name: dict[str, Cheat] = {
            "lazy": Lazy(),
            "tamper": Tamper(),
            "text-swap": TextSwap(),
            "truncate": Truncate(),
            "pad": Pad(),
            "sampled-when-greedy": SampledWhenGreedy(),
            "chosen-seed": ChosenSeed(),
            "change-token": ChangeToken(),
        }
        cheat = by_name[name]
    return cheat if fraction == 1.0 else Adaptive(cheat, fraction=fraction)
