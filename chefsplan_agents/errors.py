"""One exception tree for the whole package.

Every error raised by chefsplan-agents derives from :class:`ChefsplanError`, with one base per
layer so callers can catch by layer. Builtins are mixed in where the meaning matches, so
``except ValueError`` still works for bad input. Errors from third-party libraries (web3,
requests, llama_cpp, didkit) are translated at the seam with ``raise ... from err`` and never
leak upward.

The message of every error is one line that says what was wrong and what to do about it; the
CLI prints exactly that line, never a traceback, for bad input.

::

    ChefsplanError
    ├── ConfigError (ValueError)
    ├── StorageError
    │   ├── InvalidCid (ValueError)
    │   ├── CidMismatch
    │   ├── ContentNotFound (LookupError)
    │   ├── ContentTooLarge (ValueError)
    │   └── StoreUnavailable (ConnectionError)
    ├── IdentityError
    │   ├── InvalidDid (ValueError)
    │   ├── InvalidSignature
    │   ├── InvalidCredential
    │   ├── KeystoreError
    │   └── DidBackendError       (the didkit backend is missing, crashed or timed out)
    ├── BundleError (ValueError)
    │   ├── BundleSchemaError
    │   ├── UnsupportedBundleVersion
    │   ├── BundleTooLarge
    │   └── InvalidOfferTags
    ├── ChainError
    │   ├── ChainUnavailable (ConnectionError)
    │   ├── ContractNotDeployed
    │   ├── TransactionFailed
    │   └── TxReverted            (Solidity custom errors decode to subclasses)
    ├── RegistryError
    ├── MarketError
    │   ├── NoQuorum              (a delegated task settled without an accepted output)
    │   ├── DelegationTimeout (TimeoutError)
    │   └── InsufficientFunds     (the requester's account cannot pay a task's escrow)
    ├── LLMError
    │   ├── ModelNotFound (LookupError)
    │   ├── ModelHashMismatch
    │   ├── ContextOverflow (ValueError)
    │   ├── GenerationError
    │   ├── ModelLoadError        (the file exists but llama.cpp cannot load it)
    │   ├── InvalidGenerationParams (ValueError)
    │   ├── UnsupportedMessage (ValueError)  (a chat message the local model cannot take)
    │   ├── UnsupportedRequest (ValueError)  (tools or JSON output a network model cannot honour)
    │   └── LLMServerUnavailable (ConnectionError)
    ├── NodeError
    │   ├── TaskRefused
    │   ├── NodeUnavailable (ConnectionError)
    │   ├── NodeRequestRejected   (the node's HTTP API answered with an error)
    │   │   └── JobNotFound (LookupError)
    │   ├── JobFailed
    │   └── JobTimeout (TimeoutError)
    ├── VerificationError
    │   └── InvalidEvidence (ValueError)  (a challenge's evidence document is malformed)
    └── ToolError                 (an app's tool call refused before anything was sent)
        ├── NoProviderFound (LookupError)
        └── PolicyViolation       (the app's policy forbids an output or a spend)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BundleError",
    "BundleSchemaError",
    "BundleTooLarge",
    "ChainError",
    "ChainUnavailable",
    "ChefsplanError",
    "CidMismatch",
    "ConfigError",
    "ContentNotFound",
    "ContentTooLarge",
    "ContextOverflow",
    "ContractNotDeployed",
    "DelegationTimeout",
    "DidBackendError",
    "GenerationError",
    "IdentityError",
    "InvalidCid",
    "InvalidEvidence",
    "InvalidCredential",
    "InvalidDid",
    "InvalidGenerationParams",
    "InsufficientFunds",
    "InvalidSignature",
    "JobFailed",
    "JobNotFound",
    "JobTimeout",
    "KeystoreError",
    "LLMError",
    "LLMServerUnavailable",
    "MarketError",
    "ModelHashMismatch",
    "ModelLoadError",
    "ModelNotFound",
    "NoProviderFound",
    "NoQuorum",
    "NodeError",
    "NodeRequestRejected",
    "NodeUnavailable",
    "PolicyViolation",
    "RegistryError",
    "StorageError",
    "StoreUnavailable",
    "TaskRefused",
    "ToolError",
    "TransactionFailed",
    "TxReverted",
    "UnsupportedBundleVersion",
    "UnsupportedMessage",
    "UnsupportedRequest",
    "VerificationError",
]


class ChefsplanError(Exception):
    """Root of every error raised by chefsplan-agents."""


# --- config -------------------------------------------------------------------------------


class ConfigError(ChefsplanError, ValueError):
    """Settings are missing, malformed or contradictory."""


# --- storage ------------------------------------------------------------------------------


class StorageError(ChefsplanError):
    """A content store could not put or get content."""


class InvalidCid(StorageError, ValueError):
    """A string is not a CID this package understands."""


class CidMismatch(StorageError):
    """Content does not hash to the CID it was requested or announced under."""

    def __init__(self, expected: str, actual: str, detail: str = "") -> None:
        self.expected = expected
        self.actual = actual
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"content does not match its CID: expected {expected}, got {actual}{extra}; "
            "the store or the network returned tampered or corrupt data"
        )


class ContentNotFound(StorageError, LookupError):
    """The store does not hold the content for a CID."""


class ContentTooLarge(StorageError, ValueError):
    """Content exceeds a configured size limit."""


class StoreUnavailable(StorageError, ConnectionError):
    """A remote store (IPFS daemon) cannot be reached."""


# --- identity -----------------------------------------------------------------------------


class IdentityError(ChefsplanError):
    """DIDs, keys, signatures or credentials."""


class InvalidDid(IdentityError, ValueError):
    """A string is not a DID this package can resolve offline."""


class InvalidSignature(IdentityError):
    """A signature does not verify against the claimed signer."""


class InvalidCredential(IdentityError):
    """A Verifiable Credential is malformed, expired, or does not verify."""


class KeystoreError(IdentityError):
    """A keystore file is missing, corrupt, or the passphrase is wrong."""


class DidBackendError(IdentityError):
    """A DID backend (didkit) is not installed, crashed, or did not answer in time."""


# --- bundles ------------------------------------------------------------------------------


class BundleError(ChefsplanError, ValueError):
    """A task or result bundle is malformed, tampered with, or too large."""


class BundleSchemaError(BundleError):
    """A bundle does not match its schema (missing or mistyped field)."""


class UnsupportedBundleVersion(BundleError):
    """A bundle declares a schema version this package does not speak."""


class BundleTooLarge(BundleError):
    """A bundle exceeds the size limit."""


class InvalidOfferTags(BundleError):
    """Offer tags (or a tag filter) break the rules: too many, or a key or value malformed."""


# --- chain --------------------------------------------------------------------------------


class ChainError(ChefsplanError):
    """Talking to the EVM chain failed."""


class ChainUnavailable(ChainError, ConnectionError):
    """The chain's JSON-RPC endpoint cannot be reached."""


class ContractNotDeployed(ChainError):
    """No contract code at the configured address."""


class TransactionFailed(ChainError):
    """A transaction could not be sent or mined (nonce, gas, funds)."""


class TxReverted(ChainError):
    """A transaction or call reverted.

    Solidity custom errors decode to subclasses named after the error; ``args_`` holds the
    decoded error arguments by name.
    """

    error_name: str = "TxReverted"

    def __init__(self, message: str, *, args_: dict[str, Any] | None = None) -> None:
        self.args_ = dict(args_ or {})
        super().__init__(message)


# --- registry / market --------------------------------------------------------------------


class RegistryError(ChefsplanError):
    """The service registry rejected or could not answer a request."""


class MarketError(ChefsplanError):
    """The task market rejected or could not answer a request."""


class NoQuorum(MarketError):
    """A delegated task settled, but no output hash reached its quorum."""


class DelegationTimeout(MarketError, TimeoutError):
    """A delegated task was not settled within the time waited for it."""


class InsufficientFunds(MarketError):
    """The requester's account holds less than a task's escrow (checked before posting)."""


# --- llm ----------------------------------------------------------------------------------


class LLMError(ChefsplanError):
    """Loading or running a local model failed."""


class ModelNotFound(LLMError, LookupError):
    """No model file for a path or name."""


class ModelHashMismatch(LLMError):
    """A model file's sha256 differs from the pinned one."""


class ContextOverflow(LLMError, ValueError):
    """A prompt plus requested tokens does not fit in the model's context."""


class GenerationError(LLMError):
    """The model failed while generating."""


class ModelLoadError(LLMError):
    """A model file exists but llama.cpp cannot load it (corrupt, truncated, not GGUF)."""


class InvalidGenerationParams(LLMError, ValueError):
    """Generation parameters are out of range or contradictory."""


class UnsupportedMessage(LLMError, ValueError):
    """A chat message the local model cannot take (an image for a text-only model, an unknown
    message type)."""


class UnsupportedRequest(LLMError, ValueError):
    """A completion request a model client cannot honour: tools or constrained JSON output
    asked of a model on the network, which runs a plain chat task."""


class LLMServerUnavailable(LLMError, ConnectionError):
    """An OpenAI-compatible llama.cpp server cannot be reached or answered badly."""


# --- node ---------------------------------------------------------------------------------


class NodeError(ChefsplanError):
    """A provider node failed."""


class TaskRefused(NodeError):
    """A node refused a task before claiming it; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"task refused: {reason}")


class NodeUnavailable(NodeError, ConnectionError):
    """A node's HTTP API cannot be reached (refused, reset, timed out)."""


class NodeRequestRejected(NodeError):
    """A node's HTTP API answered a request with an error.

    ``status`` is the HTTP status and ``code`` the API's error code (``bad_signature``,
    ``stale_request``, ``replayed_nonce``, ``invalid_bundle``, ``forbidden``, …).
    """

    def __init__(self, message: str, *, status: int, code: str) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class JobNotFound(NodeRequestRejected, LookupError):
    """A node does not know the job id asked about."""


class JobFailed(NodeError):
    """A node ran a job and it failed; the message carries the node's reason."""


class JobTimeout(NodeError, TimeoutError):
    """A job did not finish within the time waited for it."""


# --- verify -------------------------------------------------------------------------------


class VerificationError(ChefsplanError):
    """A result could not be verified, or verification found a fault."""


class InvalidEvidence(VerificationError, ValueError):
    """A challenge's evidence document is too large, not JSON, or has the wrong fields."""


# --- tools --------------------------------------------------------------------------------


class ToolError(ChefsplanError):
    """An app's tool call was refused before anything was posted or paid."""


class NoProviderFound(ToolError, LookupError):
    """No registered provider matches the filters a tool was given."""


class PolicyViolation(ToolError):
    """The app's policy (``[policy]`` settings) forbids an output or a spend."""
