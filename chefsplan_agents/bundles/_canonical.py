"""Canonical JSON (RFC 8785, JCS): one byte string per value, so one CID per bundle.

Keys are sorted by their UTF-16 code units, numbers use ECMAScript's shortest round-trip form
(``1.0`` → ``1``, ``1e21`` → ``1e+21``), strings use minimal escaping and no whitespace is
emitted. NaN and ±Infinity have no JSON form and are rejected, as are integers outside the
IEEE-754 safe range (±2**53), which JSON readers in other languages would round; amounts like
wei are therefore carried as decimal strings.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

from chefsplan_agents.errors import BundleSchemaError

__all__ = ["canonical_json", "sha256_hex"]


def canonical_json(value: Any) -> bytes:
    """Encode a JSON value (dict, list, str, int, float, bool, None) per RFC 8785.

    Args:
        value: The value; dict keys must be strings.

    Returns:
        The canonical UTF-8 bytes.

    Raises:
        BundleSchemaError: The value holds NaN/Infinity, an integer beyond ±2**53, a non-string
            key, or a type JSON cannot carry.
    """
    try:
        return bytes(rfc8785.dumps(value))
    except rfc8785.FloatDomainError as err:
        raise BundleSchemaError(
            f"cannot encode canonical JSON: {err}; NaN and Infinity have no JSON form"
        ) from err
    except rfc8785.IntegerDomainError as err:
        raise BundleSchemaError(
            f"cannot encode canonical JSON: {err}; carry large integers as decimal strings"
        ) from err
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as err:
        raise BundleSchemaError(f"cannot encode canonical JSON: {err}") from err


def sha256_hex(data: bytes) -> str:
    """``0x``-prefixed lowercase hex SHA-256 (a ``bytes32`` for the chain)."""
    return "0x" + hashlib.sha256(data).hexdigest()
