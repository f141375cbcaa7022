"""did:key encoding, Ed25519 signatures, EVM accounts and the DID↔address binding."""

from __future__ import annotations

import copy
import pickle

import pytest
from multiformats import multibase

from chefsplan_agents.errors import IdentityError, InvalidDid, InvalidSignature
from chefsplan_agents.identity import (
    Identity,
    bind_identity,
    did_from_public_key,
    encode_signature,
    key_id,
    public_key_from_did,
    verify_binding,
    verify_signature,
)

# did:key test vector (w3c-ccg did-method-key): the Ed25519 key from the all-zero seed.
ZERO_SEED_DID = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
# RFC 8032 §7.1, TEST 1.
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIG_EMPTY = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
# The account from the web3.py / eth-account documentation.
EVM_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
EVM_ADDRESS = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"


def test_did_key_of_zero_seed_matches_the_published_vector() -> None:
    ident = Identity(bytes(32), EVM_KEY)
    assert ident.did == ZERO_SEED_DID
    assert ident.key_id == f"{ZERO_SEED_DID}#{ZERO_SEED_DID.removeprefix('did:key:')}"


def test_evm_address_matches_the_known_account() -> None:
    assert Identity(bytes(32), EVM_KEY).address == EVM_ADDRESS


def test_rfc8032_signature_and_offline_verification() -> None:
    ident = Identity(RFC8032_SECRET, EVM_KEY)
    assert ident.public_key_bytes == RFC8032_PUBLIC
    assert ident.sign(b"") == RFC8032_SIG_EMPTY
    verify_signature(ident.did, b"", RFC8032_SIG_EMPTY)
    verify_signature(ident.did, b"", encode_signature(RFC8032_SIG_EMPTY))


def test_did_round_trips_through_the_public_key() -> None:
    ident = Identity.generate()
    assert ident.did.startswith("did:key:z6Mk")
    assert did_from_public_key(public_key_from_did(ident.did)) == ident.did
    assert did_from_public_key(public_key_from_did(ident.key_id)) == ident.did
    assert did_from_public_key(ident.public_key_bytes) == ident.did


def test_generated_identities_differ() -> None:
    a, b = Identity.generate(), Identity.generate()
    assert a.did != b.did
    assert a.address != b.address


@pytest.mark.parametrize(
    ("did", "needle"),
    [
        ("did:web:example.com", "not a did:key"),
        ("did:key:6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp", "base58btc"),
        ("did:key:z0OIl", "not valid base58btc"),
        # A secp256k1 did:key (multicodec 0xe7): valid, but not Ed25519.
        ("did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme", "not an Ed25519"),
        ("did:key:" + multibase.encode(b"\xed\x01" + bytes(31), "base58btc"), "keys have 32 bytes"),
        (ZERO_SEED_DID + "#z6MkOther", "fragment"),
        ("", "not a did:key"),
    ],
)
def test_invalid_dids_are_rejected_with_one_line(did: str, needle: str) -> None:
    with pytest.raises(InvalidDid) as info:
        public_key_from_did(did)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_key_id_rejects_invalid_did() -> None:
    with pytest.raises(InvalidDid):
        key_id("did:example:123")


def test_signature_by_another_key_fails() -> None:
    a, b = Identity.generate(), Identity.generate()
    with pytest.raises(InvalidSignature, match="does not verify"):
        verify_signature(b.did, b"msg", a.sign(b"msg"))


def test_signature_over_other_bytes_fails() -> None:
    a = Identity.generate()
    with pytest.raises(InvalidSignature):
        verify_signature(a.did, b"msg!", a.sign(b"msg"))


@pytest.mark.parametrize("signature", [b"\x00" * 63, "not base64!!", "AAAA"])
def test_malformed_signature_fails(signature: bytes | str) -> None:
    with pytest.raises(InvalidSignature):
        verify_signature(ZERO_SEED_DID, b"", signature)


def test_wrong_length_secrets_are_rejected() -> None:
    with pytest.raises(IdentityError, match="32 bytes"):
        Identity(bytes(31), EVM_KEY)
    with pytest.raises(IdentityError, match="32 bytes"):
        Identity(bytes(32), bytes(33))


def test_out_of_range_evm_key_is_rejected_without_echoing_it() -> None:
    with pytest.raises(IdentityError) as info:
        Identity(bytes(32), bytes(32))  # zero is not a valid secp256k1 key
    assert "00" * 32 not in str(info.value)


def test_repr_and_str_redact_secrets() -> None:
    ident = Identity.generate()
    seed, evm_key = ident.export_secrets()
    jwk_d = ident.private_jwk()["d"]
    for text in (repr(ident), str(ident), f"{ident}", repr([ident])):
        assert ident.did in text
        assert ident.address in text
        assert "redacted" in text
        for secret in (seed.hex(), evm_key.hex(), "0x" + evm_key.hex(), jwk_d):
            assert secret not in text


def test_identity_refuses_pickle_and_deepcopy() -> None:
    ident = Identity.generate()
    with pytest.raises(TypeError, match="keystore"):
        pickle.dumps(ident)
    with pytest.raises(TypeError):
        copy.deepcopy(ident)


def test_private_jwk_matches_the_key() -> None:
    ident = Identity(RFC8032_SECRET, EVM_KEY)
    jwk = ident.private_jwk()
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519"
    # base64url of RFC 8032's public key, as in RFC 8037 appendix A.
    assert jwk["x"] == "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    assert jwk["d"] == "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"


def test_evm_personal_sign_recovers_the_address() -> None:
    from eth_account import Account
    from eth_account.messages import encode_defunct

    ident = Identity.generate()
    sig = ident.sign_evm_message("hello")
    assert Account.recover_message(encode_defunct(text="hello"), signature=sig) == ident.address


# --- binding ------------------------------------------------------------------------------


def test_binding_verifies() -> None:
    ident = Identity.generate()
    binding = bind_identity(ident)
    assert binding.did == ident.did and binding.address == ident.address
    verify_binding(binding)
    verify_binding(type(binding).model_validate_json(binding.model_dump_json()))


def test_binding_to_someone_elses_address_fails() -> None:
    a, b = Identity.generate(), Identity.generate()
    forged = bind_identity(a).model_copy(update={"address": b.address})
    with pytest.raises(InvalidSignature):
        verify_binding(forged)


def test_binding_with_evm_signature_from_another_account_fails() -> None:
    a, b = Identity.generate(), Identity.generate()
    # b's EVM key signs a statement naming a's DID and a's address: recovers to b, not a.
    from chefsplan_agents.identity import binding_statement

    evm_sig = "0x" + b.sign_evm_message(binding_statement(a.did, a.address)).hex()
    forged = bind_identity(a).model_copy(update={"evm_signature": evm_sig})
    with pytest.raises(InvalidSignature, match=b.address):
        verify_binding(forged)


def test_binding_with_ed25519_signature_from_another_did_fails() -> None:
    a, b = Identity.generate(), Identity.generate()
    forged = bind_identity(a).model_copy(update={"did": b.did})
    with pytest.raises(InvalidSignature):
        verify_binding(forged)


@pytest.mark.parametrize(
    "update",
    [
        {"evm_signature": "0x1234"},
        {"evm_signature": "zz"},
        {"ed25519_signature": "AAAA"},
        {"address": "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23"},  # not checksummed
    ],
)
def test_malformed_binding_fails(update: dict[str, str]) -> None:
    binding = bind_identity(Identity(bytes(32), EVM_KEY)).model_copy(update=update)
    with pytest.raises(InvalidSignature):
        verify_binding(binding)
