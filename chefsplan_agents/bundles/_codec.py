"""Bytes ↔ bundles: canonical encoding, detached signatures, and validating decoders.

A bundle's signature is an Ed25519 signature by its signer's DID (``requester_did`` of a task,
``node_did`` of a result) over the canonical JSON of the bundle *without* its ``signature``
field. Decoders check, in order: size, JSON, schema version, schema, signature, and raise one
error with a one-line message at the first failure.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any, TypeVar

from pydantic import ValidationError

from chefsplan_agents import _json
from chefsplan_agents.bundles._canonical import canonical_json
from chefsplan_agents.bundles._models import SCHEMA_VERSION, ResultBundle, TaskBundle
from chefsplan_agents.errors import (
    BundleError,
    BundleSchemaError,
    BundleTooLarge,
    InvalidDid,
    InvalidSignature,
    UnsupportedBundleVersion,
)
from chefsplan_agents.identity import Identity, encode_signature, verify_signature

__all__ = [
    "DEFAULT_MAX_BUNDLE_BYTES",
    "decode_result_bundle",
    "decode_task_bundle",
    "encode_bundle",
    "signing_payload",
    "sign_bundle",
    "verify_bundle",
]

DEFAULT_MAX_BUNDLE_BYTES = 4 * 1024 * 1024
"""Same default as ``StorageSettings.max_bundle_bytes``."""

Bundle = TaskBundle | ResultBundle
B = TypeVar("B", TaskBundle, ResultBundle)


def _json_value(bundle: Bundle, *, without_signature: bool) -> dict[str, Any]:
    exclude = {"signature"} if without_signature else None
    return bundle.model_dump(mode="json", exclude=exclude)


def encode_bundle(bundle: Bundle) -> bytes:
    """The canonical (RFC 8785) bytes of a bundle, signature included.

    The same bundle always gives the same bytes, and so the same CID.
    """
    return _canonical_bundle(_json_value(bundle, without_signature=False))


def signing_payload(bundle: Bundle) -> bytes:
    """The bytes a bundle's signature covers: its canonical JSON without ``signature``."""
    return _canonical_bundle(_json_value(bundle, without_signature=True))


def _canonical_bundle(value: dict[str, Any]) -> bytes:
    """:func:`canonical_json` of a bundle, with its lists of numbers encoded on a fast path.

    A result's fingerprint (per token, the top-k ``[token_id, logprob]`` pairs) and token ids
    are most of its bytes, and the general encoder walks them value by value (~2 ms for 128
    tokens, three times per delegated task: signing, storing, verifying). Top-level lists of
    numbers are encoded here directly instead, each number spelled as the general encoder
    spells it, and spliced in where unique placeholders stood. Anything else takes the general
    encoder.
    """
    fast: dict[str, bytes] = {}
    for key, item in value.items():
        if isinstance(item, list) and item:
            encoded = _numbers_json(item)
            if encoded is not None:
                fast[key] = encoded
    if not fast:
        return canonical_json(value)
    tag = secrets.token_hex(16)
    text = canonical_json({**value, **{key: f"{tag}-{key}" for key in fast}})
    for key, encoded in fast.items():
        quoted = f'"{tag}-{key}"'.encode()
        if text.count(quoted) != 1:  # pragma: no cover - 128 random bits do not collide
            return canonical_json(value)
        text = text.replace(quoted, encoded)
    return text


# In the C encoder's output of numbers only: a float it spells differently from ECMAScript
# (integral, ``-5.0``; or with an exponent, ``1e-07``), and an integer beyond 2**53.
_RESPELL = re.compile(r"(?<![0-9.])-?[0-9]++(?:\.0(?![0-9])|(?:\.[0-9]++)?+e[+-][0-9]++)")
_BIG_INT = re.compile(r"(?<![0-9.])[0-9]{16,}(?![0-9.e])")


def _numbers_json(numbers: list[Any]) -> bytes | None:
    """RFC 8785 bytes of nested lists of numbers; ``None`` for anything else.

    The C encoder writes lists of ints and floats as RFC 8785 does, but for the float
    spellings ``_RESPELL`` finds, which the general encoder spells instead (it also refuses
    NaN and infinities, which the C encoder refuses here first).
    """
    try:
        text = json.dumps(numbers, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return None
    if '"' in text or "{" in text or _BIG_INT.search(text):
        return None  # strings or objects (escaping, key order), or an unsafe integer
    return _RESPELL.sub(lambda m: canonical_json(float(m.group(0))).decode(), text).encode()


def sign_bundle(bundle: B, identity: Identity) -> B:
    """Return a copy of a bundle signed by an identity.

    Args:
        bundle: A task (signed by its requester) or result (signed by its node).
        identity: The signer; its DID must be the bundle's ``requester_did``/``node_did``.

    Returns:
        The bundle with ``signature`` set (base64url Ed25519).

    Raises:
        BundleError: The identity is not the bundle's signer.
    """
    if identity.did != bundle.signer_did:
        raise BundleError(
            f"bundle names signer {bundle.signer_did} but the identity is {identity.did}; "
            "sign with the identity the bundle names"
        )
    signature = encode_signature(identity.sign(signing_payload(bundle)))
    return bundle.model_copy(update={"signature": signature})


def verify_bundle(bundle: Bundle) -> None:
    """Check a bundle's signature against the DID it names as signer.

    Raises:
        InvalidSignature: Unsigned, or the signature does not verify (tampered or wrong signer).
    """
    if bundle.signature is None:
        raise InvalidSignature(f"{type(bundle).__name__} is not signed; sign it with sign_bundle()")
    try:
        verify_signature(bundle.signer_did, signing_payload(bundle), bundle.signature)
    except InvalidDid as err:  # pragma: no cover - the schema already resolved the DID
        raise InvalidSignature(str(err)) from err
    except InvalidSignature as err:
        raise InvalidSignature(
            f"{type(bundle).__name__} signature does not verify for {bundle.signer_did}: "
            "it was tampered with or signed by someone else"
        ) from err


def _first_error(err: ValidationError, model: str) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or model
    message = str(first["msg"]).removeprefix("Value error, ")
    extra = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{model} field {where!r}: {message}{extra}"


def _decode(data: bytes, model: type[B], *, max_bytes: int, verify: bool) -> B:
    name = model.__name__
    if len(data) > max_bytes:
        raise BundleTooLarge(
            f"{name} is {len(data)} bytes, over the {max_bytes}-byte limit; raise max_bytes "
            "only for trusted sources"
        )
    try:
        value = _json.loads(data)
    except _json.JsonTooDeep as err:
        raise BundleSchemaError(f"{name} is refused: {err}") from err
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise BundleSchemaError(f"{name} is not valid UTF-8 JSON: {err}") from err
    if not isinstance(value, dict):
        raise BundleSchemaError(f"{name} must be a JSON object, got {type(value).__name__}")
    version = value.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise UnsupportedBundleVersion(
            f"{name} has schema_version {version!r}; this package reads version "
            f"{SCHEMA_VERSION}: upgrade chefsplan-agents or re-create the bundle"
        )
    try:
        bundle = model.model_validate(value)
    except ValidationError as err:
        raise BundleSchemaError(_first_error(err, name)) from err
    if verify:
        verify_bundle(bundle)
    return bundle


def decode_task_bundle(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BUNDLE_BYTES, verify: bool = True
) -> TaskBundle:
    """Parse, validate and (by default) signature-check a task bundle.

    Non-canonical JSON is accepted; :func:`encode_bundle` of the result is canonical.

    Args:
        data: The bundle bytes (as fetched from a content store).
        max_bytes: Refuse anything larger, before parsing.
        verify: Check the requester's signature.

    Returns:
        The task.

    Raises:
        BundleTooLarge: Over ``max_bytes``.
        BundleSchemaError: Not JSON, or the first field that breaks the schema.
        UnsupportedBundleVersion: Another ``schema_version``.
        InvalidSignature: Unsigned or badly signed (when ``verify``).
    """
    return _decode(data, TaskBundle, max_bytes=max_bytes, verify=verify)


def decode_result_bundle(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BUNDLE_BYTES, verify: bool = True
) -> ResultBundle:
    """Parse, validate and (by default) signature-check a result bundle.

    Same checks and errors as :func:`decode_task_bundle`; the signer is ``node_did``, and
    ``output_hash`` must be the sha256 of ``output``.
    """
    return _decode(data, ResultBundle, max_bytes=max_bytes, verify=verify)
