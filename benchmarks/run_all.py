"""Run every benchmark and rewrite its section of docs/benchmarks.md (``make bench``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    failed = []
    for script in sorted(HERE.glob("[!_]*.py")):
        if script.name == "run_all.py":
            continue
        print(f"== {script.name}", flush=True)
        proc = subprocess.run([sys.executable, str(script), "--write-docs"], check=False)
        if proc.returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
