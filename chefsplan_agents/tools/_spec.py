"""One description of each tool that every framework adapter reads: :class:`ToolSpec`.

A spec holds the tool's name, the description a model reads, the core function, and a pydantic
model of its arguments built from the function's signature (``Annotated[type, "description"]``
parameters after the network). Its safe path (:meth:`ToolSpec.call`, :meth:`ToolSpec.acall`)
validates raw arguments, runs the function and turns every error into a one-line
:class:`~chefsplan_agents.tools.ToolFailure`. An adapter (AutoGen, LangChain, and later
CrewAI or MCP) is a few lines that hand a spec to the framework; it holds no logic.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from chefsplan_agents.errors import ChefsplanError, ToolError
from chefsplan_agents.network import Network
from chefsplan_agents.tools import _core
from chefsplan_agents.tools._receipts import ToolFailure, ToolResult

__all__ = ["TOOL_NAMES", "ToolSpec", "tool_specs"]

log = logging.getLogger(__name__)

_MAX_MESSAGE_CHARS = 500


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_MESSAGE_CHARS else line[: _MAX_MESSAGE_CHARS - 1] + "…"


def _validation_message(err: ValidationError) -> str:
    parts = []
    for problem in err.errors()[:3]:
        where = ".".join(str(p) for p in problem["loc"]) or "arguments"
        parts.append(f"argument {where!r}: {problem['msg']}")
    more = err.error_count() - len(parts)
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts) + "; fix the arguments and call again"


def _summary(func: Callable[..., Any]) -> str:
    doc = inspect.getdoc(func) or func.__name__
    return " ".join(doc.split("\n\n", 1)[0].split())


@dataclass(frozen=True)
class ToolSpec:
    """A tool as every adapter sees it.

    Attributes:
        name: The tool's name (the core function's).
        description: What a model reads: the function's docstring summary.
        func: The core function; its first parameter is the network.
        parameters: The parameters after the network, annotations resolved.
        return_type: The receipt type the function returns on success.
        args_model: Pydantic model of the parameters (descriptions from ``Annotated``).
    """

    name: str
    description: str
    func: Callable[..., ToolResult]
    parameters: tuple[inspect.Parameter, ...]
    return_type: type[ToolResult]
    args_model: type[BaseModel]

    @classmethod
    def of(cls, func: Callable[..., ToolResult]) -> ToolSpec:
        """The spec of a core function ``func(network, ...) -> receipt``."""
        hints = typing.get_type_hints(func, include_extras=True)
        params = list(inspect.signature(func).parameters.values())[1:]
        resolved = tuple(p.replace(annotation=hints[p.name]) for p in params)
        fields: dict[str, Any] = {}
        for p in resolved:
            kind, description = p.annotation, p.name
            if get_origin(kind) is Annotated:
                kind, *extra = get_args(kind)
                description = next((e for e in extra if isinstance(e, str)), p.name)
            default = ... if p.default is inspect.Parameter.empty else p.default
            fields[p.name] = (kind, Field(default, description=description))
        model = create_model(
            "".join(w.title() for w in func.__name__.split("_")) + "Args",
            __config__=ConfigDict(extra="forbid"),
            **fields,
        )
        return cls(
            name=func.__name__,
            description=_summary(func),
            func=func,
            parameters=resolved,
            return_type=hints["return"],
            args_model=model,
        )

    # ------------------------------------------------------------------ the safe path

    def failure(self, err: BaseException) -> ToolFailure:
        """``err`` as the one-line failure a model reads."""
        if isinstance(err, ValidationError):
            return ToolFailure(
                tool=self.name, error="InvalidArguments", message=_validation_message(err)
            )
        if isinstance(err, ChefsplanError):
            message = _one_line(str(err))
            return ToolFailure(tool=self.name, error=type(err).__name__, message=message)
        return ToolFailure(
            tool=self.name,
            error="InternalError",
            message=_one_line(f"{type(err).__name__}: {err}") + " (a bug; see the app's log)",
        )

    def call(self, network: Network, arguments: Mapping[str, Any]) -> ToolResult:
        """Validate raw arguments and run the tool; every error comes back as a
        :class:`ToolFailure`, never raised."""
        try:
            parsed = self.args_model.model_validate(dict(arguments))
            kwargs = {p.name: getattr(parsed, p.name) for p in self.parameters}
            return self.func(network, **kwargs)
        except (ValidationError, ChefsplanError) as err:
            log.info("tool %s refused: %s", self.name, err)
            return self.failure(err)
        except Exception as err:  # a framework must never see an exception from a tool
            log.exception("tool %s failed unexpectedly", self.name)
            return self.failure(err)

    async def acall(self, network: Network, arguments: Mapping[str, Any]) -> ToolResult:
        """:meth:`call` in a worker thread."""
        return await asyncio.to_thread(self.call, network, arguments)

    # ------------------------------------------------------------------ for adapters

    def _signature(self) -> inspect.Signature:
        keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in self.parameters]
        return inspect.Signature(keyword, return_annotation=ToolResult)

    def _dress(self, function: Callable[..., Any]) -> None:
        function.__name__ = function.__qualname__ = self.name
        function.__doc__ = self.description
        function.__signature__ = self._signature()  # type: ignore[attr-defined]
        function.__annotations__ = {p.name: p.annotation for p in self.parameters} | {
            "return": ToolResult
        }

    def bind(self, network: Network) -> Callable[..., ToolResult]:
        """A function of the tool's parameters (keywords) bound to ``network``, on the safe
        path: what a framework that introspects signatures wraps."""

        def bound(**arguments: Any) -> ToolResult:
            return self.call(network, arguments)

        self._dress(bound)
        return bound

    def abind(self, network: Network) -> Callable[..., Awaitable[ToolResult]]:
        """The async twin of :meth:`bind`."""

        async def bound(**arguments: Any) -> ToolResult:
            return await self.acall(network, arguments)

        self._dress(bound)
        return bound


_CORE: tuple[Callable[..., ToolResult], ...] = (
    _core.find_providers,
    _core.delegate_task,
    _core.get_result,
    _core.second_opinion,
    _core.verify_output,
    _core.log_output,
    _core.check_policy,
    _core.split_and_delegate,
)

_SPECS: dict[str, ToolSpec] = {spec.name: spec for spec in map(ToolSpec.of, _CORE)}

TOOL_NAMES: tuple[str, ...] = tuple(_SPECS)
"""Every tool's name, in the order the adapters list them."""


def tool_specs(names: list[str] | tuple[str, ...] | None = None) -> list[ToolSpec]:
    """The specs of the named tools (default: all), in the order given.

    Raises:
        ToolError: An unknown name.
    """
    if names is None:
        return list(_SPECS.values())
    unknown = [n for n in names if n not in _SPECS]
    if unknown:
        raise ToolError(f"unknown tool {unknown[0]!r}; the tools are {', '.join(TOOL_NAMES)}")
    return [_SPECS[n] for n in names]
