#!/usr/bin/env python3
"""A ``solc`` command for static analysers, backed by the pinned solcjs in ``node_modules``.

Slither (through crytic-compile) runs ``solc --version`` and
``solc --standard-json [--allow-paths DIR]`` with the standard-JSON input on stdin. This script
answers both with the npm ``solc`` package that also builds the artifacts, so the analysis sees
exactly the compiler and settings of ``tools/compile_contracts.py`` (``viaIR``, optimizer, EVM
version) and no compiler is downloaded::

    slither contracts/ --solc-standard-json --solc tools/solc_shim.py

Sources given by ``urls`` are read from disk, and imports resolve relative to the working
directory, as solc itself does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compile_contracts import SETTINGS, SOLC_DIR  # noqa: E402

# Compiles the standard-JSON input on stdin; imports are read from the working directory.
_DRIVER = """
const fs = require('fs');
const solc = require(process.argv[1]);
if (process.argv[2] === '--version') {
  process.stdout.write('solc, the solidity compiler commandline interface\\nVersion: '
    + solc.version() + '\\n');
  process.exit(0);
}
function findImports(path) {
  try { return {contents: fs.readFileSync(path, 'utf8')}; }
  catch (e) { return {error: 'File not found: ' + path}; }
}
let input = '';
process.stdin.on('data', (c) => { input += c; });
process.stdin.on('end', () => {
  process.stdout.write(solc.compile(input, {import: findImports}));
});
"""


def _node() -> str:
    node = shutil.which("node")
    if node is None or not (SOLC_DIR / "index.js").exists():
        sys.exit("solc_shim: needs node and node_modules/solc (run `npm install`)")
    return node


def _request(raw: str) -> dict[str, Any]:
    request: dict[str, Any] = json.loads(raw)
    for source in request.get("sources", {}).values():
        urls = source.pop("urls", None)
        if "content" not in source and urls:
            source["content"] = Path(urls[0]).read_text(encoding="utf-8")
    settings = request.setdefault("settings", {})
    # The artifacts' settings; the caller chooses what to output.
    for key, value in SETTINGS.items():
        if key != "outputSelection":
            settings[key] = value
    return request


def main(argv: list[str]) -> int:
    node = _node()
    if "--version" in argv:
        return subprocess.run([node, "-e", _DRIVER, str(SOLC_DIR), "--version"]).returncode
    if "--standard-json" not in argv:
        print("solc_shim: only --version and --standard-json are supported", file=sys.stderr)
        return 2
    request = _request(sys.stdin.read())
    proc = subprocess.run(
        [node, "-e", _DRIVER, str(SOLC_DIR)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=False,
    )
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
