"""A two-way proof that a ``did:key`` and an EVM address belong to the same controller.

Both keys sign one statement that names both: the Ed25519 key signs its bytes, the EVM key signs
it with EIP-191 ``personal_sign``. Either signature alone could be replayed by someone who
controls only the other key; together they bind the pair.
"""

from __future__ import annotations

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils.address import is_checksum_address, to_checksum_address
from pydantic import BaseModel, ConfigDict

from chefsplan_agents.errors import InvalidSignature
from chefsplan_agents.identity._didkey import (
    decode_signature,
    encode_signature,
    public_key_from_did,
    verify_signature,
)
from chefsplan_agents.identity._identity import Identity

__all__ = ["DidBinding", "bind_identity", "binding_statement", "verify_binding"]


def binding_statement(did: str, address: str) -> str:
    """The text both keys sign: names the DID and the checksummed EVM address."""
    return (
        "chefsplan-agents identity binding v1\n"
        f"DID: {did}\n"
        f"EVM address: {to_checksum_address(address)}"
    )


class DidBinding(BaseModel):
    """A DID, an EVM address, and each key's signature over :func:`binding_statement`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    did: str
    address: str
    ed25519_signature: str
    """Base64url Ed25519 signature over the statement's UTF-8 bytes."""
    evm_signature: str
    """``0x`` hex EIP-191 signature (65 bytes) over the statement."""


def bind_identity(identity: Identity) -> DidBinding:
    """Sign the binding between an identity's DID and its EVM address with both keys."""
    statement = binding_statement(identity.did, identity.address)
    return DidBinding(
        did=identity.did,
        address=identity.address,
        ed25519_signature=encode_signature(identity.sign(statement.encode("utf-8"))),
        evm_signature="0x" + identity.sign_evm_message(statement).hex(),
    )


def verify_binding(binding: DidBinding) -> None:
    """Check both signatures of a binding.

    Args:
        binding: The binding to check.

    Raises:
        InvalidDid: The DID does not resolve.
        InvalidSignature: The address is malformed, or either signature does not verify.
    """
    public_key_from_did(binding.did)
    if not is_checksum_address(binding.address):
        raise InvalidSignature(f"binding address {binding.address!r} is not a checksummed address")
    statement = binding_statement(binding.did, binding.address)
    verify_signature(
        binding.did, statement.encode("utf-8"), decode_signature(binding.ed25519_signature)
    )
    try:
        recovered = Account.recover_message(
            encode_defunct(text=statement), signature=bytes.fromhex(binding.evm_signature[2:])
        )
    except Exception as err:  # eth_keys raises several types for malformed signatures
        raise InvalidSignature("binding EVM signature is malformed") from err
    if not binding.evm_signature.startswith("0x") or recovered != binding.address:
        raise InvalidSignature(
            f"binding EVM signature was made by {recovered}, not {binding.address}"
        )
