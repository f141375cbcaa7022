"""Write the tiny llama-architecture test model (a thin CLI over ``build_tiny_model``).

Usage::

    python tools/make_tiny_model.py OUT.gguf [--variant scripted|random] [--seed N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from chefsplan_agents.llm import SCRIPTED_OUTPUT, build_tiny_model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="the .gguf file to write")
    p.add_argument("--variant", choices=["scripted", "random"], default="scripted")
    p.add_argument("--seed", type=int, default=0, help="weights seed of the random variant")
    args = p.parse_args(argv)
    start = time.perf_counter()
    path = build_tiny_model(args.out, seed=args.seed, variant=args.variant)
    ms = (time.perf_counter() - start) * 1000
    print(f"wrote {path} ({path.stat().st_size:,} bytes, {args.variant}) in {ms:.0f} ms")
    if args.variant == "scripted":
        print(f"greedy output after any other prompt: {SCRIPTED_OUTPUT!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
