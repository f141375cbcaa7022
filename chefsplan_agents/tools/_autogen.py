"""AutoGen adapter: the tools as ``autogen_core.tools.FunctionTool``\\ s. No logic here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autogen_core import CancellationToken
from autogen_core.tools import FunctionTool
from pydantic import ValidationError

from chefsplan_agents.network import Network
from chefsplan_agents.tools._receipts import ToolResult
from chefsplan_agents.tools._spec import ToolSpec, tool_specs

__all__ = ["NetworkFunctionTool", "autogen_tools"]


class NetworkFunctionTool(FunctionTool):
    """A tool bound to a network: runs on the spec's safe path; a model reads ``.text()``.

    Args:
        spec: The tool.
        network: The network it acts on.
    """

    def __init__(self, spec: ToolSpec, network: Network) -> None:
        super().__init__(spec.abind(network), description=spec.description, name=spec.name)
        self.spec = spec

    async def run_json(
        self,
        args: Mapping[str, Any],
        cancellation_token: CancellationToken,
        call_id: str | None = None,
    ) -> Any:
        try:
            return await super().run_json(args, cancellation_token, call_id)
        except ValidationError as err:  # AutoGen checks argument types before the safe path
            return self.spec.failure(err)

    def return_value_as_string(self, value: Any) -> str:
        if isinstance(value, ToolResult):
            return value.text()
        return super().return_value_as_string(value)


def autogen_tools(
    network: Network, names: list[str] | tuple[str, ...] | None = None
) -> list[FunctionTool]:
    """The tools for an AutoGen agent (``AssistantAgent(tools=autogen_tools(network))``).

    Args:
        network: The network the tools act on.
        names: Only these tools (default: all, see ``TOOL_NAMES``).

    Returns:
        One ``FunctionTool`` per tool; results reach the model as ``receipt.text()``, errors
        as one-line messages.
    """
    return [NetworkFunctionTool(spec, network) for spec in tool_specs(names)]
