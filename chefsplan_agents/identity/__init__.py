"""Identity: ``did:key`` DIDs, Ed25519 signatures, EVM accounts, keystores and VC-JWTs.

An :class:`Identity` is an Ed25519 key (its ``did:key``) plus a secp256k1 EVM account. Signatures
verify given only the signer's DID (:func:`verify_signature`), a :class:`DidBinding` proves the
DID and the EVM address share a controller, and credentials are VC-JWTs issued and checked by a
:class:`DidBackend`: :class:`PythonDidBackend` by default, or :class:`DidkitBackend` (extra
``did``), which runs didkit in a child process.
"""

from chefsplan_agents.identity._binding import (
    DidBinding,
    bind_identity,
    binding_statement,
    verify_binding,
)
from chefsplan_agents.identity._didkey import (
    decode_signature,
    did_from_public_key,
    encode_signature,
    key_id,
    public_key_from_did,
    verify_signature,
)
from chefsplan_agents.identity._didkit import DidkitBackend, didkit_available
from chefsplan_agents.identity._identity import Identity
from chefsplan_agents.identity._keystore import (
    PASSPHRASE_ENV,
    KeystoreInfo,
    load_keystore,
    read_keystore_info,
    save_keystore,
)
from chefsplan_agents.identity._vc import (
    VC_CONTEXT,
    DidBackend,
    PythonDidBackend,
    VerifiedCredential,
    default_backend,
    issue_credential,
    verify_credential,
)

__all__ = [
    "PASSPHRASE_ENV",
    "VC_CONTEXT",
    "DidBackend",
    "DidBinding",
    "DidkitBackend",
    "Identity",
    "KeystoreInfo",
    "PythonDidBackend",
    "VerifiedCredential",
    "bind_identity",
    "binding_statement",
    "decode_signature",
    "default_backend",
    "did_from_public_key",
    "didkit_available",
    "encode_signature",
    "issue_credential",
    "key_id",
    "load_keystore",
    "public_key_from_did",
    "read_keystore_info",
    "save_keystore",
    "verify_binding",
    "verify_credential",
    "verify_signature",
]
