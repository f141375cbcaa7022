"""Compiled contract artifacts: the ABI and bytecode Python deploys and talks to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chefsplan_agents.contracts import load_artifact as _load_shipped
from chefsplan_agents.errors import ChainError

__all__ = ["Artifact", "load_artifact"]


@dataclass(frozen=True)
class Artifact:
    """One compiled contract.

    Attributes:
        name: The contract's name, e.g. ``"TaskMarket"``.
        abi: The contract's ABI entries.
        bytecode: Creation bytecode (``0x…``); empty for an ABI-only artifact.
    """

    name: str
    abi: tuple[dict[str, Any], ...] = field(repr=False)
    bytecode: str = field(default="", repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Artifact:
        """Build from a build artifact ``{contractName, abi, bytecode, …}``.

        Raises:
            ChainError: A required key is missing.
        """
        try:
            name = str(data["contractName"])
            abi = tuple(dict(entry) for entry in data["abi"])
        except (KeyError, TypeError) as err:
            raise ChainError(
                f"contract artifact is malformed (missing {err}); rebuild it with "
                "tools/compile_contracts.py"
            ) from err
        bytecode = str(data.get("bytecode") or "")
        if bytecode and not bytecode.startswith("0x"):
            bytecode = "0x" + bytecode
        return cls(name=name, abi=abi, bytecode=bytecode)

    def entries(self, kind: str) -> list[dict[str, Any]]:
        """The ABI entries of one kind (``"function"``, ``"event"``, ``"error"``)."""
        return [e for e in self.abi if e.get("type") == kind]


def load_artifact(name: str) -> Artifact:
    """Load a contract artifact shipped with the package (``chefsplan_agents/contracts``).

    Args:
        name: The contract name, e.g. ``"AgentRegistry"``.

    Raises:
        ChainError: No artifact of that name ships with the package.
    """
    try:
        data = _load_shipped(name)
    except (ValueError, FileNotFoundError) as err:
        raise ChainError(
            f"no compiled artifact for contract {name!r} ({err}); run tools/compile_contracts.py"
        ) from err
    return Artifact.from_json(data)
