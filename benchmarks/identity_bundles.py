"""Identity and bundles: canonical encoding, signing, decoding, VC-JWTs, and the didkit worker.

Each row times a baseline and our path in the same process (median of repeated runs):

* encode: ``json.dumps(sort_keys=True)`` of the same dict vs RFC 8785 ``encode_bundle``;
* decode: ``json.loads`` vs ``decode_task_bundle`` (size, JSON, version, schema, signature);
* sign: a raw Ed25519 signature over the bytes vs ``sign_bundle`` (canonicalize + sign);
* VC issue+verify: pure-Python backend vs the didkit backend (a child process per call).

Then the reason for the child process: how many of N interpreters that call didkit in process
crash at exit, against N that use :class:`DidkitBackend`.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _report import parser, report  # noqa: E402

from chefsplan_agents.bundles import (  # noqa: E402
    ChatMessage,
    ModelRequirement,
    TaskBundle,
    decode_task_bundle,
    encode_bundle,
    sign_bundle,
)
from chefsplan_agents.identity import (  # noqa: E402
    DidkitBackend,
    Identity,
    PythonDidBackend,
    didkit_available,
    issue_credential,
    verify_credential,
)

ROOT = Path(__file__).resolve().parent.parent


def median_ms(fn: Callable[[], object], *, repeat: int, number: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples) * 1000


def crash_count(code: str, runs: int) -> int:
    crashes = 0
    for _ in range(runs):
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            check=False,
        )
        crashes += proc.returncode != 0
    return crashes


IN_PROCESS = textwrap.dedent(
    """
    import asyncio, didkit
    key = didkit.generate_ed25519_key()
    did = didkit.key_to_did("key", key)
    async def main():
        return await didkit.key_to_verification_method("key", key)
    print(asyncio.run(main()))
    """
)
VIA_WORKER = textwrap.dedent(
    """
    from chefsplan_agents.identity import DidkitBackend, Identity, issue_credential
    ident = Identity.generate()
    print(issue_credential(ident, {"a": 1}, backend=DidkitBackend())[:20])
    """
)


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    ident = Identity.generate()
    messages = [ChatMessage(role="user", content=f"turn {i}: " + "word " * 40) for i in range(8)]
    task = TaskBundle(
        kind="chat",
        messages=messages,
        model=ModelRequirement(name="smollm2-135m", sha256="ab" * 32),
        requester_did=ident.did,
    )
    signed = sign_bundle(task, ident)
    data = encode_bundle(signed)
    as_dict = signed.model_dump(mode="json")
    payload = encode_bundle(task)

    rows = []
    summary: dict[str, object] = {"bundle_bytes": len(data)}

    def row(name: str, base_name: str, base_ms: float, ours_ms: float) -> None:
        ratio = ours_ms / base_ms if base_ms else float("inf")
        rows.append([name, base_name, f"{base_ms:.4f}", f"{ours_ms:.4f}", f"{ratio:.1f}x"])
        summary[name] = {"baseline_ms": base_ms, "ours_ms": ours_ms, "ratio": ratio}

    row(
        "encode",
        "json.dumps sorted",
        median_ms(
            lambda: json.dumps(as_dict, sort_keys=True, separators=(",", ":")).encode(),
            repeat=7,
            number=200,
        ),
        median_ms(lambda: encode_bundle(signed), repeat=7, number=200),
    )
    row(
        "decode+verify",
        "json.loads",
        median_ms(lambda: json.loads(data), repeat=7, number=200),
        median_ms(lambda: decode_task_bundle(data), repeat=7, number=100),
    )
    row(
        "sign",
        "raw Ed25519 sign",
        median_ms(lambda: ident.sign(payload), repeat=7, number=200),
        median_ms(lambda: sign_bundle(task, ident), repeat=7, number=100),
    )

    python_backend = PythonDidBackend()

    def vc_round(backend: object) -> None:
        token = issue_credential(ident, {"n": 1}, backend=backend)  # type: ignore[arg-type]
        verify_credential(token, backend=backend)  # type: ignore[arg-type]

    py_ms = median_ms(lambda: vc_round(python_backend), repeat=5, number=50)
    notes = (
        "encode = model_dump + RFC 8785; decode+verify = size, JSON, version, pydantic schema "
        "and an Ed25519 verify; sign = canonicalize without the signature field, then sign."
    )
    if didkit_available():
        didkit = DidkitBackend()
        row(
            "VC issue+verify",
            "pure Python backend",
            py_ms,
            median_ms(lambda: vc_round(didkit), repeat=3, number=3),
        )
        runs = 10
        in_process = crash_count(IN_PROCESS, runs)
        via_worker = crash_count(VIA_WORKER, runs)
        summary["didkit_exit_crashes"] = {
            "runs": runs,
            "in_process": in_process,
            "via_worker": via_worker,
        }
        notes += (
            f" The didkit backend pays for two child processes per round (one per call). "
            f"Interpreters that awaited a didkit call in process and then exited: {in_process}/"
            f"{runs} crashed at exit; interpreters using DidkitBackend: {via_worker}/{runs}."
        )
    else:
        notes += " didkit is not installed: the didkit rows were skipped."
    report(
        args,
        name="identity_bundles",
        title="Identity and bundles: ms per operation vs baseline",
        columns=["operation", "baseline", "baseline ms", "ours ms", "ours/baseline"],
        rows=rows,
        summary=summary,
        notes=notes,
    )


if __name__ == "__main__":
    main()
