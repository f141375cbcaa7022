"""The didkit backend: same DIDs as the pure-Python one, credentials verify both ways, and the
process that uses it always exits cleanly (didkit runs in a child process)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chefsplan_agents.errors import DidBackendError, InvalidCredential
from chefsplan_agents.identity import (
    DidkitBackend,
    Identity,
    PythonDidBackend,
    didkit_available,
    issue_credential,
    verify_credential,
)
from chefsplan_agents.identity import _didkit as didkit_module

EXTRA = "chefsplan-agents[did]"
needs_didkit = pytest.mark.skipif(
    not didkit_available(), reason=f"didkit is not installed (pip install '{EXTRA}')"
)

EVM_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)


@pytest.fixture(scope="module")
def didkit() -> DidkitBackend:
    if not didkit_available():
        pytest.skip(f"didkit is not installed (pip install '{EXTRA}')")
    return DidkitBackend(timeout_s=60)


@pytest.fixture(scope="module")
def ident() -> Identity:
    return Identity.generate()


@needs_didkit
def test_same_did_for_the_same_key(didkit: DidkitBackend) -> None:
    keys = [bytes(32), bytes(range(32)), Identity.generate().export_secrets()[0]]
    for seed in keys:
        ident = Identity(seed, EVM_KEY)
        assert didkit.did_for(ident) == PythonDidBackend().did_for(ident) == ident.did
    assert didkit.did_for(Identity(bytes(32), EVM_KEY)) == (
        "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
    )


@needs_didkit
def test_python_issued_credential_verifies_in_didkit(
    didkit: DidkitBackend, ident: Identity
) -> None:
    token = issue_credential(ident, {"price": "100", "nested": {"a": [1, 2]}}, types=["T"])
    cred = verify_credential(token, expected_issuer=ident.did, expected_type="T", backend=didkit)
    assert cred.subject == {"price": "100", "nested": {"a": [1, 2]}}


@needs_didkit
def test_didkit_issued_credential_verifies_in_python(
    didkit: DidkitBackend, ident: Identity
) -> None:
    token = issue_credential(
        ident, {"price": "100"}, types=["T"], issued_at=T0, valid_for=timedelta(days=1),
        credential_id="urn:test:dk", backend=didkit,
    )  # fmt: skip
    cred = verify_credential(token, expected_issuer=ident.did, expected_type="T")
    assert cred.subject == {"price": "100"}
    assert cred.issued_at == T0
    assert cred.expires_at == T0 + timedelta(days=1)
    assert cred.id == "urn:test:dk"
    # and in didkit itself
    verify_credential(token, backend=didkit)


@needs_didkit
def test_didkit_rejects_tampered_credential(didkit: DidkitBackend, ident: Identity) -> None:
    token = issue_credential(ident, {"price": "100"})
    head, body, sig = token.split(".")
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    with pytest.raises(InvalidCredential):
        verify_credential(f"{head}.{body}.{flipped}", backend=didkit)


@needs_didkit
def test_didkit_backend_reports_expiry_like_python(didkit: DidkitBackend, ident: Identity) -> None:
    token = issue_credential(ident, {"a": 1}, issued_at=T0, valid_for=timedelta(seconds=1))
    with pytest.raises(InvalidCredential, match="expired"):
        verify_credential(token, backend=didkit)


@needs_didkit
def test_processes_using_didkit_exit_cleanly_every_time(tmp_path: Path) -> None:
    # didkit's async calls can crash the interpreter at exit when run in process; through the
    # backend they run in a child, so the user's process must exit 0 every time.
    script = tmp_path / "use_didkit.py"
    script.write_text(
        textwrap.dedent(
            """
            from chefsplan_agents.identity import (
                DidkitBackend, Identity, issue_credential, verify_credential,
            )
            ident = Identity.generate()
            dk = DidkitBackend()
            assert dk.did_for(ident) == ident.did
            token = issue_credential(ident, {"n": 7}, types=["T"], backend=dk)
            cred = verify_credential(token, expected_issuer=ident.did, backend=dk)
            print("OK", cred.subject["n"], verify_credential(token).issuer == ident.did)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(5)
    ]
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        assert stdout.strip() == "OK 7 True"


def test_missing_didkit_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(didkit_module, "didkit_available", lambda: False)
    with pytest.raises(DidBackendError, match=r"chefsplan-agents\[did\]") as info:
        DidkitBackend()
    assert "\n" not in str(info.value)


def test_worker_without_didkit_names_the_extra(tmp_path: Path) -> None:
    # An interpreter that cannot import didkit: the worker replies "missing".
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\nexec {sys.executable} -I -S "$@"\n')
    fake.chmod(0o755)
    backend = DidkitBackend(python=str(fake))
    with pytest.raises(DidBackendError, match=r"chefsplan-agents\[did\]"):
        backend.did_for(Identity.generate())


def test_worker_crash_becomes_backend_error(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'Segmentation fault' >&2\nexit 139\n")
    fake.chmod(0o755)
    with pytest.raises(DidBackendError, match="exited with status 139.*Segmentation fault"):
        DidkitBackend(python=str(fake)).did_for(Identity.generate())


def test_worker_timeout_becomes_backend_error(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(0o755)
    with pytest.raises(DidBackendError, match="did not answer key_to_did within 0.5 s"):
        DidkitBackend(python=str(fake), timeout_s=0.5).did_for(Identity.generate())


def test_worker_garbage_reply_becomes_backend_error(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho not-json\n")
    fake.chmod(0o755)
    with pytest.raises(DidBackendError, match="no JSON reply"):
        DidkitBackend(python=str(fake)).did_for(Identity.generate())


def test_missing_interpreter_becomes_backend_error(tmp_path: Path) -> None:
    with pytest.raises(DidBackendError, match="cannot start"):
        DidkitBackend(python=str(tmp_path / "nope")).did_for(Identity.generate())
