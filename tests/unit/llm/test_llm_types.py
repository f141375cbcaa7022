from __future__ import annotations

import numpy as np
import pytest

from chefsplan_agents.errors import ContextOverflow, InvalidGenerationParams, ModelHashMismatch
from chefsplan_agents.llm import (
    DeterminismProfile,
    GenerationParams,
    ModelInfo,
    RescoredPosition,
    RescoreResult,
    claimed_tokens_top1_fraction,
    fingerprint_agreement,
)
from chefsplan_agents.llm._base import check_context, cut_at_stop, log_softmax, top_k_of

SHA = "a" * 64


def _info(**kw: object) -> ModelInfo:
    values: dict[str, object] = {
        "name": "m",
        "sha256": SHA,
        "n_ctx": 128,
        "n_vocab": 10,
        "n_threads": 2,
        "n_batch": 512,
        "quantization": "F32",
        "llama_cpp": "x",
        "backend": "llama-cpp",
    }
    values.update(kw)
    return ModelInfo(**values)


# --- GenerationParams ---------------------------------------------------------------------


def test_defaults_are_the_determinism_profile() -> None:
    p = GenerationParams()
    assert p.greedy and p.temperature == 0.0
    assert p.repeat_penalty == 1.0  # not llama.cpp server's 1.1
    assert p.seed == 0 and p.logprobs == 5


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"min_p": 2.0}, "min_p"),
        ({"repeat_penalty": 0.0}, "repeat_penalty"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"logprobs": 0}, "logprobs"),
        ({"logprobs": 21}, "logprobs"),
        ({"max_tokens": "many"}, "max_tokens"),
        ({"nucleus": 0.9}, "nucleus"),
    ],
)
def test_bad_params_are_one_line_errors(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidGenerationParams) as info:
        GenerationParams(**kwargs)
    message = str(info.value)
    assert message.startswith(f"invalid generation parameter {field}")
    assert "\n" not in message
    assert isinstance(info.value, ValueError)


def test_empty_stop_string_is_refused() -> None:
    with pytest.raises(InvalidGenerationParams, match="stop strings must not be empty"):
        GenerationParams(stop=("",))


def test_params_are_frozen() -> None:
    p = GenerationParams()
    with pytest.raises(ValueError):
        p.max_tokens = 3  # type: ignore[misc]


# --- fingerprints ---------------------------------------------------------------------------


def _result(*positions: tuple[int, int, tuple[tuple[int, float], ...]]) -> RescoreResult:
    return RescoreResult(
        positions=tuple(
            RescoredPosition(token_id=t, logprob=top[0][1], rank=r, top=top)
            for t, r, top in positions
        ),
        prompt_tokens=3,
        elapsed_ms=1.0,
        model_sha256=SHA,
    )


def test_agreement_is_one_for_identical_fingerprints() -> None:
    fp = (((1, -0.1), (2, -2.0)), ((3, -0.5), (4, -1.0)))
    assert fingerprint_agreement(fp, fp) == 1.0


def test_agreement_tolerates_small_drift_only() -> None:
    claimed = (((1, -0.1), (2, -2.0)),)
    drifted = (((1, -0.15), (2, -2.3)),)
    assert fingerprint_agreement(claimed, drifted) == 1.0
    assert fingerprint_agreement(claimed, drifted, tolerance=0.1) == 0.5


def test_agreement_drops_for_other_tokens_and_missing_positions() -> None:
    claimed = (((1, -0.1), (2, -2.0)), ((3, -0.5), (4, -1.0)))
    other = (((1, -0.1), (9, -2.0)),)
    # Position 0 half agrees, position 1 is missing.
    assert fingerprint_agreement(claimed, other) == pytest.approx(0.25)
    assert fingerprint_agreement((), ()) == 1.0
    assert fingerprint_agreement(claimed, ()) == 0.0


def test_agreement_accepts_rescore_results() -> None:
    top = ((5, -0.2), (6, -1.7))
    result = _result((5, 1, top))
    assert fingerprint_agreement((top,), result) == 1.0
    assert fingerprint_agreement(result, result) == 1.0


def test_top1_fraction_counts_rank_one() -> None:
    top = ((5, -0.2), (6, -1.7))
    result = _result((5, 1, top), (6, 2, top), (5, 1, top), (7, 9, top))
    assert claimed_tokens_top1_fraction(result) == 0.5
    assert result.top1_fraction == 0.5
    assert _result().top1_fraction == 1.0


# --- numeric helpers ------------------------------------------------------------------------


def test_log_softmax_normalizes() -> None:
    lp = log_softmax(np.array([1.0, 2.0, 3.0], dtype=np.float32))
    assert np.exp(lp).sum() == pytest.approx(1.0)
    assert lp[2] == pytest.approx(-0.40760596)


def test_top_k_breaks_ties_by_lower_id() -> None:
    lp = np.array([-1.0, -0.5, -1.0, -0.5, -3.0])
    assert top_k_of(lp, 3) == ((1, -0.5), (3, -0.5), (0, -1.0))
    assert len(top_k_of(lp, 99)) == 5


def test_cut_at_stop_keeps_whole_tokens_before_the_stop() -> None:
    pieces = ["Hel", "lo", " wo", "rld"]
    assert cut_at_stop(pieces, ["wor"]) == (2, True)  # " wo" reaches into the stop string
    assert cut_at_stop(pieces, ["lo w", "zz"]) == (1, True)
    assert cut_at_stop(pieces, ["zz"]) == (4, False)
    assert cut_at_stop(pieces, []) == (4, False)


def test_check_context_message() -> None:
    check_context(100, 28, 128)
    with pytest.raises(ContextOverflow, match="prompt of 100 tokens plus max_tokens=29 exceeds"):
        check_context(100, 29, 128)


# --- determinism profile ----------------------------------------------------------------------


def test_profile_of_backend_info_checks_out() -> None:
    profile = DeterminismProfile.of(_info(), seed=3)
    profile.check(_info())
    params = profile.params(max_tokens=7)
    assert params.greedy and params.seed == 3 and params.max_tokens == 7


def test_profile_refuses_other_model_or_threads() -> None:
    profile = DeterminismProfile.of(_info())
    with pytest.raises(ModelHashMismatch, match="profile pins"):
        profile.check(_info(sha256="b" * 64))
    with pytest.raises(InvalidGenerationParams, match="threads"):
        profile.check(_info(n_threads=4))
    with pytest.raises(InvalidGenerationParams, match="n_batch"):
        profile.check(_info(n_batch=8))


def test_position_logprobs_agrees_with_the_full_log_softmax() -> None:
    import numpy as np

    from chefsplan_agents.llm._base import log_softmax, position_logprobs, top_k_of

    rng = np.random.default_rng(7)
    logits = (rng.standard_normal(4096) * 4).astype(np.float32)
    logits[[10, 20, 30]] = logits.max() + 1.0  # a three-way tie at the top
    full = log_softmax(logits)
    chosen, top = position_logprobs(logits, 123, 5)
    assert abs(chosen - float(full[123])) < 1e-5
    assert [i for i, _ in top] == [i for i, _ in top_k_of(full, 5)]
    assert [i for i, _ in top][:3] == [10, 20, 30]  # ties resolve by lower id
    assert all(abs(a - b) < 1e-5 for (_, a), (_, b) in zip(top, top_k_of(full, 5), strict=True))
    assert abs(np.logaddexp.reduce(full.astype(np.float64))) < 1e-6  # a distribution


def test_top_k_of_small_vocabulary_and_zero_k() -> None:
    import numpy as np

    from chefsplan_agents.llm._base import top_k_of

    row = np.log(np.array([0.1, 0.6, 0.3]))
    assert [i for i, _ in top_k_of(row, 5)] == [1, 2, 0]
    assert top_k_of(row, 0) == ()


@pytest.mark.parametrize(
    "shape",
    [
        "peaked",
        "ties-in-margin",
        "flat",
        "one-spike",
        "few-in-margin",
        "wider-margin",
        "many-tied-at-k",
    ],
)
def test_top_ids_match_a_full_sort_on_every_path(shape: str) -> None:
    import numpy as np

    from chefsplan_agents.llm._base import _top_ids

    rng = np.random.default_rng(3)
    values = (rng.standard_normal(8192) * 2).astype(np.float32)
    if shape == "peaked":  # a handful within the margin: the candidate sort
        values[[7, 4000, 55, 8000, 123, 9]] += np.array([14, 13, 12.5, 12, 11, 10], np.float32)
    elif shape == "ties-in-margin":
        values[[300, 20, 7000]] = values.max() + 1.0
        values[[5, 6000]] = values.max() - 0.5
    elif shape == "flat":  # thousands within the margin, all tied: the partial sort
        values = np.zeros(8192, dtype=np.float32)
    elif shape == "one-spike":  # fewer than k within every margin: the argmax passes
        values = np.zeros(8192, dtype=np.float32)
        values[4242] = 50.0
    elif shape == "wider-margin":  # fewer than k within 8 nats, enough within 12
        values = np.zeros(8192, dtype=np.float32)
        values[[4242, 17, 8000]] = [50.0, 45.0, 41.0]
        values[[600, 3, 7001]] = 40.0
    elif shape == "many-tied-at-k":  # thousands within the margin, ties at the k-th place
        values = (rng.standard_normal(8192) * 0.5).astype(np.float32)
        values[[100, 50, 3000, 70]] = [10.0, 9.9, 9.8, 9.7]
        values[[900, 40, 8100]] = 9.0
    else:
        values[[10, 11]] += 30.0
    expected = [int(i) for i in np.lexsort((np.arange(values.size), -values))[:5]]
    assert _top_ids(values, 5) == expected
    assert _top_ids(values, 1) == expected[:1]
    assert _top_ids(values.astype(np.float64), 5) == expected
