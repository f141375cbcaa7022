"""Tools an agent app uses the network with: typed functions, receipts and framework adapters.

Every tool is a plain function taking a :class:`~chefsplan_agents.network.Network` first and
returning a pydantic receipt (``.text()`` for a model, ``model_dump()`` for code); each has an
``a``-prefixed async twin. :func:`autogen_tools`, :func:`langchain_tools`, :func:`crewai_tools`
and :func:`mcp_server` hand the same functions to AutoGen, LangChain, CrewAI and MCP clients
through :class:`ToolSpec`'s safe path, on which every error is a one-line :class:`ToolFailure`
and nothing raises into the framework. CrewAI and MCP import their framework only when called
(the ``[crewai]`` and ``[mcp]`` extras).
"""

from chefsplan_agents.tools._autogen import NetworkFunctionTool, autogen_tools
from chefsplan_agents.tools._core import (
    MAX_TOOL_TOKENS,
    acheck_policy,
    adelegate_task,
    afind_providers,
    aget_result,
    alog_output,
    asecond_opinion,
    asplit_and_delegate,
    averify_output,
    check_policy,
    delegate_task,
    find_providers,
    get_result,
    log_output,
    second_opinion,
    split_and_delegate,
    split_text,
    verify_output,
)
from chefsplan_agents.tools._crewai import crewai_tools
from chefsplan_agents.tools._langchain import langchain_tools
from chefsplan_agents.tools._mcp import mcp_server, serve_mcp_stdio
from chefsplan_agents.tools._receipts import (
    LoggedOutputReceipt,
    PolicyReport,
    ProviderInfo,
    ProvidersFound,
    ReplicaInfo,
    RescoreReport,
    SecondOpinion,
    SplitReceipt,
    TaskReceipt,
    ToolFailure,
    ToolResult,
    Trust,
)
from chefsplan_agents.tools._sensitive import is_sensitive, sensitive_refusal
from chefsplan_agents.tools._spec import TOOL_NAMES, ToolSpec, tool_specs

__all__ = [
    "MAX_TOOL_TOKENS",
    "TOOL_NAMES",
    "LoggedOutputReceipt",
    "NetworkFunctionTool",
    "PolicyReport",
    "ProviderInfo",
    "ProvidersFound",
    "ReplicaInfo",
    "RescoreReport",
    "SecondOpinion",
    "SplitReceipt",
    "TaskReceipt",
    "ToolFailure",
    "ToolResult",
    "ToolSpec",
    "Trust",
    "acheck_policy",
    "adelegate_task",
    "afind_providers",
    "aget_result",
    "alog_output",
    "asecond_opinion",
    "asplit_and_delegate",
    "autogen_tools",
    "averify_output",
    "check_policy",
    "crewai_tools",
    "delegate_task",
    "find_providers",
    "get_result",
    "is_sensitive",
    "langchain_tools",
    "log_output",
    "mcp_server",
    "second_opinion",
    "sensitive_refusal",
    "serve_mcp_stdio",
    "split_and_delegate",
    "split_text",
    "tool_specs",
    "verify_output",
]
