"""Bundles from strangers: a deeply nested document is a schema error, never a crash."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chefsplan_agents.bundles import decode_result_bundle, decode_task_bundle
from chefsplan_agents.errors import BundleSchemaError

DEEP = b"[" * 200_000


@pytest.mark.parametrize("decode", [decode_task_bundle, decode_result_bundle])
def test_a_deeply_nested_bundle_is_a_schema_error(decode: object) -> None:
    with pytest.raises(BundleSchemaError, match="200000 levels deep") as info:
        decode(DEEP)  # type: ignore[operator]
    assert "\n" not in str(info.value)


def test_deep_bundles_do_not_kill_a_process_that_imported_the_chain() -> None:
    # web3 imports py_ecc, which raises the recursion limit to 100000: there a plain json.loads
    # of these bytes overflows the C stack (SIGSEGV) instead of raising.
    program = (
        "import sys\n"
        "import chefsplan_agents.chain\n"
        "from chefsplan_agents.bundles import decode_result_bundle, decode_task_bundle\n"
        "from chefsplan_agents.errors import BundleSchemaError\n"
        "assert sys.getrecursionlimit() >= 100000\n"
        "for decode in (decode_task_bundle, decode_result_bundle):\n"
        "    for deep in (b'[' * 200_000, b'{\"a\":' * 200_000):\n"
        "        try:\n"
        "            decode(deep)\n"
        "        except BundleSchemaError:\n"
        "            print('refused')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["refused"] * 4
