"""Decode revert data into named Python errors.

A Solidity revert carries ABI-encoded data: ``Error(string)`` for ``require``/``revert("…")``,
``Panic(uint256)`` for assertion failures and arithmetic faults, or a custom error
(``error StakeTooLow(uint256 stake, uint256 minStake)``) identified by the first four bytes of
the keccak hash of its signature. :class:`RevertDecoder` learns custom errors from contract ABIs
and turns revert data into an instance of a :class:`~chefsplan_agents.errors.TxReverted`
subclass named after the Solidity error. The subclasses are created once per name and cached, so
``except revert_error_class("StakeTooLow")`` (or ``chain.errors.StakeTooLow``) catches them no
matter which contract raised them.
"""

from __future__ import annotations

import ast
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils.crypto import keccak

from chefsplan_agents.chain._values import abi_type, normalise_param
from chefsplan_agents.errors import TxReverted

__all__ = [
    "ERROR_STRING_SELECTOR",
    "PANIC_SELECTOR",
    "RevertDecoder",
    "abi_type",
    "error_signature",
    "revert_error_class",
]

ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")
PANIC_SELECTOR = bytes.fromhex("4e487b71")

# Solidity's documented panic codes.
_PANIC_REASONS = {
    0x00: "generic compiler panic",
    0x01: "assertion failed",
    0x11: "arithmetic overflow or underflow",
    0x12: "division or modulo by zero",
    0x21: "invalid enum value",
    0x22: "corrupt storage byte array",
    0x31: "pop on an empty array",
    0x32: "array index out of bounds",
    0x41: "out of memory",
    0x51: "call to an uninitialised function pointer",
}

_CLASSES: dict[str, type[TxReverted]] = {}
_CLASSES_LOCK = threading.Lock()


def revert_error_class(name: str) -> type[TxReverted]:
    """The :class:`TxReverted` subclass for the Solidity error ``name`` (created once, cached).

    Args:
        name: The Solidity error's name, e.g. ``"StakeTooLow"``; ``"Error"`` is
            ``Error(string)`` and ``"Panic"`` is ``Panic(uint256)``.

    Returns:
        The same class object for the same name on every call.

    Raises:
        ValueError: ``name`` is not a valid identifier.
    """
    if not name.isidentifier():
        raise ValueError(f"{name!r} is not a Solidity error name")
    with _CLASSES_LOCK:
        cls = _CLASSES.get(name)
        if cls is None:
            cls = type(
                name,
                (TxReverted,),
                {
                    "error_name": name,
                    "__module__": "chefsplan_agents.chain.errors",
                    "__qualname__": name,
                    "__doc__": f"The contract reverted with the Solidity error ``{name}``.",
                },
            )
            _CLASSES[name] = cls
        return cls


def error_signature(entry: Mapping[str, Any]) -> str:
    """``Name(type,…)`` of an ABI error or event entry."""
    return f"{entry['name']}({','.join(abi_type(p) for p in entry.get('inputs', []))})"


def _format_value(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, str):
        # Addresses read better bare; any other string is quoted so its edges show.
        is_address = len(value) == 42 and value.startswith("0x")
        return value if is_address else repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    return str(value)


def parse_revert_text(text: str) -> bytes | None:
    """Recover revert data from the text py-evm (through eth-tester) puts in its exceptions.

    eth-tester renders revert data as ``execution reverted: b'…'`` (a Python bytes literal), and
    ``Error(string)`` reverts as ``execution reverted: <reason>``. Returns ``None`` when the text
    carries no revert at all.
    """
    marker = "execution reverted"
    at = text.find(marker)
    if at < 0:
        return None
    rest = text[at + len(marker) :].lstrip(":").strip()
    if not rest:
        return b""
    if rest[:2] in ("b'", 'b"'):
        try:
            data = ast.literal_eval(rest)
        except (ValueError, SyntaxError):
            data = None
        if isinstance(data, bytes):
            return data
    # A decoded Error(string) reason: encode it back so every backend yields the same data.
    from eth_abi.abi import encode as abi_encode

    return ERROR_STRING_SELECTOR + abi_encode(["string"], [rest])


class RevertDecoder:
    """Selector table of Solidity custom errors, filled from contract ABIs; thread-safe."""

    def __init__(self) -> None:
        self._errors: dict[bytes, dict[str, Any]] = {}
        self._by_contract: dict[str, dict[bytes, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def register_abi(self, abi: Iterable[Mapping[str, Any]], *, contract: str = "") -> None:
        """Learn every ``error`` entry of a contract ABI.

        Args:
            abi: The contract's ABI.
            contract: The contract's name. Two contracts may declare errors with the same
                signature but different argument names; a revert whose context starts with
                ``"<contract>."`` is decoded with that contract's own names first.
        """
        with self._lock:
            own = self._by_contract.setdefault(contract, {}) if contract else {}
            for entry in abi:
                if entry.get("type") == "error":
                    selector = keccak(text=error_signature(entry))[:4]
                    self._errors[selector] = dict(entry)
                    own[selector] = dict(entry)

    def decode(self, data: bytes | None, *, context: str) -> TxReverted:
        """Turn revert data into a named error.

        Args:
            data: The raw revert data (``None`` or empty when the contract gave none).
            context: What reverted, e.g. ``"TaskMarket.claim"``; starts the message.

        Returns:
            An instance of the subclass named after the Solidity error, or a plain
            :class:`TxReverted` when the data is empty or its selector is unknown.
        """
        if not data:
            return TxReverted(f"{context} reverted without a reason")
        selector, body = bytes(data[:4]), bytes(data[4:])
        if selector == ERROR_STRING_SELECTOR:
            return self._build(
                "Error", [{"name": "message", "type": "string"}], body, data, context
            )
        if selector == PANIC_SELECTOR:
            exc = self._build("Panic", [{"name": "code", "type": "uint256"}], body, data, context)
            code = exc.args_.get("code")
            if isinstance(code, int):
                reason = _PANIC_REASONS.get(code, "unknown panic code")
                exc.args = (f"{context} reverted with Panic(0x{code:02x}): {reason}",)
            return exc
        with self._lock:
            own = self._by_contract.get(context.split(".", 1)[0], {})
            entry = own.get(selector) or self._errors.get(selector)
        if entry is None:
            return TxReverted(
                f"{context} reverted with an unknown error 0x{selector.hex()} "
                "(its contract ABI was not loaded)",
                args_={"data": "0x" + bytes(data).hex()},
            )
        return self._build(entry["name"], entry.get("inputs", []), body, data, context)

    @staticmethod
    def _build(
        name: str,
        inputs: Sequence[Mapping[str, Any]],
        body: bytes,
        data: bytes,
        context: str,
    ) -> TxReverted:
        cls = revert_error_class(name)
        types = [abi_type(p) for p in inputs]
        try:
            values = abi_decode(types, body) if types else ()
        except (DecodingError, ValueError, OverflowError):
            return cls(
                f"{context} reverted with {name} (undecodable arguments 0x{body.hex()})",
                args_={"data": "0x" + bytes(data).hex()},
            )
        names = [str(p.get("name") or f"arg{i}") for i, p in enumerate(inputs)]
        args = {n: normalise_param(p, v) for n, p, v in zip(names, inputs, values, strict=True)}
        if name == "Error":
            shown = str(args.get("message", ""))
            message = f"{context} reverted: {shown}"
        else:
            shown = ", ".join(f"{n}={_format_value(v)}" for n, v in args.items())
            message = f"{context} reverted with {name}({shown})"
        return cls(message, args_=args)
