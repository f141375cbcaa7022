"""Adversaries for testing verifiers: dishonest providers that forge signed results.

Every forger implements :class:`Cheat` — ``forge(task, task_cid, llm, identity)`` returns a
:class:`~chefsplan_agents.bundles.ResultBundle` signed by the cheater — so a node (or a test)
can run one where it would run the model honestly:

* :class:`Lazy` — junk tokens without running the model;
* :class:`WrongModel` — another model's honest output (a requantized copy: :func:`requantize`);
* :class:`Copycat` — another node's result, re-signed;
* :class:`Tamper` — runs an altered prompt;
* :class:`TextSwap` — honest tokens, other text;
* :class:`Truncate` / :class:`Pad` — stops early / appends its own tokens;
* :class:`SampledWhenGreedy` — samples when greedy was asked;
* :class:`ChosenSeed` — samples with a seed of its own, not the task's;
* :class:`ChangeToken` — one token swapped for the runner-up (a flipped "not");
* :class:`Silent` — claims and never answers (a no-show);
* :class:`Adaptive` — any of these on a fraction of its tasks, honest on the rest.

:func:`cheat_by_name` builds one by name (what ``chefsplan node run --testing-cheat`` uses).
:func:`honest_result` is the honest baseline. docs/verification.md says which check catches each.
"""

from chefsplan_agents.testing._cheats import (
    Adaptive,
    ChangeToken,
    Cheat,
    ChosenSeed,
    Copycat,
    Lazy,
    Pad,
    SampledWhenGreedy,
    Silent,
    Tamper,
    TextSwap,
    Truncate,
    WrongModel,
    honest_result,
    result_from_generation,
)
from chefsplan_agents.testing._named import CHEAT_NAMES, cheat_by_name, check_cheat
from chefsplan_agents.testing._requantize import QuantType, requantize

__all__ = [
    "CHEAT_NAMES",
    "Adaptive",
    "ChangeToken",
    "Cheat",
    "ChosenSeed",
    "Copycat",
    "Lazy",
    "Pad",
    "QuantType",
    "SampledWhenGreedy",
    "Silent",
    "Tamper",
    "TextSwap",
    "Truncate",
    "WrongModel",
    "cheat_by_name",
    "check_cheat",
    "honest_result",
    "requantize",
    "result_from_generation",
]
