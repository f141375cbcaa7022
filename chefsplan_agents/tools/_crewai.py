"""CrewAI adapter: the tools as ``crewai.tools.BaseTool`` instances. No logic here.

crewai is an optional extra (``pip install 'chefsplan-agents[crewai]'``): it is imported when
:func:`crewai_tools` is first called, never when this package is.
"""

from __future__ import annotations

import functools
from typing import Any

from chefsplan_agents.network import Network
from chefsplan_agents.tools._receipts import ToolResult
from chefsplan_agents.tools._spec import ToolSpec, tool_specs

__all__ = ["crewai_tools"]

_MISSING = (
    "crewai_tools needs crewai: pip install 'chefsplan-agents[crewai]' (in the same pip call "
    "as the rest of the project, so that crewai's pins resolve together with autogen)"
)


@functools.cache
def _tool_class() -> type[Any]:
    try:
        from crewai.tools import BaseTool
    except ImportError as err:
        raise ImportError(_MISSING) from err
    from pydantic import ConfigDict, PrivateAttr

    class NetworkCrewTool(BaseTool):  # type: ignore[misc, unused-ignore]
        """One tool bound to a network, on the spec's safe path: the agent reads
        ``receipt.text()`` (or the one-line failure); :attr:`last_result` is the receipt."""

        model_config = ConfigDict(arbitrary_types_allowed=True)

        _spec: ToolSpec = PrivateAttr()
        _network: Network = PrivateAttr()
        _last: ToolResult | None = PrivateAttr(default=None)

        @property
        def spec(self) -> ToolSpec:
            return self._spec

        @property
        def last_result(self) -> ToolResult | None:
            """The receipt (or failure) of the latest call."""
            return self._last

        def _validate_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
            # crewai's own check raises into the agent loop; the safe path answers a bad
            # argument with a one-line message the model can act on instead.
            return kwargs

        def _run(self, **arguments: Any) -> str:
            self._last = self._spec.call(self._network, arguments)
            return self._last.text()

        async def _arun(self, **arguments: Any) -> str:
            self._last = await self._spec.acall(self._network, arguments)
            return self._last.text()

    return NetworkCrewTool


def _crew_tool(spec: ToolSpec, network: Network) -> Any:
    tool = _tool_class()(name=spec.name, description=spec.description, args_schema=spec.args_model)
    tool._spec = spec
    tool._network = network
    return tool


def crewai_tools(network: Network, names: list[str] | tuple[str, ...] | None = None) -> list[Any]:
    """The tools for a CrewAI agent (``Agent(tools=crewai_tools(network), ...)``).

    Args:
        network: The network the tools act on.
        names: Only these tools (default: all, see ``TOOL_NAMES``).

    Returns:
        One ``crewai.tools.BaseTool`` per tool. The agent reads ``receipt.text()``; bad
        arguments and errors come back as one-line messages, never raised; each tool's
        ``last_result`` holds the latest receipt (or ``ToolFailure``).

    Raises:
        ImportError: crewai is not installed (the ``[crewai]`` extra).
        ToolError: An unknown tool name.
    """
    specs = tool_specs(names)
    return [_crew_tool(spec, network) for spec in specs]
