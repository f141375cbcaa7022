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
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from chefsplan_agents._tags import MAX_OFFER_TAGS, check_tags, parse_tags
from chefsplan_agents.errors import InvalidGenerationParams
from chefsplan_agents.identity import public_key_from_did

__all__ = [
    "SCHEMA_VERSION",
    "DEFAULT_TASK_MAX_TOKENS",
    "MAX_OFFER_TAGS",
    "ChatMessage",
    "GenerationParams",
    "ModelRequirement",
    "Offer",
    "OfferedModel",
    "ResultBundle",
    "TaskBundle",
    "Timings",
    "check_tags",
    "output_hash",
    "parse_tags",
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
    """One chat turn (in a task bundle and for a model backend alike)."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str


DEFAULT_TASK_MAX_TOKENS: Final = 256
"""``max_tokens`` of a task bundle that names no parameters."""

# Fields added after bundles were first written: left out of the wire form while at their
# default, so bundles that do not use them keep their canonical bytes (and CIDs).
_OMIT_AT_DEFAULT: Final = {"min_p": 0.0, "logprobs": 5}


class GenerationParams(_Model):
    """How to sample a completion: what a task bundle carries and what a model backend takes.

    The defaults are the determinism profile's: greedy (``temperature=0``), a fixed seed and
    ``repeat_penalty=1.0`` (llama.cpp's HTTP server would otherwise default to 1.1).

    Raises:
        InvalidGenerationParams: Built directly with a value out of range (one line naming the
            field). Inside a bundle being parsed, the bundle's own validation reports it.
    """

    max_tokens: int = Field(default=128, ge=1, le=1_000_000)
    temperature: FiniteFloat = Field(default=0.0, ge=0.0)
    top_p: FiniteFloat = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=40, ge=0)
    min_p: FiniteFloat = Field(default=0.0, ge=0.0, le=1.0)
    repeat_penalty: FiniteFloat = Field(default=1.0, gt=0.0)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    stop: tuple[str, ...] = ()
    logprobs: int = Field(default=5, ge=1, le=20, description="k of the top-k fingerprint.")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "params"
            raise InvalidGenerationParams(
                f"invalid generation parameter {where}: {first['msg']}"
            ) from err

    # Direct construction reports InvalidGenerationParams; nested in a bundle being parsed, the
    # bundle's own validation names the field (pydantic skips an __init__ marked as its own).
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @model_validator(mode="after")
    def _no_empty_stop(self) -> GenerationParams:
        if any(s == "" for s in self.stop):
            raise ValueError("stop strings must not be empty")
        return self

    @model_serializer(mode="wrap")
    def _wire(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if not info.mode_is_json():
            return data
        for name, default in _OMIT_AT_DEFAULT.items():
            if data.get(name) == default:
                del data[name]
        return data

    @property
    def greedy(self) -> bool:
        """Whether sampling always picks the most likely token."""
        return self.temperature == 0.0


def _default_task_params() -> GenerationParams:
    return GenerationParams(max_tokens=DEFAULT_TASK_MAX_TOKENS)


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
    params: GenerationParams = Field(default_factory=_default_task_params)
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
    """Where the time of one model call went: token counts and milliseconds.

    A result bundle carries these four numbers; the rates are derived from them.
    """

    prompt_tokens: int = Field(ge=0)
    generated_tokens: int = Field(ge=0)
    prompt_ms: FiniteFloat = Field(
        ge=0.0, description="Prefill: evaluating the prompt (and the first sample)."
    )
    generation_ms: FiniteFloat = Field(ge=0.0, description="Generating the remaining tokens.")

    @classmethod
    def measure(
        cls, prompt_s: float, generation_s: float, n_prompt: int, n_generated: int
    ) -> Timings:
        """Build timings from seconds and token counts."""
        return cls(
            prompt_tokens=n_prompt,
            generated_tokens=n_generated,
            prompt_ms=prompt_s * 1000,
            generation_ms=generation_s * 1000,
        )

    @property
    def prompt_tokens_per_s(self) -> float:
        """Prefill speed (0.0 when the prefill was not timed apart)."""
        return _rate(self.prompt_tokens, self.prompt_ms)

    @property
    def generation_tokens_per_s(self) -> float:
        """Generation speed. The first token comes out of a timed prefill, so then
        generation covers the rest; a backend that times no prefill counts them all."""
        n = self.generated_tokens - 1 if self.prompt_ms > 0 else self.generated_tokens
        return _rate(max(n, 0), self.generation_ms)


def _rate(n: int, ms: float) -> float:
    return n * 1000 / ms if ms > 0 and n > 0 else 0.0


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


OfferTags = Annotated[dict[str, str], AfterValidator(check_tags)]


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
    tags: OfferTags = Field(
        default_factory=dict,
        description="What the node states about itself, e.g. {'jurisdiction': 'EU'}; signed "
        "with the rest, so a requester may route by it.",
    )

    @model_serializer(mode="wrap")
    def _wire(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        # An offer without tags keeps the bytes offers had before tags existed.
        if info.mode_is_json() and not data.get("tags"):
            data.pop("tags", None)
        return data
