"""The didkit backend: did:key and VC-JWT through didkit 0.3, in a child process.

didkit's async calls can crash the interpreter at exit, so each call runs in
``_didkit_worker.py`` (a fresh Python, JSON over stdin/stdout, with a timeout); this process never
imports didkit. Worker failures become :class:`~chefsplan_agents.errors.DidBackendError`, a
rejected credential :class:`~chefsplan_agents.errors.InvalidCredential`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from chefsplan_agents import _json
from chefsplan_agents.errors import DidBackendError, InvalidCredential
from chefsplan_agents.identity._didkey import key_id
from chefsplan_agents.identity._identity import Identity
from chefsplan_agents.identity._vc import jwt_claims

__all__ = ["DidkitBackend", "didkit_available"]

logger = logging.getLogger(__name__)

_WORKER = Path(__file__).with_name("_didkit_worker.py")
_MISSING = "didkit is not installed; install the extra: pip install 'chefsplan-agents[did]'"


def didkit_available() -> bool:
    """Whether didkit can be imported (checked without importing it)."""
    return importlib.util.find_spec("didkit") is not None


class DidkitBackend:
    """did:key and VC-JWT through didkit, each call in an isolated child process.

    Args:
        timeout_s: How long one call may take before it is killed.
        python: The interpreter that runs the worker (default: this one).

    Raises:
        DidBackendError: At construction if didkit is not installed (names the ``did`` extra).
    """

    name = "didkit"

    def __init__(self, *, timeout_s: float = 30.0, python: str | None = None) -> None:
        if python is None and not didkit_available():
            raise DidBackendError(_MISSING)
        self._timeout_s = timeout_s
        self._python = python or sys.executable

    def _call(self, request: dict[str, Any]) -> Any:
        op = request.get("op")
        try:
            # -P: do not put the worker's folder on sys.path; the worker imports only stdlib+didkit.
            proc = subprocess.run(
                [self._python, "-P", str(_WORKER)],
                input=json.dumps(request),
                capture_output=True,
                text=True,
                timeout=self._timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise DidBackendError(
                f"didkit worker did not answer {op} within {self._timeout_s:g} s"
            ) from err
        except OSError as err:
            raise DidBackendError(f"cannot start the didkit worker: {err}") from err
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise DidBackendError(
                f"didkit worker exited with status {proc.returncode} during {op}: {tail}"
            )
        try:
            reply = _json.loads(proc.stdout)
        except ValueError as err:  # not JSON, or nested deeper than any reply the worker writes
            raise DidBackendError(f"didkit worker gave no JSON reply to {op}: {err}") from err
        if not isinstance(reply, dict):
            raise DidBackendError(f"didkit worker gave a malformed reply to {op}")
        if not reply.get("ok"):
            if reply.get("kind") == "missing":
                raise DidBackendError(_MISSING)
            message = str(reply.get("error", "unknown error")).splitlines()[0]
            if op == "verify":
                raise InvalidCredential(f"didkit rejected the credential: {message}")
            raise DidBackendError(f"didkit failed during {op}: {message}")
        return reply.get("result")

    def version(self) -> str:
        """didkit's version string."""
        return str(self._call({"op": "version"}))

    def did_for(self, identity: Identity) -> str:
        return str(self._call({"op": "key_to_did", "jwk": identity.private_jwk()}))

    def sign_credential(self, identity: Identity, credential: dict[str, Any]) -> str:
        # Fails fast, before spawning, on credentials the JWT encoding cannot carry.
        jwt_claims(credential)
        token = self._call(
            {
                "op": "issue",
                "credential": credential,
                "jwk": identity.private_jwk(),
                "verification_method": key_id(identity.did),
            }
        )
        if not isinstance(token, str):
            raise DidBackendError("didkit returned a non-string credential")
        return token

    def check_signature(self, token: str) -> None:
        report = self._call({"op": "verify", "token": token})
        errors = report.get("errors") if isinstance(report, dict) else ["malformed report"]
        if errors:
            raise InvalidCredential(f"didkit rejected the credential: {errors[0]}")
        logger.debug("didkit checks passed: %s", report.get("checks"))

    def __repr__(self) -> str:
        return f"DidkitBackend(timeout_s={self._timeout_s:g})"
