"""``chefsplan registry``: the provider nodes registered on a chain, with their offers."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from chefsplan_agents.cli._app import JsonOption, app, err, out, print_json
from chefsplan_agents.cli._network import ContractsOption, RpcOption, open_network
from chefsplan_agents.registry import IndexedProvider, OfferStatus, RegistryIndex

registry_app = typer.Typer(
    name="registry",
    help="List the provider nodes registered on the chain, with their verified offers.",
    no_args_is_help=True,
)
app.add_typer(registry_app)

_EPOCH = datetime.fromtimestamp(0, UTC)
_ETHER = 10**18


def _status(provider: IndexedProvider, now: float) -> str:
    if provider.offer_status is OfferStatus.VALID and provider.offer is not None:
        expires = provider.offer.expires_at
        if expires is not None and expires <= now:
            return "expired"
    return provider.offer_status.value


def _short(value: str, head: int) -> str:
    return value if len(value) <= head + 6 else f"{value[:head]}…{value[-4:]}"


def _ether(wei: int) -> str:
    return f"{wei / _ETHER:.4g} ETH" if wei else "0"


def _as_json(provider: IndexedProvider, now: float) -> dict[str, Any]:
    offer = provider.offer
    rep = provider.reputation
    return {
        "address": provider.address,
        "did": provider.did,
        "offer_cid": provider.offer_cid,
        "offer_status": _status(provider, now),
        "offer_reason": provider.offer_reason,
        "active": provider.active,
        "stake_wei": str(provider.stake),
        "reputation": {
            "score": round(provider.score, 4),
            "won": rep.won,
            "lost": rep.lost,
            "slashed": rep.slashed,
            "audits_passed": rep.audits_passed,
            "audits_failed": rep.audits_failed,
        },
        "model": offer.model_name if offer else None,
        "model_sha256": offer.model_sha256 if offer else None,
        "generation_tokens_per_s": offer.generation_tokens_per_s if offer else None,
        "price_per_1k_tokens_wei": str(offer.price_per_1k_tokens_wei) if offer else None,
        "endpoint": offer.endpoint if offer else None,
    }


def _table(providers: list[IndexedProvider], now: float) -> Table:
    table = Table(
        title=f"{len(providers)} provider(s), best first (full values: --json)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    columns = ("DID", "address", "model", "tok/s", "wei/1k tok", "stake", "rep (won/slashed)")
    for column in columns:
        table.add_column(column, overflow="fold")
    table.add_column("offer", no_wrap=True)
    for p in providers:
        offer = p.offer
        rep = p.reputation
        status = _status(p, now)
        if not p.active:
            status += " (unstaking)"
        table.add_row(
            _short(p.did.removeprefix("did:key:"), 8),
            _short(p.address, 8),
            offer.model_name if offer else "-",
            f"{offer.generation_tokens_per_s:.0f}" if offer else "-",
            f"{offer.price_per_1k_tokens_wei:,}" if offer else "-",
            _ether(p.stake),
            f"{p.score:.2f} ({rep.won}/{rep.slashed})",
            status,
        )
    return table


@registry_app.command("ls")
def ls_command(
    rpc: RpcOption = None,
    contracts: ContractsOption = None,
    model: Annotated[str | None, typer.Option("--model", help="Only this model name.")] = None,
    min_tps: Annotated[
        float | None, typer.Option("--min-tps", help="Least advertised tokens/s.", min=0)
    ] = None,
    max_price: Annotated[
        int | None,
        typer.Option("--max-price", help="Highest price per 1,000 tokens, in wei.", min=0),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="Most providers to list.", min=1)] = 50,
    as_json: JsonOption = False,
) -> None:
    """List registered providers: DID, address, model, speed, price, stake, reputation and
    whether their offer verified (fetched by CID from the configured store, signature checked).

    Without filters every provider is listed, also those whose offer is invalid, missing from
    the store or expired; with --model, --min-tps or --max-price only valid offers that match.
    """
    now = time.time()
    filtered = model is not None or min_tps is not None or max_price is not None
    with open_network(rpc, contracts) as net:
        registry = net.deployment.registry
        with RegistryIndex(registry_address=registry.address) as index:
            synced = index.sync(registry, start_block=net.deployment.deployed_at)
            resolved = index.resolve_offers(net.store)
            providers = index.query(
                model=model,
                min_tokens_per_s=min_tps,
                max_price=max_price,
                active_only=filtered,
                at=None if filtered else _EPOCH,
                limit=limit,
            )
            if not filtered:
                providers += index.flagged()[: max(0, limit - len(providers))]
        if not as_json:
            err.print(
                f"registry {registry.address} on {net.chain.endpoint}: {synced.logs} events to "
                f"block {synced.to_block}; offers {resolved.valid} valid, {resolved.invalid} "
                f"invalid, {resolved.missing} missing"
            )
    if as_json:
        print_json(
            {
                "registry": registry.address,
                "block": synced.to_block,
                "providers": [_as_json(p, now) for p in providers],
            }
        )
        return
    if not providers:
        out.print("no providers" + (" match" if filtered else " registered"))
        return
    out.print(_table(providers, now))
    for p in providers:
        if p.offer_reason:
            out.print(f"{p.address}: offer {p.offer_status.value}: {p.offer_reason}")
