"""Second opinions by re-scoring: honest results pass, bad claims get a failed verdict."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chefsplan_agents.bundles import (
    ResultBundle,
    TaskBundle,
    decode_task_bundle,
    encode_bundle,
    output_hash,
    sign_bundle,
)
from chefsplan_agents.devnet import Devnet
from chefsplan_agents.errors import VerificationError
from chefsplan_agents.identity import Identity
from chefsplan_agents.llm import LlamaCppBackend, resolve_model
from chefsplan_agents.market import DelegationReceipt
from chefsplan_agents.node import task_prompt
from chefsplan_agents.testing import ChangeToken, ChosenSeed, TextSwap, honest_result
from chefsplan_agents.verify import FINGERPRINT_K, rescore_result, spot_window

MakeTask = Callable[..., Any]


@pytest.fixture(scope="module")
def settled() -> Iterator[tuple[Devnet, DelegationReceipt, TaskBundle]]:
    with Devnet.create(nodes=1, model="tiny") as net:
        receipt = net.run_task("Say hi", replicas=1)
        task = decode_task_bundle(net.store.get(receipt.bundle_cid))
        yield net, receipt, task


def _forged(result: ResultBundle, **changes: object) -> ResultBundle:
    """The result with ``changes``, re-signed by a new identity so only the content is wrong."""
    forger = Identity.generate()
    fields = {**result.model_dump(), **changes, "node_did": forger.did, "signature": None}
    return sign_bundle(ResultBundle.model_validate(fields), forger)


# --- honest results ------------------------------------------------------------------------


def test_a_node_result_from_the_market_passes(
    settled: tuple[Devnet, DelegationReceipt, TaskBundle], scripted: LlamaCppBackend
) -> None:
    _, receipt, task = settled
    verdict = rescore_result(scripted, task, receipt.result, task_cid=receipt.bundle_cid)
    assert receipt.output == "CHEFSPLAN OK"  # the scripted model's known greedy answer
    assert verdict.passed, verdict.reason
    assert verdict.top1_fraction == 1.0
    assert verdict.fingerprint_agreement > 0.99
    assert verdict.tokens == verdict.positions_checked == len(receipt.result.token_ids) > 0


@pytest.mark.parametrize(("threads", "batch"), [(2, 512), (1, 3), (2, 1)])
def test_honest_results_from_other_thread_and_batch_settings_pass(
    threads: int,
    batch: int,
    random_llm: LlamaCppBackend,
    make_task: MakeTask,
    cheater: Identity,
) -> None:
    task, cid = make_task(random_llm, "Dinner for two, please.", max_tokens=48)
    with LlamaCppBackend(resolve_model("tiny-random"), n_threads=threads, n_batch=batch) as node:
        result = honest_result(task, cid, node, cheater)
    verdict = rescore_result(random_llm, task, result)
    assert verdict.passed, verdict.reason
    assert verdict.positions_checked == len(result.token_ids) == 48


@pytest.mark.parametrize("threads", [1, 2])
def test_an_honest_sampled_result_passes(
    threads: int, random_llm: LlamaCppBackend, make_task: MakeTask, cheater: Identity
) -> None:
    # Regression: the old rule demanded 90% first choices, which sampling never gives.
    task, cid = make_task(
        random_llm, "Soup of the day", max_tokens=40, temperature=1.0, top_p=0.9, seed=11
    )
    with LlamaCppBackend(resolve_model("tiny-random"), n_threads=threads, n_batch=7) as node:
        result = honest_result(task, cid, node, cheater)
    verdict = rescore_result(random_llm, task, result)
    assert verdict.passed, verdict.reason
    assert verdict.top1_fraction < 0.9  # it really sampled


def test_a_result_cut_at_a_stop_string_passes(
    scripted: LlamaCppBackend, make_task: MakeTask, cheater: Identity
) -> None:
    task, cid = make_task(scripted, stop=("SP",))
    result = honest_result(task, cid, scripted, cheater)
    assert result.output == "CHEF"
    assert rescore_result(scripted, task, result).passed


def test_a_result_cut_where_no_stop_string_starts_fails(
    scripted: LlamaCppBackend, make_task: MakeTask, cheater: Identity
) -> None:
    task, cid = make_task(scripted, stop=("LAN",))
    honest = honest_result(task, cid, scripted, cheater)
    assert honest.output == "CHEFSP"
    cut = honest.token_ids[:3]
    short = _forged(
        honest,
        token_ids=cut,
        fingerprint=honest.fingerprint[:3],
        output="CHE",
        output_hash=output_hash("CHE"),
    )
    verdict = rescore_result(scripted, task, short)
    assert not verdict.passed and verdict.check == "end", verdict.reason


# --- the failures measured on the old verifier (each passed or raised before) ----------------


def test_text_that_is_not_the_tokens_fails(
    scripted: LlamaCppBackend, make_task: MakeTask, cheater: Identity
) -> None:
    task, cid = make_task(scripted)
    verdict = rescore_result(scripted, task, TextSwap("NO").forge(task, cid, scripted, cheater))
    assert not verdict.passed
    assert "not the detokenization" in verdict.reason


@pytest.mark.parametrize("fix_fingerprint", [False, True])
def test_one_late_token_changed_fails(
    fix_fingerprint: bool, scripted: LlamaCppBackend, make_task: MakeTask, cheater: Identity
) -> None:
    task, cid = make_task(scripted)
    forged = ChangeToken(position=-1, fix_fingerprint=fix_fingerprint).forge(
        task, cid, scripted, cheater
    )
    verdict = rescore_result(scripted, task, forged)
    assert not verdict.passed
    assert "claimed token 11" in verdict.reason


def test_an_out_of_vocabulary_token_is_a_failed_verdict(
    scripted: LlamaCppBackend, make_task: MakeTask, cheater: Identity
) -> None:
    task, cid = make_task(scripted)
    honest = honest_result(task, cid, scripted, cheater)
    bad = _forged(honest, token_ids=(*honest.token_ids[:-1], 10**6))
    verdict = rescore_result(scripted, task, bad)
    assert not verdict.passed
    assert "outside the model's vocabulary" in verdict.reason


def test_the_prover_cannot_choose_k(
    scripted: LlamaCppBackend, make_task: MakeTask, cheater: Identity
) -> None:
    task, cid = make_task(scripted)
    honest = honest_result(task, cid, scripted, cheater)
    one_each = tuple(entry[:1] for entry in honest.fingerprint)
    verdict = rescore_result(scripted, task, _forged(honest, fingerprint=one_each))
    assert not verdict.passed
    assert f"not {FINGERPRINT_K}" in verdict.reason


# --- malformed claims are verdicts, not exceptions ---------------------------------------------


def _claim(case: str, honest: ResultBundle) -> ResultBundle:
    if case == "fingerprint":
        return _forged(honest, fingerprint=())
    if case == "length":
        return _forged(
            honest,
            token_ids=honest.token_ids * 3,
            fingerprint=honest.fingerprint * 3,
            output=honest.output * 3,
            output_hash=output_hash(honest.output * 3),
        )
    if case == "end":
        return _forged(honest, token_ids=(), fingerprint=(), output="", output_hash=output_hash(""))
    if case == "signature":
        return honest.model_copy(update={"token_ids": honest.token_ids[:-1]})
    if case == "task":
        return _forged(
            honest, task_cid="bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
        )
    if case == "model":
        return _forged(honest, model_sha256="0" * 64)
    assert case == "signature-nan"
    # NaN cannot pass the schema, nor be encoded and signed; a hostile decoder could still
    # hand one over, with a signature copied from an honest result.
    nan_entry = ((honest.fingerprint[0][0][0], math.nan), *honest.fingerprint[0][1:])
    return ResultBundle.model_construct(
        **{**honest.__dict__, "fingerprint": (nan_entry, *honest.fingerprint[1:])}
    )


@pytest.mark.parametrize(
    "case", ["fingerprint", "length", "end", "signature", "task", "model", "signature-nan"]
)
def test_a_malformed_claim_is_a_failed_verdict_with_a_reason(
    case: str, scripted: LlamaCppBackend, make_task: MakeTask, cheater: Identity
) -> None:
    task, cid = make_task(scripted)
    claim = _claim(case, honest_result(task, cid, scripted, cheater))
    verdict = rescore_result(scripted, task, claim)
    assert not verdict.passed
    assert verdict.check == case.split("-")[0], verdict.reason
    assert verdict.reason and "\n" not in verdict.reason


def test_another_model_cannot_give_an_opinion(
    scripted: LlamaCppBackend, random_llm: LlamaCppBackend, make_task: MakeTask, cheater: Identity
) -> None:
    task, cid = make_task(scripted)
    result = honest_result(task, cid, scripted, cheater)
    with pytest.raises(VerificationError, match="use the same model file"):
        rescore_result(random_llm, task, result)


# --- spot checks ---------------------------------------------------------------------------


def test_the_spot_window_is_fixed_by_the_committed_result() -> None:
    assert spot_window(b"a", 10, 16) == (0, 10)
    first = spot_window(b"result-1", 100, 16)
    assert first == spot_window(b"result-1", 100, 16)
    assert first[1] - first[0] == 16 and 0 <= first[0] <= 84
    starts = {spot_window(bytes([i]), 100, 16)[0] for i in range(32)}
    assert len(starts) > 10


def test_a_spot_check_reads_a_prefix_and_still_catches_a_change_inside_it(
    random_llm: LlamaCppBackend, make_task: MakeTask, cheater: Identity
) -> None:
    task, cid = make_task(random_llm, "Dinner for two, please.", max_tokens=64)
    honest = honest_result(task, cid, random_llm, cheater)
    verdict = rescore_result(random_llm, task, honest, mode="spot")
    assert verdict.passed, verdict.reason
    _, end = spot_window(encode_bundle(honest), len(honest.token_ids))
    assert verdict.positions_checked == end < 64
    forged = ChangeToken(position=0).forge(task, cid, random_llm, cheater)  # in every window
    spot = rescore_result(random_llm, task, forged, mode="spot")
    assert not spot.passed and spot.check == "token", spot.reason


# --- sampled and penalized tasks -----------------------------------------------------------


def test_an_honest_greedy_result_with_a_repeat_penalty_passes(
    random_llm: LlamaCppBackend, make_task: MakeTask, cheater: Identity
) -> None:
    task, cid = make_task(random_llm, "Soup, soup, soup", max_tokens=40, repeat_penalty=1.5)
    with LlamaCppBackend(resolve_model("tiny-random"), n_threads=2, n_batch=5) as node:
        result = honest_result(task, cid, node, cheater)
    verdict = rescore_result(random_llm, task, result)
    assert verdict.passed, verdict.reason


@pytest.mark.parametrize("seed", [4, 99])
def test_a_sampled_result_drawn_with_another_seed_fails(
    seed: int, random_llm: LlamaCppBackend, make_task: MakeTask, cheater: Identity
) -> None:
    # The prover cannot pick its draw: the seed is in the signed task, and the verifier replays it.
    task, cid = make_task(random_llm, "Soup of the day", max_tokens=40, temperature=1.0, seed=3)
    forged = ChosenSeed(seed=seed).forge(task, cid, random_llm, cheater)
    verdict = rescore_result(random_llm, task, forged)
    assert not verdict.passed
    assert verdict.check == "replay", verdict.reason
    assert "not drawn with the task's seed" in verdict.reason


def test_a_sampled_token_outside_the_support_fails(
    random_llm: LlamaCppBackend, make_task: MakeTask, cheater: Identity
) -> None:
    task, cid = make_task(
        random_llm, "Soup of the day", max_tokens=40, temperature=1.0, top_k=3, seed=3
    )
    honest = honest_result(task, cid, random_llm, cheater)
    ids = list(honest.token_ids)
    ids[-1] = 100  # a byte token, which the random model biases far below its top 3
    text = random_llm.detokenize(ids)
    forged = _forged(honest, token_ids=tuple(ids), output=text, output_hash=output_hash(text))
    verdict = rescore_result(random_llm, task, forged)
    assert not verdict.passed
    assert verdict.check == "support", verdict.reason


def test_rescoring_replicas_of_one_task_reuses_the_prompt_and_gives_the_same_numbers(
    random_llm: LlamaCppBackend, make_task: MakeTask, cheater: Identity
) -> None:
    task, cid = make_task(random_llm, "Dinner for two, please.", max_tokens=24)
    first = honest_result(task, cid, random_llm, cheater)
    prompt = task_prompt(task, random_llm)
    with LlamaCppBackend(resolve_model("tiny-random"), n_threads=1) as fresh:
        expected = fresh.rescore(prompt, first.token_ids, k=10)
    again = [random_llm.rescore(prompt, first.token_ids, k=10) for _ in range(2)]
    other = random_llm.rescore(prompt, first.token_ids[:7], k=10)
    assert again[0].positions == again[1].positions == expected.positions
    assert other.positions == expected.positions[:7]
    assert other.next_top == expected.positions[7].top


def test_a_prompt_sharing_a_prefix_with_the_last_rescore_evaluates_only_what_differs() -> None:
    # Tasks in one chat template with one system prompt share their beginning.
    first = "Kitchen rules: answer briefly, list allergens. Dinner for two, please."
    second = "Kitchen rules: answer briefly, list allergens. Soup for six, please."
    model = resolve_model("tiny-random")
    with (
        LlamaCppBackend(model, n_threads=1) as verifier,
        LlamaCppBackend(model, n_threads=1, reuse_rescore_prompt=False) as fresh,
    ):
        ids = tuple(verifier.tokenize("Soup and a salad")[-8:])
        p1, p2 = verifier.tokenize(first), verifier.tokenize(second)
        shared = next(i for i, (a, b) in enumerate(zip(p1, p2, strict=False)) if a != b)
        verifier.rescore(first, ids, k=10)
        reused = verifier.rescore(second, ids, k=10)
        fresh.rescore(first, ids, k=10)
        expected = fresh.rescore(second, ids, k=10)
    assert shared > 30
    assert reused.evaluated_tokens == len(p2) - shared + len(ids)
    assert expected.evaluated_tokens == len(p2) + len(ids)
    assert [p.token_id for p in reused.positions] == [p.token_id for p in expected.positions]
    for ours, theirs in zip(reused.positions, expected.positions, strict=True):
        assert ours.rank == theirs.rank
        assert [t for t, _ in ours.top] == [t for t, _ in theirs.top]
        assert abs(ours.logprob - theirs.logprob) < 1e-4
    assert reused.next_top[0][0] == expected.next_top[0][0]


def test_a_rescore_without_the_next_position_scores_the_same_tokens(
    random_llm: LlamaCppBackend,
) -> None:
    # A spot window that ends early never reads the row after it; the others stay the same.
    ids = tuple(random_llm.tokenize("Soup and a salad")[-6:])
    both = random_llm.rescore("Dinner for two, please.", ids, k=10)
    short = random_llm.rescore("Dinner for two, please.", ids, k=10, score_next=False)
    assert short.positions == both.positions
    assert both.next_top and short.next_top == () and short.next_eog_logprob is None


# --- exact re-scores -----------------------------------------------------------------------


def test_an_exact_rescore_passes_honest_results_and_raises_for_another_build(
    random_llm: LlamaCppBackend, make_task: MakeTask, cheater: Identity
) -> None:
    greedy, gcid = make_task(random_llm, "Dinner for two, please.", max_tokens=32)
    sampled, scid = make_task(random_llm, "Soup", max_tokens=32, temperature=1.0, seed=5)
    with LlamaCppBackend(resolve_model("tiny-random"), n_threads=2) as node:
        results = [
            honest_result(greedy, gcid, node, cheater),
            honest_result(sampled, scid, node, cheater),
        ]
    for task, result in zip((greedy, sampled), results, strict=True):
        verdict = rescore_result(random_llm, task, result, mode="exact")
        assert verdict.passed, verdict.reason
        assert verdict.max_drift < 1e-4
    elsewhere = _forged(results[0], llama_cpp_build="llama-cpp-python 0.0.0 | other")
    with pytest.raises(VerificationError, match="mode='full'"):
        rescore_result(random_llm, greedy, elsewhere, mode="exact")
