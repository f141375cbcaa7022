"""Compiled contract artifacts shipped with the package.

The Solidity sources live in the repository's ``contracts/`` folder; ``tools/compile_contracts.py``
compiles them with the pinned ``solc`` and writes one JSON artifact per contract here
(``contractName``, ``abi``, ``bytecode``, ``deployedBytecode``, ``compiler``, ``sourceHash``).
``python tools/compile_contracts.py --check`` proves the committed artifacts match the sources.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = ["ARTIFACT_NAMES", "load_artifact"]

ARTIFACT_NAMES: tuple[str, ...] = ("AgentRegistry", "OutputLog", "TaskMarket")


def load_artifact(name: str) -> dict[str, Any]:
    """Read one compiled contract artifact.

    Args:
        name: A contract name from :data:`ARTIFACT_NAMES`, e.g. ``"TaskMarket"``.

    Returns:
        The artifact: ``abi`` (list), ``bytecode`` and ``deployedBytecode`` (``0x`` hex),
        ``compiler`` (version and settings), ``sourceHash`` and ``contractName``.

    Raises:
        ValueError: ``name`` is not a shipped contract.
    """
    if name not in ARTIFACT_NAMES:
        known = ", ".join(ARTIFACT_NAMES)
        raise ValueError(f"unknown contract artifact {name!r}; known: {known}")
    text = resources.files(__package__).joinpath("artifacts", f"{name}.json").read_text("utf-8")
    artifact: dict[str, Any] = json.loads(text)
    return artifact
