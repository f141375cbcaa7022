"""Offers as Verifiable Credentials: a node's signed statement of what it serves, and the price."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import ValidationError

from chefsplan_agents.bundles._models import Offer
from chefsplan_agents.errors import BundleError, InvalidCredential
from chefsplan_agents.identity import DidBackend, Identity, issue_credential, verify_credential

__all__ = ["OFFER_CREDENTIAL_TYPE", "issue_offer", "verify_offer"]

OFFER_CREDENTIAL_TYPE = "ChefsplanOfferCredential"


def issue_offer(
    offer: Offer,
    identity: Identity,
    *,
    valid_for: timedelta = timedelta(days=30),
    issued_at: datetime | None = None,
    backend: DidBackend | None = None,
) -> str:
    """Issue an offer as a VC-JWT signed by the node's DID.

    Args:
        offer: The offer; its ``did`` and ``evm_address`` must be the identity's.
        identity: The node.
        valid_for: How long the offer stands.
        issued_at: Issuance time (default now).
        backend: The DID backend (default pure Python).

    Returns:
        The compact JWS to store (e.g. on IPFS) and register by CID.

    Raises:
        BundleError: The offer names another DID or address than the identity's.
    """
    if offer.did != identity.did or offer.evm_address != identity.address:
        raise BundleError(
            f"offer names {offer.did} / {offer.evm_address} but the identity is "
            f"{identity.did} / {identity.address}"
        )
    return issue_credential(
        identity,
        offer.model_dump(mode="json"),
        types=[OFFER_CREDENTIAL_TYPE],
        issued_at=issued_at,
        valid_for=valid_for,
        backend=backend,
    )


def verify_offer(
    token: str,
    *,
    expected_issuer: str | None = None,
    now: datetime | None = None,
    backend: DidBackend | None = None,
) -> Offer:
    """Verify an offer credential and return the offer.

    Args:
        token: The VC-JWT.
        expected_issuer: If given, the node DID the offer must come from.
        now: The time to check validity at (default now).
        backend: The DID backend (default pure Python).

    Returns:
        The offer, whose ``did`` is the credential's issuer.

    Raises:
        InvalidCredential: Bad signature, expired, wrong issuer or type, a subject that is not
            an offer, or an offer that names another DID than its issuer.
    """
    credential = verify_credential(
        token,
        expected_issuer=expected_issuer,
        expected_type=OFFER_CREDENTIAL_TYPE,
        now=now,
        backend=backend,
    )
    try:
        offer = Offer.model_validate(credential.subject)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "offer"
        raise InvalidCredential(f"offer credential field {where!r}: {first['msg']}") from err
    if offer.did != credential.issuer:
        raise InvalidCredential(f"offer names {offer.did} but was issued by {credential.issuer}")
    return offer
