"""JSON from other parties, parsed with its nesting bounded first.

``json.loads`` recurses once per nesting level on the C stack. Python's recursion limit would
stop it, but ``py_ecc`` (imported by web3) raises that limit to 100000 at import, so ~100 kB of
``[`` overflows the C stack and kills the process with SIGSEGV — no exception, no cleanup. Every
decoder of bytes that another party controls (bundles, offers and VC-JWTs, HTTP bodies,
keystores, RPC replies) goes through :func:`loads`, which measures the nesting depth in linear
time without recursion and refuses a document nested deeper than ``max_depth`` before the
parser sees it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

__all__ = ["DEFAULT_MAX_JSON_DEPTH", "JsonTooDeep", "loads", "nesting_depth"]

DEFAULT_MAX_JSON_DEPTH = 64
"""Deeper than anything this package writes (a result bundle nests 3 levels), far below what
overflows the C stack (~20 000 levels in a thread with an 8 MiB stack)."""

# A JSON string literal: a quote, then runs of plain characters and escapes, then a quote. The
# unrolled form runs in the regex engine's C loop without backtracking. A string that is never
# closed runs to the end of the text: the parser stops there too, so nothing after it counts.
# Without that alternative each unclosed quote would be retried from the next quote and
# ``"\"\"\"…`` would take quadratic time (20 000 characters: ~4 s).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
# Brackets are summed a slice at a time so the running depth of a large document never needs
# more than this many 4-byte counters at once.
_SLICE = 1 << 20
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = np.zeros(256, dtype=np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1


class JsonTooDeep(ValueError):
    """A JSON document nests arrays and objects deeper than the caller allows."""


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in a JSON text, without parsing it.

    Brackets inside string literals do not count. For text that is not valid JSON the result
    is an upper bound of the depth a parser would reach before failing.
    """
    outside = _STRING.sub("", text).encode("ascii", "ignore").translate(None, _NOT_BRACKETS)
    brackets = np.frombuffer(outside, dtype=np.uint8)
    deepest = level = 0
    for start in range(0, len(brackets), _SLICE):
        steps = _STEP[brackets[start : start + _SLICE]]
        running = np.cumsum(steps, dtype=np.int64) + level
        deepest = max(deepest, int(running.max()))
        level = int(running[-1])
    return deepest


def loads(
    data: bytes | bytearray | memoryview | str, *, max_depth: int = DEFAULT_MAX_JSON_DEPTH
) -> Any:
    """Parse JSON from another party: UTF-8, nested at most ``max_depth`` levels.

    Args:
        data: The document (bytes must be UTF-8).
        max_depth: The deepest nesting of arrays and objects accepted.

    Returns:
        The parsed value.

    Raises:
        JsonTooDeep: The document nests deeper than ``max_depth``.
        ValueError: It is not UTF-8 (``UnicodeDecodeError``) or not JSON
            (``json.JSONDecodeError``); both are ``ValueError``.
    """
    text = data if isinstance(data, str) else bytes(data).decode("utf-8")
    depth = nesting_depth(text)
    if depth > max_depth:
        raise JsonTooDeep(f"JSON nests {depth} levels deep, over the limit of {max_depth}")
    return json.loads(text)
