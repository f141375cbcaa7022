"""Child process that runs one didkit request: JSON on stdin, JSON on stdout.

didkit 0.3's async functions can leave the interpreter crashing at shutdown, so they never run in
a user's process. This script imports nothing from chefsplan_agents (it is started by path, so
it does not pay for importing the package), answers one request and leaves through
``os._exit(0)`` after flushing, which skips the interpreter finalization that crashes.

Request: ``{"op": "key_to_did" | "issue" | "verify", ...}``.
Reply: ``{"ok": true, "result": ...}`` or ``{"ok": false, "kind": "...", "error": "..."}`` where
kind is ``"missing"`` (didkit not importable), ``"request"`` (bad request) or ``"didkit"``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any


def _handle(request: dict[str, Any]) -> Any:
    try:
        import didkit
    except ImportError as err:
        raise _Failure("missing", f"didkit is not importable: {err}") from err

    op = request.get("op")
    try:
        if op == "version":
            return didkit.get_version()
        if op == "key_to_did":
            return didkit.key_to_did("key", json.dumps(request["jwk"]))
        if op == "issue":
            options = {
                "proofFormat": "jwt",
                "proofPurpose": "assertionMethod",
                "verificationMethod": request["verification_method"],
            }
            credential, key = json.dumps(request["credential"]), json.dumps(request["jwk"])

            # didkit's coroutines need a running loop when they are created, not just awaited.
            async def issue() -> str:
                return str(await didkit.issue_credential(credential, json.dumps(options), key))

            return asyncio.run(issue())
        if op == "verify":
            token = request["token"]

            async def verify() -> str:
                return str(
                    await didkit.verify_credential(token, json.dumps({"proofFormat": "jwt"}))
                )

            return json.loads(asyncio.run(verify()))
    except KeyError as err:
        raise _Failure("request", f"request lacks {err}") from err
    except Exception as err:  # didkit.DIDKitException and the Rust side's other errors
        raise _Failure("didkit", f"{type(err).__name__}: {err}") from err
    raise _Failure("request", f"unknown op {op!r}")


class _Failure(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def main() -> None:
    """Read one request, write one reply, and exit without interpreter finalization."""
    try:
        request = json.loads(sys.stdin.read())
        if not isinstance(request, dict):
            raise _Failure("request", "request must be a JSON object")
        reply: dict[str, Any] = {"ok": True, "result": _handle(request)}
    except _Failure as failure:
        reply = {"ok": False, "kind": failure.kind, "error": str(failure)}
    except json.JSONDecodeError as err:
        reply = {"ok": False, "kind": "request", "error": f"request is not JSON: {err}"}
    except Exception as err:  # anything else still gets a reply instead of a traceback
        reply = {"ok": False, "kind": "didkit", "error": f"{type(err).__name__}: {err}"}
    sys.stdout.write(json.dumps(reply))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
