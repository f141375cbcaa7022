"""pydantic's own JSON parser (jiter) bounds nesting: model_validate_json needs no depth check."""

from __future__ import annotations

import subprocess
import sys


def test_pydantic_refuses_deep_json_even_with_a_raised_recursion_limit() -> None:
    # Checked where py_ecc has raised the recursion limit to 100000, as in any process that
    # imported the chain layer: jiter counts depth itself (about 200 levels), so the parse fails
    # with a ValidationError instead of overflowing the stack. If a pydantic upgrade dropped
    # that limit this test would die with SIGSEGV, and model_validate_json would need _json.
    program = (
        "import sys\n"
        "from typing import Any\n"
        "import pydantic\n"
        "import chefsplan_agents.chain\n"
        "from chefsplan_agents.bundles import TaskBundle\n"
        "assert sys.getrecursionlimit() >= 100000\n"
        "for validate in (pydantic.TypeAdapter(Any).validate_json,\n"
        "                 TaskBundle.model_validate_json):\n"
        "    for deep in (b'[' * 200_000, b'{\"a\":' * 200_000):\n"
        "        try:\n"
        "            validate(deep)\n"
        "        except pydantic.ValidationError as err:\n"
        "            print(err.errors()[0]['type'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["json_invalid"] * 4
