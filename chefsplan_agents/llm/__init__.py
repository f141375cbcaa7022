"""The llm layer: local models behind one protocol, with fingerprints for verification.

``LLMBackend`` is the protocol; ``LlamaCppBackend`` runs a GGUF model in process (the
embedded default) and ``LlamaServerBackend`` talks to an OpenAI-compatible llama.cpp server.
``resolve_model`` finds model files by path or name (``smollm2-135m``, ``tiny``) and pins their
sha256; ``StubBackend`` (model spec ``stub:SECONDS``) is a deterministic stand-in for load and
fault tests; ``build_tiny_model`` writes the tiny test model; ``rescore`` plus
``fingerprint_agreement`` and ``claimed_tokens_top1_fraction`` are the cheap verifier.
"""

from chefsplan_agents.llm._base import (
    CHATML_TEMPLATE,
    BackendBase,
    LLMBackend,
    OnToken,
    render_chat,
)
from chefsplan_agents.llm._factory import MODEL_ALIASES, open_backend
from chefsplan_agents.llm._llamacpp import LlamaCppBackend, llama_cpp_build
from chefsplan_agents.llm._models import (
    KNOWN_MODELS,
    ModelFile,
    default_cache_dir,
    file_sha256,
    resolve_model,
)
from chefsplan_agents.llm._server import (
    MAX_SERVER_ANSWER_BYTES,
    LlamaServerBackend,
    serve_model,
    server_extra_missing,
)
from chefsplan_agents.llm._stub import STUB_MODEL_SHA256, StubBackend, is_stub_spec, stub_seconds
from chefsplan_agents.llm._tiny import (
    SCRIPTED_OUTPUT,
    TinyVariant,
    build_tiny_model,
    scripted_continuation,
)
from chefsplan_agents.llm._types import (
    ChatMessage,
    DeterminismProfile,
    Fingerprint,
    Generation,
    GenerationParams,
    ModelInfo,
    RescoredPosition,
    RescoreResult,
    Timings,
    TopK,
    claimed_tokens_top1_fraction,
    fingerprint_agreement,
)

__all__ = [
    "CHATML_TEMPLATE",
    "KNOWN_MODELS",
    "MAX_SERVER_ANSWER_BYTES",
    "MODEL_ALIASES",
    "SCRIPTED_OUTPUT",
    "STUB_MODEL_SHA256",
    "ChatMessage",
    "DeterminismProfile",
    "Fingerprint",
    "Generation",
    "GenerationParams",
    "BackendBase",
    "LLMBackend",
    "LlamaCppBackend",
    "LlamaServerBackend",
    "ModelFile",
    "ModelInfo",
    "OnToken",
    "RescoreResult",
    "RescoredPosition",
    "StubBackend",
    "Timings",
    "TinyVariant",
    "TopK",
    "build_tiny_model",
    "claimed_tokens_top1_fraction",
    "default_cache_dir",
    "file_sha256",
    "fingerprint_agreement",
    "is_stub_spec",
    "llama_cpp_build",
    "open_backend",
    "render_chat",
    "resolve_model",
    "scripted_continuation",
    "serve_model",
    "server_extra_missing",
    "stub_seconds",
]
