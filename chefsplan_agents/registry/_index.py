"""``RegistryIndex``: a local SQLite cache of the ``AgentRegistry``, built from its events.

Reading the registry through contract calls costs one ``getProvider`` round trip per provider
per question. The index instead folds the registry's events — ``ProviderRegistered``,
``OfferUpdated``, ``StakeAdded``, ``UnstakeRequested``, ``StakeWithdrawn``, ``StakeSlashed``,
``ReputationUpdated`` — into one SQLite table, fetches and verifies each provider's offer once
(:meth:`RegistryIndex.resolve_offers`), and answers :meth:`RegistryIndex.query` with indexed SQL.

Ingestion is append-only and idempotent: every log is applied at most once, keyed by
``(block number, log index)``, and the index remembers the last block it has seen in full.
Reorganisations are not handled; index a chain whose blocks are final, or sync with a lag
(``to_block = head - confirmations``).

Logs come from a :class:`LogSource`: any callable ``(from_block, to_block) -> logs``.
:class:`ChainLogSource` reads them through the chain layer, :class:`Web3LogSource` straight
from a ``web3.Web3`` (one ``eth_getLogs`` per page, decoded against the contract ABI).

Ranking: :func:`reputation_score` is the lower bound of the 95 % Wilson score interval of the
provider's success rate, counting wins and passed audits as successes, slashes and failed
audits as failures (a lost task is also a slash on chain, so it is counted once), plus one
pseudo-success and one pseudo-failure so a newcomer (0.09) ranks above a provider with a poor
record but below one with a good one. Ties go to the larger stake, then the faster offer.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils.address import is_address, to_checksum_address
from eth_utils.crypto import keccak

from chefsplan_agents import _json
from chefsplan_agents.bundles import check_tags
from chefsplan_agents.chain import BoundContract, Chain, Event, load_artifact
from chefsplan_agents.errors import ChainError, ChefsplanError, RegistryError
from chefsplan_agents.identity import DidBackend
from chefsplan_agents.registry._client import Reputation
from chefsplan_agents.registry._offers import (
    MAX_OFFER_BYTES,
    OfferRejected,
    OfferStatus,
    OfferTerms,
    OfferUnavailable,
    check_offer,
    fetch_offer,
)
from chefsplan_agents.storage import ContentStore

__all__ = [
    "REGISTRY_EVENTS",
    "ChainLogSource",
    "IndexedProvider",
    "LogSource",
    "RegistryIndex",
    "RegistryLog",
    "ResolveResult",
    "SyncResult",
    "Web3LogSource",
    "reputation_score",
]

log = logging.getLogger(__name__)

REGISTRY_EVENTS: tuple[str, ...] = (
    "ProviderRegistered",
    "OfferUpdated",
    "StakeAdded",
    "UnstakeRequested",
    "StakeWithdrawn",
    "StakeSlashed",
    "ReputationUpdated",
)
"""The ``AgentRegistry`` events the index folds; other events are recorded as seen and skipped."""

SCHEMA_VERSION = "2"
DEFAULT_PAGE_BLOCKS = 2_000
_WILSON_Z = 1.96
# Wei amounts exceed SQLite's 64-bit integers; zero-padded decimal text of a fixed width
# compares and sorts like the number, so indexes on it still serve range filters.
_STAKE_DIGITS = 30  # uint96 has at most 29 decimal digits
_PRICE_DIGITS = 78  # uint256 has at most 78


def _stake_key(value: int) -> str:
    return str(value).zfill(_STAKE_DIGITS)


def _price_key(value: int) -> str:
    return str(value).zfill(_PRICE_DIGITS)


def reputation_score(reputation: Reputation) -> float:
    """The ranking score of a provider's counters, in ``(0, 1)``.

    The lower bound of the 95 % Wilson interval of ``(good + 1) / (good + bad + 2)`` with
    ``good = won + audits_passed`` and ``bad = slashed + audits_failed``. It grows with both
    the success rate and the evidence behind it: 0.09 for a newcomer, 0.65 after ten clean
    wins, 0.04 after one win and ten slashes.
    """
    good = reputation.won + reputation.audits_passed + 1
    n = good + reputation.slashed + reputation.audits_failed + 1
    p = good / n
    z2 = _WILSON_Z * _WILSON_Z
    centre = p + z2 / (2 * n)
    margin = _WILSON_Z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return (centre - margin) / (1 + z2 / n)


# ---------------------------------------------------------------------------- log sources


@runtime_checkable
class RegistryLog(Protocol):
    """The shape of one decoded registry log (:class:`chefsplan_agents.chain.Event` has it)."""

    @property
    def name(self) -> str: ...

    @property
    def address(self) -> str: ...

    @property
    def args(self) -> Mapping[str, Any]: ...

    @property
    def block_number(self) -> int: ...

    @property
    def log_index(self) -> int: ...


class LogSource(Protocol):
    """Anything that returns the registry's decoded logs in an inclusive block range.

    A source may also have a ``latest_block() -> int`` method; :meth:`RegistryIndex.sync` uses
    it to find where to stop when no ``to_block`` is given. A ``chain_id() -> int`` method
    binds the index to that chain (offers must name it, see :meth:`RegistryIndex.resolve_offers`).
    """

    def __call__(self, from_block: int, to_block: int) -> Iterable[RegistryLog]: ...


class ChainLogSource:
    """Registry logs through the chain layer (:meth:`BoundContract.get_logs`).

    One ``eth_getLogs`` per event kind and page, merged into chain order.

    Args:
        contract: The bound ``AgentRegistry``.
    """

    def __init__(self, contract: BoundContract) -> None:
        if contract.name != "AgentRegistry":
            raise RegistryError(f"ChainLogSource needs an AgentRegistry, not {contract.name}")
        self.contract = contract

    @property
    def address(self) -> str:
        """The registry's address."""
        return self.contract.address

    def chain_id(self) -> int:
        """The chain's EIP-155 id."""
        return self.contract.chain.chain_id

    def latest_block(self) -> int:
        """The chain's head block."""
        return self.contract.chain.block_number()

    def __call__(self, from_block: int, to_block: int) -> list[Event]:
        events: list[Event] = []
        for name in REGISTRY_EVENTS:
            events.extend(self.contract.get_logs(name, from_block=from_block, to_block=to_block))
        events.sort(key=lambda e: (e.block_number, e.log_index))
        return events


class Web3LogSource:
    """Registry logs straight from web3: one ``eth_getLogs`` per page, decoded with the ABI.

    Args:
        w3: A connected ``web3.Web3``.
        address: The ``AgentRegistry`` address.
        abi: The contract ABI (default: the packaged ``AgentRegistry`` artifact's).
    """

    def __init__(self, w3: Any, address: str, *, abi: Sequence[Mapping[str, Any]] | None = None):
        if not isinstance(address, str) or not is_address(address):
            raise RegistryError(f"registry address must be 0x + 40 hex digits, got {address!r}")
        self.w3 = w3
        self.address = str(to_checksum_address(address))
        entries = abi if abi is not None else load_artifact("AgentRegistry").abi
        self._events: dict[bytes, Mapping[str, Any]] = {}
        for entry in entries:
            if entry.get("type") == "event" and not entry.get("anonymous"):
                types = ",".join(str(p["type"]) for p in entry.get("inputs", []))
                self._events[keccak(text=f"{entry['name']}({types})")] = entry

    def latest_block(self) -> int:
        """The chain's head block."""
        try:
            return int(self.w3.eth.block_number)
        except Exception as err:
            raise ChainError(f"cannot read the head block: {err}") from err

    def chain_id(self) -> int:
        """The chain's EIP-155 id."""
        try:
            return int(self.w3.eth.chain_id)
        except Exception as err:
            raise ChainError(f"cannot read the chain id: {err}") from err

    def __call__(self, from_block: int, to_block: int) -> list[Event]:
        params = {"address": self.address, "fromBlock": from_block, "toBlock": to_block}
        try:
            raw_logs = self.w3.eth.get_logs(params)
        except Exception as err:
            raise ChainError(
                f"eth_getLogs for the registry at {self.address}, blocks {from_block}-{to_block} "
                f"failed: {err}"
            ) from err
        out = [e for e in (self.decode(raw) for raw in raw_logs) if e is not None]
        out.sort(key=lambda e: (e.block_number, e.log_index))
        return out

    def decode(self, raw: Mapping[str, Any]) -> Event | None:
        """Decode one raw log; ``None`` for a log of an event not in the ABI."""
        topics = [bytes(t) for t in raw.get("topics", [])]
        entry = self._events.get(topics[0]) if topics else None
        if entry is None:
            return None
        inputs = entry.get("inputs", [])
        indexed = [p for p in inputs if p.get("indexed")]
        plain = [p for p in inputs if not p.get("indexed")]
        if len(indexed) != len(topics) - 1:
            return None
        args: dict[str, Any] = {}
        try:
            for param, topic in zip(indexed, topics[1:], strict=True):
                typ = str(param["type"])
                # An indexed dynamic value is only its hash.
                dynamic = typ in ("string", "bytes") or typ.endswith("]")
                args[param["name"]] = topic if dynamic else abi_decode([typ], topic)[0]
            data = raw.get("data", b"")
            data = bytes.fromhex(data[2:]) if isinstance(data, str) else bytes(data)
            values = abi_decode([str(p["type"]) for p in plain], data)
        except (DecodingError, ValueError) as err:
            raise ChainError(f"cannot decode a {entry['name']} log: {err}") from err
        for param, value in zip(plain, values, strict=True):
            args[param["name"]] = value
        for param in inputs:
            if param["type"] == "address":
                args[param["name"]] = to_checksum_address(args[param["name"]])
        tx_hash = raw.get("transactionHash", b"")
        return Event(
            name=str(entry["name"]),
            address=str(to_checksum_address(raw["address"])),
            args={p["name"]: args[p["name"]] for p in inputs},
            block_number=int(raw["blockNumber"]),
            tx_hash=tx_hash if isinstance(tx_hash, str) else "0x" + bytes(tx_hash).hex(),
            log_index=int(raw["logIndex"]),
        )


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True)
class IndexedProvider:
    """One provider as the index knows it.

    Attributes:
        address: The provider's EVM address.
        did: Its registered DID.
        offer_cid: CID of its current offer.
        offer_hash: The registered ``offerHash`` (sha256 of the offer bytes).
        stake: Wei staked.
        active: Registered and not unstaking.
        unstake_available_at: Unix time its stake unlocks (0 if no unstake was requested).
        reputation: Its counters.
        score: :func:`reputation_score` of the counters.
        offer_status: Where the index stands with the current offer.
        offer_reason: Why the offer is ``invalid`` or ``missing`` (``None`` otherwise).
        offer: The verified offer's terms (``None`` unless ``offer_status`` is ``valid``).
        registered_block: Block of the registration.
    """

    address: str
    did: str
    offer_cid: str
    offer_hash: bytes
    stake: int
    active: bool
    unstake_available_at: int
    reputation: Reputation
    score: float
    offer_status: OfferStatus
    offer_reason: str | None
    offer: OfferTerms | None
    registered_block: int


@dataclass(frozen=True)
class SyncResult:
    """What one :meth:`RegistryIndex.sync` did.

    Attributes:
        from_block: First block read (``to_block + 1`` when already up to date).
        to_block: Last block read; the index's ``last_block`` afterwards.
        logs: Logs applied (logs seen before are not counted).
        pages: ``eth_getLogs`` pages read.
    """

    from_block: int
    to_block: int
    logs: int
    pages: int


@dataclass(frozen=True)
class ResolveResult:
    """What one :meth:`RegistryIndex.resolve_offers` did: offers checked, by outcome."""

    valid: int = 0
    invalid: int = 0
    missing: int = 0

    @property
    def checked(self) -> int:
        """Offers looked at."""
        return self.valid + self.invalid + self.missing


# ---------------------------------------------------------------------------- the index

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS applied_logs (
    block_number INTEGER NOT NULL,
    log_index INTEGER NOT NULL,
    PRIMARY KEY (block_number, log_index)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS providers (
    address TEXT PRIMARY KEY,
    did TEXT NOT NULL,
    registered_block INTEGER NOT NULL,
    offer_cid TEXT NOT NULL,
    offer_hash BLOB NOT NULL,
    stake TEXT NOT NULL,
    active INTEGER NOT NULL,
    unstake_available_at INTEGER NOT NULL DEFAULT 0,
    won INTEGER NOT NULL DEFAULT 0,
    lost INTEGER NOT NULL DEFAULT 0,
    slashed INTEGER NOT NULL DEFAULT 0,
    audits_passed INTEGER NOT NULL DEFAULT 0,
    audits_failed INTEGER NOT NULL DEFAULT 0,
    score REAL NOT NULL,
    offer_status TEXT NOT NULL DEFAULT '{OfferStatus.PENDING.value}',
    offer_reason TEXT,
    model_name TEXT,
    model_sha256 TEXT,
    quantization TEXT,
    context_length INTEGER,
    generation_tps REAL,
    prefill_tps REAL,
    price TEXT,
    endpoint TEXT,
    expires_at INTEGER,
    tags TEXT
);
CREATE INDEX IF NOT EXISTS providers_rank
    ON providers (offer_status, active, score DESC, stake DESC);
CREATE INDEX IF NOT EXISTS providers_model ON providers (model_name, offer_status, active);
CREATE INDEX IF NOT EXISTS providers_model_sha ON providers (model_sha256);
CREATE INDEX IF NOT EXISTS providers_speed ON providers (generation_tps);
CREATE INDEX IF NOT EXISTS providers_price ON providers (price);
CREATE INDEX IF NOT EXISTS providers_stake ON providers (stake);
CREATE INDEX IF NOT EXISTS providers_did ON providers (did);
"""

_COLUMNS = (
    "address, did, registered_block, offer_cid, offer_hash, stake, active, "
    "unstake_available_at, won, lost, slashed, audits_passed, audits_failed, score, "
    "offer_status, offer_reason, model_name, model_sha256, quantization, context_length, "
    "generation_tps, prefill_tps, price, endpoint, expires_at, tags"
)

_CLEAR_OFFER = (
    "offer_reason = NULL, model_name = NULL, model_sha256 = NULL, quantization = NULL, "
    "context_length = NULL, generation_tps = NULL, prefill_tps = NULL, price = NULL, "
    "endpoint = NULL, expires_at = NULL, tags = NULL"
)


def _row_to_provider(row: sqlite3.Row) -> IndexedProvider:
    status = OfferStatus(row["offer_status"])
    terms = None
    if status is OfferStatus.VALID:
        terms = OfferTerms(
            model_name=row["model_name"],
            model_sha256=row["model_sha256"],
            quantization=row["quantization"],
            context_length=int(row["context_length"]),
            generation_tokens_per_s=float(row["generation_tps"]),
            prefill_tokens_per_s=float(row["prefill_tps"]),
            price_per_1k_tokens_wei=int(row["price"]),
            endpoint=row["endpoint"],
            expires_at=row["expires_at"],
            tags=_json.loads(row["tags"]) if row["tags"] else {},
        )
    return IndexedProvider(
        address=row["address"],
        did=row["did"],
        offer_cid=row["offer_cid"],
        offer_hash=bytes(row["offer_hash"]),
        stake=int(row["stake"]),
        active=bool(row["active"]),
        unstake_available_at=int(row["unstake_available_at"]),
        reputation=Reputation(
            won=row["won"],
            lost=row["lost"],
            slashed=row["slashed"],
            audits_passed=row["audits_passed"],
            audits_failed=row["audits_failed"],
        ),
        score=float(row["score"]),
        offer_status=status,
        offer_reason=row["offer_reason"],
        offer=terms,
        registered_block=int(row["registered_block"]),
    )


def _arg(event: RegistryLog, name: str) -> Any:
    try:
        return event.args[name]
    except KeyError:
        raise RegistryError(
            f"{event.name} log at block {event.block_number} lacks argument {name!r}; "
            "decode logs with the AgentRegistry ABI"
        ) from None


def _as_bytes32(value: Any, what: str) -> bytes:
    if isinstance(value, str):
        value = bytes.fromhex(value[2:] if value[:2].lower() == "0x" else value)
    raw = bytes(value)
    if len(raw) != 32:
        raise RegistryError(f"{what} must be 32 bytes, got {len(raw)}")
    return raw


class RegistryIndex:
    """A local, queryable cache of one ``AgentRegistry``'s state, built from its events.

    Example:
        >>> index = RegistryIndex(":memory:")
        >>> index.sync(ChainLogSource(deployment.registry))  # doctest: +SKIP
        >>> index.resolve_offers(store)  # doctest: +SKIP
        >>> index.query(model="smollm2-135m", max_price=10**12)  # doctest: +SKIP

    Thread-safe (one connection behind a lock); a context manager that closes the database.

    Args:
        path: The SQLite file (created if absent), or ``":memory:"``.
        registry_address: The registry this index caches. If omitted it is bound by the first
            sync or log; an existing file bound to another registry is refused.
        chain_id: The chain the registry lives on. If omitted it is bound by the first sync
            from a source that knows it (a ``Chain``, the bound contract, the log sources here).

    Raises:
        RegistryError: The file is not an index database, has another schema version, or
            caches another registry or chain.
    """

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        registry_address: str | None = None,
        chain_id: int | None = None,
    ):
        self.path = str(path) if str(path) == ":memory:" else str(Path(path).expanduser())
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:
            raise RegistryError(
                f"{self.path} is not a registry index database ({err}); give another path"
            ) from err
        version = self._meta("schema_version")
        if version == "1":
            self._migrate_from_1()
            version = SCHEMA_VERSION
        if version is None:
            self._set_meta("schema_version", SCHEMA_VERSION)
        elif version != SCHEMA_VERSION:
            self._db.close()
            raise RegistryError(
                f"{self.path} holds index schema {version}, this version reads {SCHEMA_VERSION}; "
                "delete the file to rebuild it"
            )
        if registry_address is not None:
            self._bind(registry_address)
        if chain_id is not None:
            self._bind_chain(chain_id)

    def _migrate_from_1(self) -> None:
        """Schema 1 had no offer tags: add the column and check every valid offer again, so
        its tags are read (the offers themselves are unchanged)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("ALTER TABLE providers ADD COLUMN tags TEXT")
                self._db.execute(
                    "UPDATE providers SET offer_status = ? WHERE offer_status = ?",
                    (OfferStatus.PENDING.value, OfferStatus.VALID.value),
                )
                self._db.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,)
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"RegistryIndex({self.path!r}, registry={self.registry_address}, "
            f"last_block={self.last_block})"
        )

    # ------------------------------------------------------------------ meta

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def _bind(self, address: str) -> str:
        if not isinstance(address, str) or not is_address(address):
            raise RegistryError(f"registry address must be 0x + 40 hex digits, got {address!r}")
        checksum = str(to_checksum_address(address))
        with self._lock:
            bound = self._meta("registry_address")
            if bound is None:
                self._set_meta("registry_address", checksum)
            elif bound != checksum:
                raise RegistryError(
                    f"index {self.path} caches the registry at {bound}, not {checksum}; "
                    "use another index file per registry"
                )
        return checksum

    def _bind_chain(self, chain_id: int) -> int:
        if isinstance(chain_id, bool) or not isinstance(chain_id, int) or chain_id < 1:
            raise RegistryError(f"chain_id must be a positive integer, got {chain_id!r}")
        with self._lock:
            bound = self._meta("chain_id")
            if bound is None:
                self._set_meta("chain_id", str(chain_id))
            elif int(bound) != chain_id:
                raise RegistryError(
                    f"index {self.path} caches a registry on chain {bound}, not {chain_id}; "
                    "use another index file per registry"
                )
        return chain_id

    @property
    def chain_id(self) -> int | None:
        """The chain the indexed registry lives on (``None`` until bound)."""
        with self._lock:
            value = self._meta("chain_id")
        return None if value is None else int(value)

    @property
    def registry_address(self) -> str | None:
        """The registry this index caches (``None`` until bound)."""
        with self._lock:
            return self._meta("registry_address")

    @property
    def last_block(self) -> int | None:
        """The last block indexed in full (``None`` before the first sync)."""
        with self._lock:
            value = self._meta("last_block")
        return None if value is None else int(value)

    # ------------------------------------------------------------------ ingestion

    def apply_logs(self, logs: Iterable[RegistryLog], *, up_to_block: int | None = None) -> int:
        """Fold decoded registry logs into the index, in chain order, each at most once.

        All logs are applied in one database transaction: on an error nothing is applied.

        Args:
            logs: Decoded logs of the registry (any order; they are sorted by block and index).
            up_to_block: The block range the logs cover was read in full up to here; becomes
                :attr:`last_block` (default: the highest block among the logs).

        Returns:
            How many logs were new.

        Raises:
            RegistryError: A log comes from another contract, lacks an argument, or changes a
                provider the index has no registration for (index from the deployment block).
        """
        ordered = sorted(logs, key=lambda e: (int(e.block_number), int(e.log_index)))
        applied = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for address in {e.address for e in ordered}:
                    self._bind(address)
                for event in ordered:
                    inserted = self._db.execute(
                        "INSERT OR IGNORE INTO applied_logs (block_number, log_index) "
                        "VALUES (?, ?)",
                        (int(event.block_number), int(event.log_index)),
                    ).rowcount
                    if not inserted:
                        continue
                    applied += 1
                    self._apply(event)
                last = max((int(e.block_number) for e in ordered), default=None)
                if up_to_block is not None:
                    last = up_to_block if last is None else max(last, up_to_block)
                current = self._meta("last_block")
                if last is not None and (current is None or last > int(current)):
                    self._set_meta("last_block", str(last))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if applied:
            log.debug("indexed %d registry logs", applied)
        return applied

    def _apply(self, event: RegistryLog) -> None:
        name = event.name
        if name not in REGISTRY_EVENTS:
            return
        provider = str(to_checksum_address(_arg(event, "provider")))
        db = self._db
        if name == "ProviderRegistered":
            default = reputation_score(Reputation())
            # An address registers again after withdrawing its stake: a new DID and offer,
            # the same reputation counters (the registry keeps them per address).
            db.execute(
                "INSERT INTO providers (address, did, registered_block, offer_cid, offer_hash, "
                "stake, active, score) VALUES (?, ?, ?, ?, ?, ?, 1, ?) "
                "ON CONFLICT (address) DO UPDATE SET did = excluded.did, "
                "registered_block = excluded.registered_block, offer_cid = excluded.offer_cid, "
                "offer_hash = excluded.offer_hash, stake = excluded.stake, active = 1, "
                f"unstake_available_at = 0, offer_status = '{OfferStatus.PENDING.value}', "
                f"{_CLEAR_OFFER}",
                (
                    provider,
                    str(_arg(event, "did")),
                    int(event.block_number),
                    str(_arg(event, "offerCid")),
                    _as_bytes32(_arg(event, "offerHash"), "offerHash"),
                    _stake_key(int(_arg(event, "stake"))),
                    default,
                ),
            )
            return
        if name == "OfferUpdated":
            sql = (
                "UPDATE providers SET offer_cid = ?, offer_hash = ?, offer_status = ?, "
                f"{_CLEAR_OFFER} WHERE address = ?"
            )
            params: tuple[Any, ...] = (
                str(_arg(event, "offerCid")),
                _as_bytes32(_arg(event, "offerHash"), "offerHash"),
                OfferStatus.PENDING.value,
                provider,
            )
        elif name == "StakeAdded":
            # Topping up after a slash makes a provider active again (unless it is unstaking).
            sql = (
                "UPDATE providers SET stake = ?, "
                "active = CASE WHEN unstake_available_at = 0 THEN 1 ELSE 0 END WHERE address = ?"
            )
            params = (_stake_key(int(_arg(event, "stake"))), provider)
        elif name == "StakeSlashed":
            # A panel upheld a challenge against it: it falls below the registry's minimum
            # stake (inactive on chain until it tops up), and is not routed to meanwhile.
            sql = "UPDATE providers SET stake = ?, active = 0 WHERE address = ?"
            params = (_stake_key(int(_arg(event, "stake"))), provider)
        elif name == "UnstakeRequested":
            sql = "UPDATE providers SET active = 0, unstake_available_at = ? WHERE address = ?"
            params = (int(_arg(event, "availableAt")), provider)
        elif name == "StakeWithdrawn":
            # The registration ended: the registry cleared its DID and offer.
            sql = (
                "UPDATE providers SET stake = ?, active = 0, unstake_available_at = 0, did = '', "
                f"offer_cid = '', offer_hash = ?, offer_status = ?, {_CLEAR_OFFER}, "
                "offer_reason = ? WHERE address = ?"
            )
            params = (
                _stake_key(0),
                b"\x00" * 32,
                OfferStatus.INVALID.value,
                "unregistered: the provider withdrew its stake",
                provider,
            )
        else:  # ReputationUpdated: the event carries the absolute counters
            rep = Reputation(
                won=int(_arg(event, "won")),
                lost=int(_arg(event, "lost")),
                slashed=int(_arg(event, "slashed")),
                audits_passed=int(_arg(event, "auditsPassed")),
                audits_failed=int(_arg(event, "auditsFailed")),
            )
            sql = (
                "UPDATE providers SET won = ?, lost = ?, slashed = ?, audits_passed = ?, "
                "audits_failed = ?, score = ? WHERE address = ?"
            )
            params = (
                rep.won,
                rep.lost,
                rep.slashed,
                rep.audits_passed,
                rep.audits_failed,
                reputation_score(rep),
                provider,
            )
        if db.execute(sql, params).rowcount == 0:
            raise RegistryError(
                f"{name} at block {event.block_number} for {provider}, which the index has no "
                "registration for; sync from the registry's deployment block"
            )

    def sync(
        self,
        source: LogSource | Chain | BoundContract,
        registry_address: str | None = None,
        *,
        to_block: int | None = None,
        start_block: int = 0,
        page_blocks: int = DEFAULT_PAGE_BLOCKS,
    ) -> SyncResult:
        """Read the registry's logs since :attr:`last_block` and apply them, page by page.

        Args:
            source: A :class:`LogSource` (any callable ``(from_block, to_block) -> logs``), a
                :class:`~chefsplan_agents.chain.Chain` (with ``registry_address``) or the bound
                ``AgentRegistry`` contract.
            registry_address: The registry's address (needed with a ``Chain``; checked against
                the index's).
            to_block: Last block to read (default: the source's ``latest_block()``).
            start_block: Where the first sync of an empty index starts (the deployment block
                spares scanning older blocks).
            page_blocks: Blocks per ``eth_getLogs`` request.

        Returns:
            What was read and applied.

        Raises:
            RegistryError: Bad arguments, another registry's index, or a log the index cannot
                apply (see :meth:`apply_logs`).
            ChainError: Reading logs from the chain failed.
        """
        if page_blocks < 1:
            raise RegistryError(f"page_blocks must be at least 1, got {page_blocks}")
        if start_block < 0:
            raise RegistryError(f"start_block must not be negative, got {start_block}")
        reader = self._reader(source, registry_address)
        if to_block is None:
            latest = getattr(reader, "latest_block", None)
            if not callable(latest):
                raise RegistryError(
                    "this log source cannot tell the head block; pass to_block explicitly"
                )
            to_block = int(latest())
        last = self.last_block
        first = start_block if last is None else last + 1
        applied = pages = 0
        page_start = first
        while page_start <= to_block:
            page_end = min(page_start + page_blocks - 1, to_block)
            try:
                logs = list(reader(page_start, page_end))
            except ChefsplanError:
                raise
            except Exception as err:
                raise ChainError(
                    f"reading registry logs for blocks {page_start}-{page_end} failed: {err}"
                ) from err
            for event in logs:
                if not page_start <= int(event.block_number) <= page_end:
                    raise RegistryError(
                        f"the log source returned a log of block {event.block_number} for "
                        f"blocks {page_start}-{page_end}"
                    )
            applied += self.apply_logs(logs, up_to_block=page_end)
            pages += 1
            page_start = page_end + 1
        log.info("registry index synced blocks %d-%d: %d logs", first, to_block, applied)
        return SyncResult(
            from_block=first, to_block=max(to_block, first - 1), logs=applied, pages=pages
        )

    def _reader(
        self, source: LogSource | Chain | BoundContract, registry_address: str | None
    ) -> Callable[[int, int], Iterable[RegistryLog]]:
        if isinstance(source, Chain):
            if registry_address is None:
                raise RegistryError("sync from a Chain needs the registry_address")
            address = self._bind(registry_address)
            self._bind_chain(source.chain_id)
            return ChainLogSource(source.contract("AgentRegistry", address))
        if isinstance(source, BoundContract):
            source = ChainLogSource(source)
        if not callable(source):
            raise RegistryError(
                f"cannot read logs from a {type(source).__name__}; give a Chain, the bound "
                "AgentRegistry or a callable (from_block, to_block) -> logs"
            )
        own = getattr(source, "address", None)
        if registry_address is not None:
            bound = self._bind(registry_address)
            if isinstance(own, str) and is_address(own) and to_checksum_address(own) != bound:
                raise RegistryError(f"the log source reads {own}, not the registry at {bound}")
        elif isinstance(own, str) and is_address(own):
            self._bind(own)
        chain_id = getattr(source, "chain_id", None)
        if callable(chain_id):
            self._bind_chain(int(chain_id()))
        return source

    # ------------------------------------------------------------------ offers

    def resolve_offers(
        self,
        store: ContentStore,
        *,
        now: datetime | None = None,
        backend: DidBackend | None = None,
        max_bytes: int = MAX_OFFER_BYTES,
    ) -> ResolveResult:
        """Fetch and check every offer not checked yet (new, changed or missing before).

        For each one: read the bytes by CID (the store re-hashes them), compare their sha256
        with the registered ``offerHash``, verify the VC-JWT with
        :func:`~chefsplan_agents.bundles.verify_offer` with the registered DID as the expected
        issuer, and check the offer names the provider's address, this index's chain and its
        registry. A failing offer is kept as ``invalid`` with its reason and never returned by
        :meth:`query`; one the store does not hold is ``missing`` and tried again next time.

        This check is what makes a registered DID mean anything: the registry lets any address
        name any DID, and only a credential signed by the DID's key naming that address shows
        the DID's controller stands behind the registration.

        Args:
            store: Where offers are stored.
            now: The time to check credential validity at (default now).
            backend: The DID backend that verifies signatures (default pure Python).
            max_bytes: Refuse offers larger than this.

        Returns:
            How many offers turned out valid, invalid and missing.

        Raises:
            RegistryError: The index does not know its chain or registry yet (sync first, or
                give ``chain_id`` to the constructor).
        """
        chain_id, registry = self.chain_id, self.registry_address
        if chain_id is None or registry is None:
            raise RegistryError(
                "the index does not know its chain id and registry address yet: sync from a "
                "Chain or the bound registry first, or pass chain_id= and registry_address="
            )
        with self._lock:
            rows = self._db.execute(
                "SELECT address, did, offer_cid, offer_hash FROM providers "
                "WHERE offer_status IN (?, ?) ORDER BY address",
                (OfferStatus.PENDING.value, OfferStatus.MISSING.value),
            ).fetchall()
        counts = {OfferStatus.VALID: 0, OfferStatus.INVALID: 0, OfferStatus.MISSING: 0}
        for row in rows:
            cid, registered = str(row["offer_cid"]), bytes(row["offer_hash"])
            terms: OfferTerms | None = None
            reason: str | None = None
            try:
                data = fetch_offer(store, cid, max_bytes=max_bytes)
                terms = check_offer(
                    data,
                    registered_hash=registered,
                    did=row["did"],
                    address=row["address"],
                    chain_id=chain_id,
                    registry=registry,
                    now=now,
                    backend=backend,
                )
                status = OfferStatus.VALID
            except OfferUnavailable as err:
                status, reason = OfferStatus.MISSING, err.reason
            except OfferRejected as err:
                status, reason = OfferStatus.INVALID, err.reason
            if reason is not None:
                log.info("offer %s of %s is %s: %s", cid, row["address"], status.value, reason)
            self._store_offer(row["address"], cid, registered, status, reason, terms)
            counts[status] += 1
        return ResolveResult(
            valid=counts[OfferStatus.VALID],
            invalid=counts[OfferStatus.INVALID],
            missing=counts[OfferStatus.MISSING],
        )

    def _store_offer(
        self,
        address: str,
        cid: str,
        registered: bytes,
        status: OfferStatus,
        reason: str | None,
        terms: OfferTerms | None,
    ) -> None:
        values: tuple[Any, ...] = (None,) * 10
        if terms is not None:
            values = (
                terms.model_name,
                terms.model_sha256,
                terms.quantization,
                terms.context_length,
                terms.generation_tokens_per_s,
                terms.prefill_tokens_per_s,
                _price_key(terms.price_per_1k_tokens_wei),
                terms.endpoint,
                terms.expires_at,
                json.dumps(dict(terms.tags), sort_keys=True) if terms.tags else None,
            )
        with self._lock:
            # The offer may have changed (or the provider unregistered) while it was fetched:
            # only record against the same offer, still waiting for its check.
            self._db.execute(
                "UPDATE providers SET offer_status = ?, offer_reason = ?, model_name = ?, "
                "model_sha256 = ?, quantization = ?, context_length = ?, generation_tps = ?, "
                "prefill_tps = ?, price = ?, endpoint = ?, expires_at = ?, tags = ? "
                "WHERE address = ? AND offer_cid = ? AND offer_hash = ? "
                "AND offer_status IN (?, ?)",
                (
                    status.value,
                    reason,
                    *values,
                    address,
                    cid,
                    registered,
                    OfferStatus.PENDING.value,
                    OfferStatus.MISSING.value,
                ),
            )

    # ------------------------------------------------------------------ queries

    def query(
        self,
        *,
        model: str | None = None,
        model_sha256: str | None = None,
        did: str | None = None,
        min_tokens_per_s: float | None = None,
        max_price: int | None = None,
        min_stake: int | None = None,
        active_only: bool = True,
        at: datetime | None = None,
        limit: int = 20,
        tags: Mapping[str, str] | None = None,
    ) -> list[IndexedProvider]:
        """Providers with a valid offer that match every given filter, best first.

        Ranked by :func:`reputation_score` (highest first), then stake (largest first), then
        advertised generation speed (fastest first), then address.

        Args:
            model: Exact model name.
            model_sha256: Exact GGUF sha256 (64 hex digits, case-insensitive).
            did: Exact DID: the addresses whose verified offer that DID signed (a registration
                merely naming the DID is not one of them).
            min_tokens_per_s: Least advertised generation speed.
            max_price: Highest price per 1,000 tokens, in wei.
            min_stake: Least stake, in wei.
            active_only: Leave out providers that requested an unstake.
            at: Leave out offers expired at this time (default now).
            limit: Most results to return.
            tags: Tags the signed offer must state, each with exactly this value.

        Returns:
            Matching providers, each with its offer terms.

        Raises:
            RegistryError: A filter value is out of range.
            InvalidOfferTags: ``tags`` break the tag rules.
        """
        if limit < 1:
            raise RegistryError(f"limit must be at least 1, got {limit}")
        where = ["offer_status = ?"]
        params: list[Any] = [OfferStatus.VALID.value]
        if active_only:
            where.append("active = 1")
        if model is not None:
            where.append("model_name = ?")
            params.append(model)
        if model_sha256 is not None:
            digest = model_sha256.lower().removeprefix("0x")
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise RegistryError(f"model_sha256 must be 64 hex digits, got {model_sha256!r}")
            where.append("model_sha256 = ?")
            params.append(digest)
        if did is not None:
            where.append("did = ?")
            params.append(did)
        if min_tokens_per_s is not None:
            if not math.isfinite(min_tokens_per_s) or min_tokens_per_s < 0:
                raise RegistryError(
                    f"min_tokens_per_s must be a non-negative number, got {min_tokens_per_s!r}"
                )
            where.append("generation_tps >= ?")
            params.append(float(min_tokens_per_s))
        if max_price is not None:
            if max_price < 0:
                raise RegistryError(f"max_price must not be negative, got {max_price}")
            where.append("price <= ?")
            params.append(_price_key(min(max_price, 10**_PRICE_DIGITS - 1)))
        if min_stake is not None:
            if min_stake < 0:
                raise RegistryError(f"min_stake must not be negative, got {min_stake}")
            if min_stake >= 10**_STAKE_DIGITS:
                return []
            where.append("stake >= ?")
            params.append(_stake_key(min_stake))
        for key, value in check_tags(tags or {}).items():
            # Keys are checked to [a-z0-9_.-]: quoted, one is one JSON path step.
            where.append("json_extract(tags, ?) = ?")
            params += [f'$."{key}"', value]
        moment = (at or datetime.now(UTC)).timestamp()
        where.append("(expires_at IS NULL OR expires_at > ?)")
        params.append(int(moment))
        sql = (
            f"SELECT {_COLUMNS} FROM providers WHERE {' AND '.join(where)} "
            "ORDER BY score DESC, stake DESC, generation_tps DESC, address LIMIT ?"
        )
        params.append(int(limit))
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [_row_to_provider(r) for r in rows]

    def provider(self, address: str) -> IndexedProvider | None:
        """What the index holds for ``address`` (whatever its offer's status), or ``None``."""
        if not isinstance(address, str) or not is_address(address):
            raise RegistryError(f"provider must be an EVM address, got {address!r}")
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM providers WHERE address = ?",
                (to_checksum_address(address),),
            ).fetchone()
        return None if row is None else _row_to_provider(row)

    def flagged(self) -> list[IndexedProvider]:
        """Providers whose current offer is ``invalid`` or ``missing``, with the reason."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM providers WHERE offer_status IN (?, ?) ORDER BY address",
                (OfferStatus.INVALID.value, OfferStatus.MISSING.value),
            ).fetchall()
        return [_row_to_provider(r) for r in rows]

    def count(self, status: OfferStatus | None = None) -> int:
        """Providers indexed (optionally only those whose offer has ``status``)."""
        with self._lock:
            if status is None:
                row = self._db.execute("SELECT COUNT(*) FROM providers").fetchone()
            else:
                row = self._db.execute(
                    "SELECT COUNT(*) FROM providers WHERE offer_status = ?", (status.value,)
                ).fetchone()
        return int(row[0])
