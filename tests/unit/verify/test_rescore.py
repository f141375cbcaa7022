"""Second opinions by re-scoring, on a real devnet with the scripted tiny model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chefsplan_agents.bundles import (
    ResultBundle,
    TaskBundle,
    decode_task_bundle,
    output_hash,
    sign_bundle,
)
from chefsplan_agents.devnet import Devnet
from chefsplan_agents.errors import InvalidSignature, VerificationError
from chefsplan_agents.identity import Identity
from chefsplan_agents.llm import LlamaCppBackend, resolve_model
from chefsplan_agents.market import DelegationReceipt
from chefsplan_agents.verify import rescore_result


@pytest.fixture(scope="module")
def settled() -> Iterator[tuple[Devnet, DelegationReceipt, TaskBundle]]:
    with Devnet.create(nodes=1, model="tiny") as net:
        receipt = net.run_task("Say hi", replicas=1)
        task = decode_task_bundle(net.store.get(receipt.bundle_cid))
        yield net, receipt, task


@pytest.fixture(scope="module")
def verifier() -> Iterator[LlamaCppBackend]:
    with LlamaCppBackend(resolve_model("tiny"), n_threads=1) as backend:
        yield backend


def _forged(result: ResultBundle, **changes: object) -> ResultBundle:
    """The result with ``changes``, re-signed by a new identity so only the content is wrong."""
    forger = Identity.generate()
    fields = {**result.model_dump(), **changes, "node_did": forger.did, "signature": None}
    return sign_bundle(ResultBundle.model_validate(fields), forger)


def test_honest_result_passes(
    settled: tuple[Devnet, DelegationReceipt, TaskBundle], verifier: LlamaCppBackend
) -> None:
    _, receipt, task = settled
    verdict = rescore_result(verifier, task, receipt.result)
    assert receipt.output == "CHEFSPLAN OK"  # the scripted model's known greedy answer
    assert verdict.passed, verdict.reason
    assert verdict.top1_fraction == 1.0
    assert verdict.fingerprint_agreement > 0.99
    assert verdict.tokens == len(receipt.result.token_ids) > 0


def test_fabricated_tokens_fail(
    settled: tuple[Devnet, DelegationReceipt, TaskBundle], verifier: LlamaCppBackend
) -> None:
    _, receipt, task = settled
    text = "NOT THE ANSWER"
    fake = _forged(
        receipt.result,
        output=text,
        output_hash=output_hash(text),
        token_ids=tuple(verifier.tokenize(text)),
        fingerprint=(),
    )
    verdict = rescore_result(verifier, task, fake)
    assert not verdict.passed
    assert verdict.top1_fraction < 0.5
    assert "first choice" in verdict.reason and "\n" not in verdict.reason


def test_copied_tokens_with_a_forged_fingerprint_fail(
    settled: tuple[Devnet, DelegationReceipt, TaskBundle], verifier: LlamaCppBackend
) -> None:
    _, receipt, task = settled
    bogus = tuple(((1, -0.01), (2, -5.0)) for _ in receipt.result.token_ids)
    verdict = rescore_result(verifier, task, _forged(receipt.result, fingerprint=bogus))
    assert verdict.top1_fraction == 1.0  # the tokens themselves are right
    assert not verdict.passed
    assert "fingerprint agreement" in verdict.reason


def test_tampered_result_is_rejected_before_rescoring(
    settled: tuple[Devnet, DelegationReceipt, TaskBundle], verifier: LlamaCppBackend
) -> None:
    _, receipt, task = settled
    tampered = receipt.result.model_copy(update={"token_ids": receipt.result.token_ids[:-1]})
    with pytest.raises(InvalidSignature):
        rescore_result(verifier, task, tampered)


def test_another_model_cannot_give_an_opinion(
    settled: tuple[Devnet, DelegationReceipt, TaskBundle],
) -> None:
    _, receipt, task = settled
    with LlamaCppBackend(resolve_model("tiny-random"), n_threads=1) as other:
        with pytest.raises(VerificationError, match="use the same model file"):
            rescore_result(other, task, receipt.result)
