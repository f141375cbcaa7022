"""Bundles: the versioned documents nodes exchange, their canonical bytes and signatures.

:class:`TaskBundle` (a request), :class:`ResultBundle` (a node's answer) and :class:`Offer` (what
a node serves, published as a VC-JWT). :func:`encode_bundle` gives RFC 8785 canonical JSON, so a
bundle has one byte string and one CID; ``decode_*`` check size, JSON, version, schema and
signature. Content addressing itself lives in the storage layer.
"""

from chefsplan_agents.bundles._canonical import canonical_json, sha256_hex
from chefsplan_agents.bundles._codec import (
    DEFAULT_MAX_BUNDLE_BYTES,
    decode_result_bundle,
    decode_task_bundle,
    encode_bundle,
    sign_bundle,
    signing_payload,
    verify_bundle,
)
from chefsplan_agents.bundles._models import (
    DEFAULT_TASK_MAX_TOKENS,
    MAX_OFFER_TAGS,
    SCHEMA_VERSION,
    ChatMessage,
    GenerationParams,
    ModelRequirement,
    Offer,
    OfferedModel,
    ResultBundle,
    TaskBundle,
    Timings,
    check_tags,
    output_hash,
    parse_tags,
)
from chefsplan_agents.bundles._offer import OFFER_CREDENTIAL_TYPE, issue_offer, verify_offer

__all__ = [
    "DEFAULT_MAX_BUNDLE_BYTES",
    "DEFAULT_TASK_MAX_TOKENS",
    "MAX_OFFER_TAGS",
    "OFFER_CREDENTIAL_TYPE",
    "SCHEMA_VERSION",
    "ChatMessage",
    "GenerationParams",
    "ModelRequirement",
    "Offer",
    "OfferedModel",
    "ResultBundle",
    "TaskBundle",
    "Timings",
    "canonical_json",
    "check_tags",
    "decode_result_bundle",
    "decode_task_bundle",
    "encode_bundle",
    "issue_offer",
    "output_hash",
    "parse_tags",
    "sha256_hex",
    "sign_bundle",
    "signing_payload",
    "verify_bundle",
    "verify_offer",
]
