"""Versioned, frozen pydantic models for what travels over IPFS: tasks, results and offers.

Every model forbids unknown fields and declares ``schema_version``; a reader that meets another
version refuses the bundle rather than guessing. Values that JSON readers elsewhere would round
(wei amounts) are carried as decimal strings; hashes are lowercase hex.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlparse

from eth_utils.address import is_address, to_checksum_address
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)

from chefsplan_agents.identity import public_key_from_did

__all__ = [
    "SCHEMA_VERSION",
    "ChatMessage",
    "GenerationParams",
    "ModelRequirement",
    "Offer",
    "OfferedModel",
    "ResultBundle",
    "TaskBundle",
    "Timings",
    "output_hash",
]

SCHEMA_VERSION: Final = 1
"""The bundle schema version this package writes and reads."""

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_BYTES32_RE = re.compile(r"^0x[0-9a-f]{64}$")


def output_hash(text: str) -> str:
    """SHA-256 of a model output's UTF-8 bytes, as ``0x``-prefixed hex (an on-chain bytes32)."""
    return "0x" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _did(value: str) -> str:
    public_key_from_did(value)  # InvalidDid is a ValueError: pydantic reports it per field
    return value


def _sha256(value: str) -> str:
    if not _SHA256_RE.match(value):
        raise ValueError("must be 64 lowercase hex characters (a sha256 digest)")
    return value


def _bytes32(value: str) -> str:
    if not _BYTES32_RE.match(value):
        raise ValueError("must be 0x followed by 64 lowercase hex characters")
    return value


def _cid(value: str) -> str:
    # The storage layer parses CIDs; here only shape, since bundles sit below storage.
    if not value or not value.isascii() or not value.isalnum():
        raise ValueError("must be a CID string (base32 'bafy…' or base58 'Qm…')")
    return value


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must carry a timezone (use UTC)")
    return value.astimezone(UTC)


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _wei(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a wei amount")
    if isinstance(value, str):
        if not value.isdigit():
            raise ValueError("must be a non-negative decimal integer string")
        return int(value)
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    raise ValueError("must be a wei amount (decimal string)")


def _address(value: str) -> str:
    if not is_address(value):
        raise ValueError("must be a 0x EVM address")
    return str(to_checksum_address(value))


def _url(value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("must be an http(s) URL")
    return value


Did = Annotated[str, AfterValidator(_did)]
Sha256Hex = Annotated[str, AfterValidator(_sha256)]
Bytes32Hex = Annotated[str, AfterValidator(_bytes32)]
Cid = Annotated[str, AfterValidator(_cid)]
Timestamp = Annotated[
    datetime, AfterValidator(_utc), PlainSerializer(_iso, return_type=str, when_used="json")
]
FiniteFloat = Annotated[float, AfterValidator(_finite)]
Wei = Annotated[int, BeforeValidator(_wei), PlainSerializer(str, return_type=str, when_used="json")]
EvmAddress = Annotated[str, AfterValidator(_address)]
HttpUrl = Annotated[str, AfterValidator(_url)]


def _now() -> datetime:
    return datetime.now(UTC)


def _nonce() -> str:
    return secrets.token_hex(16)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class ChatMessage(_Model):
    """One chat turn."""

    role: Literal["system", "user", "assistant"]
    content: str


class GenerationParams(_Model):
    """Sampling settings. The defaults are the determinism profile: greedy, fixed seed."""

    max_tokens: int = Field(default=256, ge=1, le=1_000_000)
    temperature: FiniteFloat = Field(default=0.0, ge=0.0)
    top_p: FiniteFloat = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=40, ge=0)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    repeat_penalty: FiniteFloat = Field(default=1.0, gt=0.0)
    stop: tuple[str, ...] = ()


class ModelRequirement(_Model):
    """Which model may run a task: by name, by GGUF sha256 (exact), or both."""

    name: str | None = None
    sha256: Sha256Hex | None = None
    min_context: int = Field(default=512, ge=1)

    @model_validator(mode="after")
    def _named(self) -> ModelRequirement:
        if self.name is None and self.sha256 is None:
            raise ValueError("give a model name, a gguf sha256, or both")
        return self


class TaskBundle(_Model):
    """A task a requester posts: what to generate, with which model, signed by the requester."""

    type: Literal["chefsplan.TaskBundle"] = "chefsplan.TaskBundle"
    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["chat", "completion"]
    messages: tuple[ChatMessage, ...] | None = None
    prompt: str | None = None
    params: GenerationParams = Field(default_factory=GenerationParams)
    model: ModelRequirement
    input_cids: tuple[Cid, ...] = ()
    recipe_cid: Cid | None = Field(
        default=None, description="A declarative prompt template the node expands."
    )
    requester_did: Did
    nonce: str = Field(default_factory=_nonce, min_length=8, max_length=128)
    created_at: Timestamp = Field(default_factory=_now)
    signature: str | None = None

    @model_validator(mode="after")
    def _content(self) -> TaskBundle:
        if self.kind == "chat":
            if not self.messages or self.prompt is not None:
                raise ValueError("a chat task has messages and no prompt")
        elif self.prompt is None or self.messages is not None:
            raise ValueError("a completion task has a prompt and no messages")
        return self

    @property
    def signer_did(self) -> str:
        """The DID that signs this bundle (the requester)."""
        return self.requester_did


TopK = tuple[tuple[int, FiniteFloat], ...]
"""One position's top-k alternatives: ``(token_id, logprob)`` pairs, best first."""


class Timings(_Model):
    """How long the node took."""

    prompt_tokens: int = Field(ge=0)
    generated_tokens: int = Field(ge=0)
    prompt_ms: FiniteFloat = Field(ge=0.0)
    generation_ms: FiniteFloat = Field(ge=0.0)


class ResultBundle(_Model):
    """What a node returns for a task, signed by the node."""

    type: Literal["chefsplan.ResultBundle"] = "chefsplan.ResultBundle"
    schema_version: Literal[1] = SCHEMA_VERSION
    task_cid: Cid
    output: str
    token_ids: tuple[Annotated[int, Field(ge=0)], ...]
    fingerprint: tuple[TopK, ...] = Field(
        default=(), description="Per generated position, the model's top-k (token_id, logprob)."
    )
    model_sha256: Sha256Hex
    llama_cpp_build: str
    timings: Timings
    node_did: Did
    output_hash: Bytes32Hex
    signature: str | None = None

    @model_validator(mode="after")
    def _hash_matches(self) -> ResultBundle:
        if self.output_hash != output_hash(self.output):
            raise ValueError("output_hash is not the sha256 of output")
        if self.fingerprint and len(self.fingerprint) != len(self.token_ids):
            raise ValueError("fingerprint must have one entry per token id")
        return self

    @property
    def signer_did(self) -> str:
        """The DID that signs this bundle (the node)."""
        return self.node_did


class OfferedModel(_Model):
    """The model a node serves."""

    name: str = Field(min_length=1)
    sha256: Sha256Hex
    quantization: str = Field(min_length=1, description="GGUF file type, e.g. Q4_1.")
    context_length: int = Field(ge=1)


class Offer(_Model):
    """What a node offers the network; published as a VC-JWT signed by the node's DID."""

    type: Literal["chefsplan.Offer"] = "chefsplan.Offer"
    schema_version: Literal[1] = SCHEMA_VERSION
    model: OfferedModel
    generation_tokens_per_s: FiniteFloat = Field(gt=0.0)
    prefill_tokens_per_s: FiniteFloat = Field(gt=0.0)
    price_per_1k_tokens_wei: Wei
    endpoint: HttpUrl | None = None
    evm_address: EvmAddress
    did: Did
    # Where the offer is registered: a reader accepts it only for this chain and registry, so a
    # credential issued for one deployment cannot be registered in another.
    chain_id: int | None = Field(default=None, ge=1, description="EIP-155 id of the chain.")
    registry: EvmAddress | None = Field(default=None, description="The AgentRegistry address.")
