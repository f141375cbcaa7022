"""Compile contracts/*.sol with the pinned solcjs and write the committed artifacts.

Usage::

    python tools/compile_contracts.py          # (re)write chefsplan_agents/contracts/artifacts/
    python tools/compile_contracts.py --check  # exit 1 if the committed artifacts are stale

The compiler is the npm package ``solc`` pinned in ``package.json`` (``npm install`` puts it in
``node_modules/solc``). It is driven through its standard-JSON interface by a tiny inline Node
script, so no compiler is downloaded at run time. Artifacts are JSON with sorted keys, so the same
sources and settings always give the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "contracts"
ARTIFACTS = ROOT / "chefsplan_agents" / "contracts" / "artifacts"
SOLC_DIR = ROOT / "node_modules" / "solc"

SOLC_VERSION = "0.8.28"
CONTRACTS = ("AgentRegistry", "OutputLog", "TaskMarket")
SETTINGS: dict[str, Any] = {
    "evmVersion": "cancun",
    "viaIR": True,
    "optimizer": {"enabled": True, "runs": 1000},
    "metadata": {"bytecodeHash": "none"},
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
}

# Reads the standard-JSON input on stdin, writes the output on stdout.
_NODE_DRIVER = """
const solc = require(process.argv[1]);
let input = '';
process.stdin.on('data', (c) => { input += c; });
process.stdin.on('end', () => {
  const output = JSON.parse(solc.compile(input));
  process.stdout.write(JSON.stringify({version: solc.version(), output: output}));
});
"""


class CompileError(RuntimeError):
    """The compiler is missing or the sources do not compile."""


def source_files() -> list[Path]:
    """The Solidity sources, in a stable order."""
    return sorted(SOURCES.glob("*.sol"))


def source_hash(files: list[Path] | None = None) -> str:
    """sha256 over every source file's name and bytes (what each artifact records)."""
    digest = hashlib.sha256()
    for path in files if files is not None else source_files():
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _run_solc(sources: dict[str, str]) -> tuple[str, dict[str, Any]]:
    node = shutil.which("node")
    if node is None:
        raise CompileError("node is not on PATH; install Node.js, then run `npm install`")
    if not (SOLC_DIR / "index.js").exists():
        raise CompileError(f"{SOLC_DIR} is missing; run `npm install` in {ROOT}")
    request = {
        "language": "Solidity",
        "sources": {name: {"content": text} for name, text in sources.items()},
        "settings": SETTINGS,
    }
    proc = subprocess.run(
        [node, "-e", _NODE_DRIVER, str(SOLC_DIR)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise CompileError(f"solcjs failed: {proc.stderr.strip()[-2000:]}")
    reply = json.loads(proc.stdout)
    return str(reply["version"]), reply["output"]


def compile_artifacts() -> dict[str, dict[str, Any]]:
    """Compile the sources and return one artifact per contract in :data:`CONTRACTS`."""
    files = source_files()
    version, output = _run_solc({f.name: f.read_text(encoding="utf-8") for f in files})
    problems = output.get("errors", [])
    for warning in (e for e in problems if e.get("severity") != "error"):
        print(warning.get("formattedMessage", warning["message"]), file=sys.stderr)
    errors = [e for e in problems if e.get("severity") == "error"]
    if errors:
        raise CompileError("\n".join(e.get("formattedMessage", e["message"]) for e in errors))
    if not version.startswith(SOLC_VERSION + "+"):
        raise CompileError(f"solc {version} found, {SOLC_VERSION} pinned; run `npm install`")
    digest = source_hash(files)
    settings = {k: v for k, v in SETTINGS.items() if k != "outputSelection"}
    artifacts: dict[str, dict[str, Any]] = {}
    for name in CONTRACTS:
        unit = output["contracts"][f"{name}.sol"][name]
        artifacts[name] = {
            "contractName": name,
            "abi": unit["abi"],
            "bytecode": "0x" + unit["evm"]["bytecode"]["object"],
            "deployedBytecode": "0x" + unit["evm"]["deployedBytecode"]["object"],
            "compiler": {"name": "solc", "version": version, "settings": settings},
            "sourceHash": digest,
        }
    return artifacts


def render(artifact: dict[str, Any]) -> str:
    """The exact text written for an artifact."""
    return json.dumps(artifact, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if committed artifacts differ from a compile"
    )
    args = parser.parse_args(argv)
    try:
        artifacts = compile_artifacts()
    except CompileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stale = []
    for name, artifact in artifacts.items():
        path = ARTIFACTS / f"{name}.json"
        text = render(artifact)
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path.relative_to(ROOT))
        if not args.check:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if args.check:
        if stale:
            names = ", ".join(str(p) for p in stale)
            print(
                f"stale artifacts: {names}; run `python tools/compile_contracts.py`",
                file=sys.stderr,
            )
            return 1
        print(f"artifacts match the sources ({len(artifacts)} contracts)")
        return 0
    for name, artifact in artifacts.items():
        size = (len(artifact["deployedBytecode"]) - 2) // 2
        print(f"{name}: {size} bytes deployed")
    print(f"wrote {len(stale)} changed artifact(s) to {ARTIFACTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
