"""Write docs/errors.md from the exception tree drawn in chefsplan_agents/errors.py.

``python tools/gen_error_docs.py`` rewrites the page; ``--check`` exits 1 if it is stale (a test
runs the check, so the page cannot drift from the code).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "errors.md"


def render() -> str:
    sys.path.insert(0, str(ROOT))
    import chefsplan_agents.errors as errors

    doc = errors.__doc__ or ""
    intro, _, tree = doc.partition("::")
    intro = intro.strip().replace(":class:", "").replace("``", "`")
    lines = [line[4:] for line in tree.strip("\n").splitlines()]
    return (
        "# Errors\n\n"
        f"{intro}\n\n"
        "```\n" + "\n".join(lines) + "\n```\n\n"
        "Catch a whole layer with its base (`except StorageError`) or one case "
        "(`except CidMismatch`). Solidity custom errors raised by the contracts are decoded into "
        "`TxReverted` subclasses named after the error, with the decoded arguments in `args_` "
        "(see [Chain clients](chain.md)).\n\n"
        "_This page is generated from `chefsplan_agents/errors.py` by "
        "`tools/gen_error_docs.py`._\n"
    )


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        if PAGE.read_text(encoding="utf-8") != text:
            print("docs/errors.md is stale: run python tools/gen_error_docs.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
