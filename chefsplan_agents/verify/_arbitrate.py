"""Redundancy across hardware: settle disagreeing replicas by re-score, not by hash vote.

Replicas on different hardware, thread counts or builds may write different greedy tokens at a
near tie, so their output hashes differ and the market's hash quorum fails (``NoQuorum``). The
requester's verifier can still tell honest from forged: it re-scores every revealed result and
accepts the output the passing results agree on. When exactly one distinct output passes, it
is the answer and every replica that revealed anything else is reported wrong.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from chefsplan_agents.bundles import ResultBundle, TaskBundle
from chefsplan_agents.llm import LLMBackend
from chefsplan_agents.verify._rescore import RescoreMode, RescoreVerdict, rescore_result

__all__ = ["Arbitration", "arbitrate"]


@dataclass(frozen=True)
class Arbitration:
    """What re-scoring every revealed result decided.

    Attributes:
        accepted: The key (replica address or result CID, as given) of the accepted result, or
            ``None`` when no single output passes.
        result: The accepted result (``None`` with ``accepted``).
        wrong: Keys of the replicas whose result failed or revealed another output.
        verdicts: Each key's re-score verdict.
        reason: One line saying what was decided and why.
    """

    accepted: str | None
    result: ResultBundle | None
    wrong: tuple[str, ...]
    verdicts: Mapping[str, RescoreVerdict]
    reason: str

    @property
    def decided(self) -> bool:
        """One output was accepted."""
        return self.accepted is not None

    @property
    def rescore_ms(self) -> float:
        """The verifier's model time over all re-scores."""
        return sum(v.rescore_ms for v in self.verdicts.values())


def arbitrate(
    llm: LLMBackend,
    task: TaskBundle,
    results: Mapping[str, ResultBundle],
    *,
    task_cid: str | None = None,
    mode: RescoreMode = "full",
) -> Arbitration:
    """Re-score each revealed result and accept the output the passing ones agree on.

    Exactly one distinct passing output: accepted. Several: the one most passing replicas
    revealed, if that is unique (honest replicas may split at a near tie within the
    re-score's tolerance; both are then valid answers of the model). None: nothing accepted.

    Args:
        llm: The verifier's model (the task's pinned model).
        task: The task the replicas ran.
        results: Each replica's revealed result, keyed by whatever names it (address, CID).
        task_cid: The task's CID, if known (computed from the task otherwise).
        mode: The re-score mode for each result.

    Returns:
        The decision; a failing result is never an exception.

    Raises:
        VerificationError: The verifier cannot give an opinion (another model than pinned).
    """
    verdicts = {
        key: rescore_result(llm, task, result, task_cid=task_cid, mode=mode)
        for key, result in results.items()
    }
    passing = Counter(results[k].output_hash for k, v in verdicts.items() if v.passed)
    ranked = passing.most_common()
    failed = sum(not v.passed for v in verdicts.values())
    if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        why = "no revealed result passes" if not ranked else "passing outputs tie"
        return Arbitration(
            accepted=None,
            result=None,
            wrong=tuple(k for k, v in verdicts.items() if not v.passed),
            verdicts=verdicts,
            reason=f"{why} the re-score ({len(results)} revealed, {failed} failed)",
        )
    winner = ranked[0][0]
    key = next(k for k, v in verdicts.items() if v.passed and results[k].output_hash == winner)
    wrong = tuple(
        k for k, v in verdicts.items() if not v.passed or results[k].output_hash != winner
    )
    return Arbitration(
        accepted=key,
        result=results[key],
        wrong=wrong,
        verdicts=verdicts,
        reason=f"{len(ranked)} distinct output(s) pass the re-score of {len(results)}; "
        f"accepted {winner[:12]}…, {len(wrong)} replica(s) wrong",
    )
