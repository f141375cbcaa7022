"""What every chat completion client in this package keeps alike: the model's info and the
running token totals, behind AutoGen's :class:`~autogen_core.models.ChatCompletionClient`."""

from __future__ import annotations

import threading
import warnings

from autogen_core.models import (
    ChatCompletionClient,
    ModelCapabilities,
    ModelInfo,
    RequestUsage,
    validate_model_info,
)

__all__: list[str] = []


class _ClientBase(ChatCompletionClient):
    """Model info and usage bookkeeping; subclasses add how a completion is produced."""

    def __init__(self, model_info: ModelInfo) -> None:
        validate_model_info(model_info)
        self._model_info = model_info
        self._total = RequestUsage(prompt_tokens=0, completion_tokens=0)
        # Completions may finish on worker threads: the totals are added under a lock.
        self._usage_lock = threading.Lock()

    def _add_usage(self, prompt_tokens: int, completion_tokens: int) -> None:
        with self._usage_lock:
            self._total = RequestUsage(
                prompt_tokens=self._total.prompt_tokens + prompt_tokens,
                completion_tokens=self._total.completion_tokens + completion_tokens,
            )

    def actual_usage(self) -> RequestUsage:
        """Tokens used by all calls so far (no call is served from a cache)."""
        with self._usage_lock:
            return RequestUsage(self._total.prompt_tokens, self._total.completion_tokens)

    def total_usage(self) -> RequestUsage:
        """Tokens used by all calls so far."""
        return self.actual_usage()

    @property
    def capabilities(self) -> ModelCapabilities:
        """Deprecated by AutoGen in favour of :attr:`model_info`."""
        warnings.warn(
            "capabilities is deprecated; use model_info", DeprecationWarning, stacklevel=2
        )
        caps: ModelCapabilities = {
            "vision": self._model_info["vision"],
            "function_calling": self._model_info["function_calling"],
            "json_output": self._model_info["json_output"],
        }
        return caps

    @property
    def model_info(self) -> ModelInfo:
        """What the model behind this client can do, for AutoGen."""
        return self._model_info
