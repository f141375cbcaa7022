"""Bounded JSON parsing: the nesting check that keeps deep documents from killing the process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chefsplan_agents._json import JsonTooDeep, loads, nesting_depth

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@given(json_values)
def test_depth_matches_the_parsed_structure(value: object) -> None:
    text = json.dumps(value)
    assert nesting_depth(text) == _depth(value)
    assert loads(text.encode(), max_depth=max(_depth(value), 1)) == value


def test_brackets_inside_strings_and_escapes_do_not_count() -> None:
    assert nesting_depth(r'["[[[[", "\"{{{", "\\"]') == 1
    assert loads(r'{"a": "]]]]\\"}') == {"a": "]]]]\\"}


def test_too_deep_is_refused_before_parsing() -> None:
    with pytest.raises(JsonTooDeep, match="65 levels deep, over the limit of 64"):
        loads("[" * 65 + "]" * 65)
    assert loads("[" * 64 + "]" * 64, max_depth=64) is not None


def test_not_utf8_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        loads(b"\xff\xfe[]")


def test_a_megabyte_of_brackets_does_not_kill_the_process() -> None:
    # web3 (through py_ecc) raises the recursion limit to 100000, so a plain json.loads of this
    # document overflows the C stack (SIGSEGV). The bounded loader refuses it instead.
    program = (
        "import chefsplan_agents.chain, sys\n"
        "from chefsplan_agents._json import JsonTooDeep, loads\n"
        "assert sys.getrecursionlimit() >= 100000, sys.getrecursionlimit()\n"
        "try:\n"
        "    loads(b'[' * 1_000_000)\n"
        "except JsonTooDeep:\n"
        "    print('refused')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "refused"


def test_an_unclosed_string_runs_to_the_end() -> None:
    # The parser stops at a string that never closes, so brackets after its quote never nest.
    assert nesting_depth('["\\"[[[[') == 1
    assert nesting_depth('[["abc\\') == 2
    with pytest.raises(ValueError):
        loads('["\\"[[[[')


def test_many_unclosed_quotes_take_one_pass() -> None:
    # Each quote of '"\\"\\"…' opens a string that never closes; scanning from every one of them
    # took quadratic time (minutes for this document). Here it is one linear pass.
    text = '"' + '\\"' * 1_000_000 + "[" * 100
    assert nesting_depth(text) == 0
    with pytest.raises(ValueError):
        loads(text)


def test_depth_carries_across_slices_of_a_large_document() -> None:
    body = "[]," * 700_000 + "0"
    assert nesting_depth("[" * 10 + body + "]" * 10) == 11
    assert nesting_depth(body + ",[[[" + "]]]") == 3
    with pytest.raises(JsonTooDeep):
        loads("[" * 64 + body + "]" * 64)
