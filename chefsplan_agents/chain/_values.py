"""Conversions between Python values and Solidity's fixed-size types."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from eth_utils.address import is_address, to_checksum_address

from chefsplan_agents.errors import ChainError

__all__ = [
    "abi_type",
    "checksum",
    "normalise_output",
    "normalise_param",
    "normalise_value",
    "to_address",
    "to_bytes32",
]


def to_bytes32(value: bytes | str, what: str = "value") -> bytes:
    """A ``bytes32`` from 32 raw bytes or ``0x`` + 64 hex digits.

    Raises:
        ChainError: The value is not exactly 32 bytes.
    """
    raw: bytes | None = None
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
    elif isinstance(value, str):
        text = value[2:] if value[:2].lower() == "0x" else value
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = None
    if raw is None or len(raw) != 32:
        raise ChainError(f"{what} must be 32 bytes (0x + 64 hex digits), got {value!r}")
    return raw


def to_address(value: str, what: str = "address") -> str:
    """A checksummed address.

    Raises:
        ChainError: The value is not an EVM address.
    """
    if not isinstance(value, str) or not is_address(value):
        raise ChainError(f"{what} must be an EVM address (0x + 40 hex digits), got {value!r}")
    return checksum(value)


@lru_cache(maxsize=4096)
def checksum(address: str) -> str:
    """The EIP-55 form of a valid address (cached: a keccak per new spelling)."""
    return str(to_checksum_address(address))


def abi_type(param: Mapping[str, Any]) -> str:
    """The canonical ABI type string of one ABI parameter (tuples expanded)."""
    typ = str(param["type"])
    if typ.startswith("tuple"):
        inner = ",".join(abi_type(c) for c in param.get("components", []))
        return f"({inner}){typ[len('tuple') :]}"
    return typ


def normalise_value(typ: str, value: Any) -> Any:
    if typ == "address" and isinstance(value, str):
        return checksum(value)
    if typ.endswith("]") and isinstance(value, tuple | list):
        inner = typ[: typ.rindex("[")]
        return [normalise_value(inner, v) for v in value]
    return value


def normalise_output(outputs: Sequence[Mapping[str, Any]], values: Sequence[Any]) -> list[Any]:
    """Checksum addresses, turn arrays into lists and structs into dicts by field name."""
    return [normalise_param(p, v) for p, v in zip(outputs, values, strict=True)]


def normalise_param(param: Mapping[str, Any], value: Any) -> Any:
    typ = str(param["type"])
    if typ.startswith("tuple"):
        components = param.get("components", [])
        if typ.endswith("]"):
            element = {**param, "type": typ[: typ.rindex("[")]}
            return [normalise_param(element, v) for v in value]
        return {
            str(c["name"]): normalise_param(c, v) for c, v in zip(components, value, strict=True)
        }
    return normalise_value(abi_type(param), value)
