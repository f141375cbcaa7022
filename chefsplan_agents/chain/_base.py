"""The :class:`Chain` interface and the behaviour every EVM backend shares.

A :class:`Chain` holds local private keys (never logged, never sent anywhere), signs
transactions itself and talks to a node through web3. Backends differ only in how they reach the
node and in their dev-chain extras (snapshots, time travel); everything else — nonce tracking,
gas estimation, receipts, event and revert decoding, error translation — lives here.

Third-party exceptions (web3, eth-tester, py-evm, requests) are translated at this seam into the
:mod:`chefsplan_agents.errors` tree; reverts become :class:`~chefsplan_agents.errors.TxReverted`
subclasses named after the Solidity error.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, cast

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import DecodingError, EncodingError
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import is_address, to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import (
    ContractLogicError,
    ProviderConnectionError,
    TimeExhausted,
    TransactionNotFound,
    Web3Exception,
    Web3RPCError,
)

from chefsplan_agents.chain._artifacts import Artifact, load_artifact
from chefsplan_agents.chain._nonce import NonceTracker
from chefsplan_agents.chain._revert import RevertDecoder, abi_type, error_signature
from chefsplan_agents.chain._values import checksum, normalise_output, normalise_param
from chefsplan_agents.errors import (
    ChainError,
    ChainUnavailable,
    ChefsplanError,
    ContractNotDeployed,
    TransactionFailed,
    TxReverted,
)

__all__ = ["BoundContract", "Chain", "Event", "FnCall", "Receipt"]

log = logging.getLogger(__name__)

# Gas estimates are exact for the state they ran on; a little headroom absorbs state that
# changes between estimate and inclusion (another replica claiming first, a warm slot going cold).
GAS_HEADROOM = 1.2
GAS_HEADROOM_FIXED = 10_000
_POLL_S = 0.02
_GAS_PRICE_TTL_S = 1.0


@dataclass(frozen=True)
class Event:
    """One decoded contract event (log).

    Attributes:
        name: The Solidity event name.
        address: The emitting contract.
        args: Decoded arguments by name (indexed dynamic values are their 32-byte hash).
        block_number: Block that holds the log.
        tx_hash: Transaction that emitted it (``0x…``).
        log_index: Position of the log in its block.
    """

    name: str
    address: str
    args: dict[str, Any]
    block_number: int
    tx_hash: str
    log_index: int


@dataclass(frozen=True)
class Receipt:
    """The outcome of a mined transaction.

    Attributes:
        tx_hash: The transaction hash (``0x…``).
        block_number: The block it was mined in.
        gas_used: Gas the transaction consumed.
        effective_gas_price: Wei paid per unit of gas.
        status: 1 for success (a failed transaction raises instead of returning).
        events: Decoded events of every contract the chain knows, in log order.
        contract_address: The created contract, for a deployment.
    """

    tx_hash: str
    block_number: int
    gas_used: int
    effective_gas_price: int
    status: int
    events: tuple[Event, ...] = ()
    contract_address: str | None = None

    @property
    def fee_wei(self) -> int:
        """What the sender paid for gas, in wei."""
        return self.gas_used * self.effective_gas_price

    def events_named(self, name: str) -> list[Event]:
        """Every event called ``name`` in this receipt."""
        return [e for e in self.events if e.name == name]

    def event(self, name: str) -> Event:
        """The first event called ``name``.

        Raises:
            ChainError: The transaction emitted no such event.
        """
        for e in self.events:
            if e.name == name:
                return e
        emitted = ", ".join(e.name for e in self.events) or "none"
        raise ChainError(f"transaction {self.tx_hash} emitted no {name} event (emitted: {emitted})")


@dataclass(frozen=True)
class FnCall:
    """A contract function with its arguments, for :meth:`Chain.call` or :meth:`Chain.transact`."""

    contract: BoundContract
    fn_name: str
    args: tuple[Any, ...] = field(default=())

    @property
    def label(self) -> str:
        """``Contract.function`` for messages."""
        return f"{self.contract.name}.{self.fn_name}"


class BoundContract:
    """A deployed contract on one chain: build calls, send them, read its events."""

    def __init__(self, chain: Chain, artifact: Artifact, address: str, web3_contract: Contract):
        self.chain = chain
        self.artifact = artifact
        self.address = address
        self._contract = web3_contract
        self._functions = {e["name"]: e for e in artifact.entries("function")}
        # Selector and argument types by function, for encoding calls without web3's ABI
        # matching (which looks the function up again on every call).
        self._signatures: dict[str, tuple[bytes, list[str]]] = {}
        for name, entry in self._functions.items():
            types = [abi_type(p) for p in entry.get("inputs", [])]
            selector = keccak(f"{name}({','.join(types)})".encode())[:4]
            self._signatures[name] = (selector, types)

    @property
    def name(self) -> str:
        """The contract's name."""
        return self.artifact.name

    def __repr__(self) -> str:
        return f"<{self.name} at {self.address}>"

    def fn(self, fn_name: str, *args: Any) -> FnCall:
        """Bind a function call.

        Raises:
            ChainError: The contract has no function of that name.
        """
        if fn_name not in self._functions:
            raise ChainError(f"{self.name} has no function {fn_name!r}")
        return FnCall(self, fn_name, tuple(args))

    def call(self, fn_name: str, *args: Any, sender: str | None = None) -> Any:
        """Run a view (or any function, without sending) and return its decoded result."""
        return self.chain.call(self.fn(fn_name, *args), sender=sender)

    def transact(
        self, fn_name: str, *args: Any, sender: str | None = None, value: int = 0
    ) -> Receipt:
        """Send a transaction calling ``fn_name`` and wait for its receipt."""
        return self.chain.transact(self.fn(fn_name, *args), sender=sender, value=value)

    def get_logs(
        self,
        event: str | Sequence[str],
        *,
        from_block: int = 0,
        to_block: int | str = "latest",
        filters: Mapping[str, Any] | None = None,
    ) -> list[Event]:
        """Events of this contract; see :meth:`Chain.get_logs`."""
        return self.chain.get_logs(
            self, event, from_block=from_block, to_block=to_block, filters=filters
        )


class Chain(ABC):
    """An EVM chain reached through web3, with local accounts.

    Subclasses provide the web3 connection and the dev-chain extras; use :func:`open_chain` to
    get one from settings. A chain is a context manager; ``close`` releases the connection.

    Args:
        w3: The connected web3 instance.
        private_keys: Keys of the accounts this chain may send from (the first is the default).
        timeout_s: How long to wait for a receipt.
        confirmations: Extra blocks to wait for after inclusion.
        log_block_range: Most blocks one ``eth_getLogs`` may span (``None``: no limit); longer
            event scans are split.
    """

    def __init__(
        self,
        w3: Web3,
        private_keys: Iterable[str | bytes] = (),
        *,
        timeout_s: float = 30.0,
        confirmations: int = 0,
        log_block_range: int | None = None,
    ) -> None:
        self._w3 = w3
        # Only raw signed transactions and checksummed addresses go out: the middlewares that
        # fill in, price or check eth_sendTransaction and resolve ENS names have nothing to do,
        # and the validation one asks the node for its chain id before every call and gas
        # estimate (twice the round trips of each view call).
        for unused in ("validation", "ens_name_to_address", "gas_estimate", "gas_price_strategy"):
            try:
                w3.middleware_onion.remove(unused)
            except ValueError:
                pass  # not installed (a custom web3 instance)
        self.log_block_range = log_block_range
        # web3's TypedDict parameters add nothing over the checks done here; keep them loose.
        self._eth: Any = w3.eth
        self.timeout_s = timeout_s
        self.confirmations = confirmations
        self._accounts: dict[str, LocalAccount] = {}
        self._accounts_lock = threading.Lock()
        self._decoder = RevertDecoder()
        self._events: dict[bytes, dict[str, Any]] = {}
        self._known: dict[str, Artifact] = {}
        self._known_lock = threading.Lock()
        self._nonces = NonceTracker(self._fetch_nonce)
        self._chain_id: int | None = None
        self._priority_fee: int | None = None
        self._eip1559: bool | None = None
        self._gas_price_cache: tuple[float, int] | None = None
        for key in private_keys:
            self.add_account(key)

    # ------------------------------------------------------------------ backend hooks

    @property
    @abstractmethod
    def endpoint(self) -> str:
        """Where the node is, for messages (a URL, or ``"in-process EVM"``)."""

    @abstractmethod
    def snapshot(self) -> str:
        """Save the chain state; returns an id for :meth:`revert`.

        Raises:
            ChainError: The backend cannot snapshot.
        """

    @abstractmethod
    def revert(self, snapshot_id: str) -> None:
        """Return the chain to a :meth:`snapshot` (cached nonces are dropped)."""

    @abstractmethod
    def advance_time(self, seconds: int) -> None:
        """Move the chain clock forward and mine a block.

        Raises:
            ChainError: The backend cannot change its clock (a public network).
        """

    @abstractmethod
    def mine(self, blocks: int = 1) -> None:
        """Mine empty blocks."""

    def close(self) -> None:  # noqa: B027 - backends without resources need nothing here
        """Release the connection to the node."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ accounts

    def add_account(self, private_key: str | bytes) -> str:
        """Let the chain sign for a private key; returns its checksummed address.

        Raises:
            ChainError: The key is not a valid secp256k1 private key.
        """
        try:
            account: LocalAccount = Account.from_key(private_key)
        except (ValueError, TypeError) as err:
            # The key itself must never reach a message or a log.
            raise ChainError("invalid private key: expected 32 bytes (64 hex digits)") from err
        with self._accounts_lock:
            self._accounts.setdefault(account.address, account)
        return str(account.address)

    def new_account(self, *, fund_wei: int = 0, funder: str | None = None) -> str:
        """Create a fresh key, optionally funded from ``funder`` (default account)."""
        address = self.add_account(Account.create().key)
        if fund_wei:
            self.transfer(address, fund_wei, sender=funder)
        return address

    @property
    def accounts(self) -> list[str]:
        """Addresses this chain can send from; the first is the default sender."""
        with self._accounts_lock:
            return list(self._accounts)

    @property
    def default_account(self) -> str:
        """The first account.

        Raises:
            ChainError: The chain has no accounts.
        """
        accounts = self.accounts
        if not accounts:
            raise ChainError(f"no account to send from on {self.endpoint}; give a private key")
        return accounts[0]

    def _signer(self, sender: str | None) -> LocalAccount:
        address = self.default_account if sender is None else sender
        if not is_address(address):
            raise ChainError(f"sender {address!r} is not an EVM address")
        with self._accounts_lock:
            account = self._accounts.get(checksum(address))
        if account is None:
            raise ChainError(f"no private key for sender {address}; add it with Chain.add_account")
        return account

    # ------------------------------------------------------------------ chain facts

    @property
    def chain_id(self) -> int:
        """The chain's EIP-155 id."""
        if self._chain_id is None:
            self._chain_id = int(self._rpc("eth_chainId", lambda: self._eth.chain_id))
        return self._chain_id

    def block_number(self) -> int:
        """The latest block number."""
        return int(self._rpc("eth_blockNumber", lambda: self._eth.block_number))

    def block_timestamp(self, block: int | str = "latest") -> int:
        """The timestamp of a block (default the latest), in seconds."""
        blk = self._rpc("eth_getBlockByNumber", lambda: self._eth.get_block(block))
        return int(blk["timestamp"])

    def pending_timestamp(self) -> int:
        """The timestamp the next transaction will see, at the earliest.

        Use this, not :meth:`block_timestamp`, to set deadlines relative to "now": a dev chain's
        next block may be far ahead of its latest one (after a snapshot revert, or when blocks
        are mined on demand and wall-clock time has passed).
        """
        try:
            return int(self._eth.get_block("pending")["timestamp"])
        except Exception:  # noqa: BLE001 - a node without a pending block: the latest will do
            return self.block_timestamp()

    def balance(self, address: str) -> int:
        """An address's balance in wei."""
        checksum = self._checksum(address)
        return int(self._rpc("eth_getBalance", lambda: self._eth.get_balance(checksum)))

    def receipt(self, tx_hash: str) -> Receipt:
        """The receipt of a mined transaction, with its events decoded.

        Raises:
            TransactionFailed: No such transaction has been mined.
        """
        return self._to_receipt(self._raw_receipt(tx_hash))

    def gas_used(self, tx_hash: str) -> int:
        """Gas used by a mined transaction (its receipt, without decoding its events).

        Raises:
            TransactionFailed: No such transaction has been mined.
        """
        return int(self._raw_receipt(tx_hash)["gasUsed"])

    def _raw_receipt(self, tx_hash: str) -> Mapping[str, Any]:
        """The node's receipt of a mined transaction (web3's shape)."""

        def lookup() -> Any:
            try:
                return self._eth.get_transaction_receipt(HexBytes(tx_hash))
            except TransactionNotFound as err:
                raise TransactionFailed(_not_mined(tx_hash)) from err

        return cast(Mapping[str, Any], self._rpc("eth_getTransactionReceipt", lookup))

    def code_at(self, address: str) -> bytes:
        """The runtime code at an address (empty for an account without code)."""
        checksum = self._checksum(address)
        return bytes(self._rpc("eth_getCode", lambda: self._eth.get_code(checksum)))

    # ------------------------------------------------------------------ contracts

    def _resolve_artifact(self, name_or_artifact: str | Artifact) -> Artifact:
        if isinstance(name_or_artifact, Artifact):
            return name_or_artifact
        return load_artifact(name_or_artifact)

    def _learn(self, artifact: Artifact, address: str | None = None) -> None:
        self._decoder.register_abi(artifact.abi, contract=artifact.name)
        with self._known_lock:
            for entry in artifact.entries("event"):
                if not entry.get("anonymous"):
                    self._events[keccak(text=error_signature(entry))] = entry
            if address is not None:
                self._known[address] = artifact

    def contract(self, name_or_artifact: str | Artifact, address: str) -> BoundContract:
        """Bind a deployed contract.

        Args:
            name_or_artifact: A shipped contract's name or an :class:`Artifact`.
            address: Where it is deployed.

        Raises:
            ContractNotDeployed: There is no code at ``address``.
        """
        artifact = self._resolve_artifact(name_or_artifact)
        checksum = self._checksum(address)
        if not self.code_at(checksum):
            raise ContractNotDeployed(
                f"no {artifact.name} contract at {checksum} on {self.endpoint}; "
                "deploy it first or fix chain.contracts"
            )
        self._learn(artifact, checksum)
        web3_contract = self._eth.contract(address=checksum, abi=list(artifact.abi))
        return BoundContract(self, artifact, checksum, web3_contract)

    def deploy(
        self,
        name_or_artifact: str | Artifact,
        *args: Any,
        sender: str | None = None,
        value: int = 0,
    ) -> str:
        """Deploy a contract; returns its address.

        Raises:
            TxReverted: The constructor reverted (decoded from the contract's errors).
            TransactionFailed: The transaction could not be sent or mined.
        """
        artifact = self._resolve_artifact(name_or_artifact)
        if not artifact.bytecode or artifact.bytecode == "0x":
            raise ChainError(f"artifact {artifact.name} has no bytecode; it cannot be deployed")
        self._learn(artifact)
        factory = self._eth.contract(abi=list(artifact.abi), bytecode=artifact.bytecode)
        try:
            data = factory.constructor(*args).data_in_transaction
        except (Web3Exception, TypeError, ValueError, EncodingError) as err:
            raise ChainError(f"bad constructor arguments for {artifact.name}: {err}") from err
        receipt = self._send(
            {"data": data, "value": value}, sender=sender, label=f"{artifact.name}.constructor"
        )
        if not receipt.contract_address:
            raise TransactionFailed(f"deploying {artifact.name} created no contract")
        self._learn(artifact, receipt.contract_address)
        log.info(
            "deployed %s at %s (gas %d)", artifact.name, receipt.contract_address, receipt.gas_used
        )
        return receipt.contract_address

    # ------------------------------------------------------------------ calls and transactions

    def _encode(self, call: FnCall) -> str:
        selector, types = call.contract._signatures[call.fn_name]
        try:
            return "0x" + (selector + self._w3.codec.encode(types, call.args)).hex()
        except (EncodingError, TypeError, ValueError, OverflowError):
            pass  # web3 also takes other spellings (hex strings for bytes, …): let it try
        try:
            return str(call.contract._contract.encode_abi(call.fn_name, args=list(call.args)))
        except (Web3Exception, TypeError, ValueError, EncodingError) as err:
            raise ChainError(
                f"bad arguments for {call.label}: expected ({', '.join(types)}), got {call.args!r}"
            ) from err

    def call(self, call: FnCall, *, sender: str | None = None, block: int | str = "latest") -> Any:
        """Execute a function without sending a transaction; return its decoded result.

        A function with one output returns the value, with several a tuple.

        Raises:
            TxReverted: The call reverted (decoded).
        """
        data = self._encode(call)
        tx: dict[str, Any] = {"to": call.contract.address, "data": data}
        if sender is not None or self.accounts:
            tx["from"] = self._checksum(sender) if sender is not None else self.default_account
        raw = self._rpc(call.label, lambda: self._eth.call(tx, block), revert_label=call.label)
        outputs = call.contract._functions[call.fn_name].get("outputs", [])
        types = [abi_type(o) for o in outputs]
        try:
            values = self._w3.codec.decode(types, bytes(raw))
            normalised = normalise_output(outputs, values)
        except (DecodingError, ValueError) as err:
            raise ChainError(f"cannot decode the result of {call.label}: {err}") from err
        if len(normalised) == 1:
            return normalised[0]
        return tuple(normalised)

    def transact(
        self,
        call: FnCall,
        *,
        sender: str | None = None,
        value: int = 0,
        gas: int | None = None,
    ) -> Receipt:
        """Send a transaction calling a contract function and wait for its receipt.

        Args:
            call: The function and its arguments (:meth:`BoundContract.fn`).
            sender: The sending account (default :attr:`default_account`).
            value: Wei to send along.
            gas: A gas limit; ``None`` estimates it (with headroom).

        Returns:
            The receipt with the decoded events.

        Raises:
            TxReverted: The transaction reverted (the subclass is named after the Solidity error).
            TransactionFailed: It could not be sent or mined in time.
            ChainUnavailable: The node cannot be reached.
        """
        data = self._encode(call)
        return self._send(
            {"to": call.contract.address, "data": data, "value": value},
            sender=sender,
            label=call.label,
            gas=gas,
        )

    def transfer(self, to: str, value: int, *, sender: str | None = None) -> Receipt:
        """Send plain ether (wei)."""
        return self._send(
            {"to": self._checksum(to), "value": value, "data": b""},
            sender=sender,
            label="transfer",
            gas=21_000 if not self.code_at(to) else None,
        )

    def _gas_price(self) -> int:
        # Read at most once a second: fee fields below leave room for several blocks of rises.
        now = time.monotonic()
        cached = self._gas_price_cache
        if cached is not None and now - cached[0] < _GAS_PRICE_TTL_S:
            return cached[1]
        price = int(self._rpc("eth_gasPrice", lambda: self._eth.gas_price))
        self._gas_price_cache = (now, price)
        return price

    def _fee_fields(self) -> dict[str, int]:
        gas_price = self._gas_price()
        if self._eip1559 is None:
            latest = self._rpc("eth_getBlockByNumber", lambda: self._eth.get_block("latest"))
            self._eip1559 = latest.get("baseFeePerGas") is not None
            if self._eip1559:
                try:
                    self._priority_fee = int(self._eth.max_priority_fee)
                except (Web3Exception, ValueError, KeyError):
                    self._priority_fee = 10**9
        if not self._eip1559:
            return {"gasPrice": gas_price}
        priority = min(self._priority_fee or 0, gas_price)
        # Twice the current price survives several blocks of base-fee increases.
        return {"maxFeePerGas": 2 * gas_price + priority, "maxPriorityFeePerGas": priority}

    def _estimate_gas(self, tx: dict[str, Any], label: str) -> int:
        estimate = int(self._rpc(label, lambda: self._eth.estimate_gas(tx), revert_label=label))
        return int(estimate * GAS_HEADROOM) + GAS_HEADROOM_FIXED

    def _send(
        self,
        tx: dict[str, Any],
        *,
        sender: str | None,
        label: str,
        gas: int | None = None,
    ) -> Receipt:
        account = self._signer(sender)
        if tx.get("value", 0) < 0:
            raise ChainError(f"{label}: value must not be negative (got {tx['value']})")
        tx = {**tx, "from": account.address}
        if gas is None:
            gas = self._estimate_gas(tx, label)
        tx["gas"] = gas
        tx["chainId"] = self.chain_id
        tx.update(self._fee_fields())
        del tx["from"]
        with self._nonces.reserve(account.address) as slot:
            for attempt in range(2):
                tx["nonce"] = slot.nonce
                signed = account.sign_transaction(tx)
                try:
                    tx_hash = self._send_raw(bytes(signed.raw_transaction), label)
                except _NonceTooLow:
                    if attempt:
                        raise TransactionFailed(
                            f"{label}: nonce {slot.nonce} of {account.address} was rejected twice; "
                            "another process is sending from the same key"
                        ) from None
                    log.info("nonce of %s out of sync; resyncing", account.address)
                    slot.resync()
                    continue
                slot.commit()
                break
        return self._wait(tx_hash, label, {**tx, "from": account.address})

    def _send_raw(self, raw: bytes, label: str) -> str:
        try:
            return "0x" + bytes(self._eth.send_raw_transaction(raw)).hex()
        except Exception as err:
            text = _error_text(err).lower()
            if (
                "nonce too low" in text
                or "invalid transaction nonce" in text
                or ("nonce" in text and "expected" in text)
            ):
                raise _NonceTooLow from err
            raise self._translate(err, label, revert_label=label) from err

    def _wait(self, tx_hash: str, label: str, tx: Mapping[str, Any]) -> Receipt:
        receipt = self._to_receipt(self._mined_receipt(tx_hash, label))
        if self.confirmations:
            self._wait_confirmations(receipt.block_number, tx_hash, label)
        if receipt.status != 1:
            raise self._explain_failure(receipt, label, tx)
        log.debug("%s mined in block %d, gas %d", label, receipt.block_number, receipt.gas_used)
        return receipt

    def _mined_receipt(self, tx_hash: str, label: str) -> Mapping[str, Any]:
        """Wait until the transaction is mined; its raw receipt (web3's shape)."""
        try:
            raw = self._eth.wait_for_transaction_receipt(
                HexBytes(tx_hash), timeout=self.timeout_s, poll_latency=_POLL_S
            )
        except TimeExhausted as err:
            # The transaction may still be mined later; the cached nonce is no longer certain.
            self._nonces.reset()
            raise TransactionFailed(
                f"{label}: transaction {tx_hash} was not mined within {self.timeout_s:g} s; "
                "check the node is mining or raise chain.timeout_s"
            ) from err
        except Exception as err:
            raise self._translate(err, label) from err
        return cast(Mapping[str, Any], raw)

    def _wait_confirmations(self, block: int, tx_hash: str, label: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while self.block_number() < block + self.confirmations:
            if time.monotonic() > deadline:
                raise TransactionFailed(
                    f"{label}: transaction {tx_hash} did not reach {self.confirmations} "
                    f"confirmations within {self.timeout_s:g} s"
                )
            time.sleep(_POLL_S * 10)

    def _explain_failure(
        self, receipt: Receipt, label: str, tx: Mapping[str, Any]
    ) -> ChefsplanError:
        # A mined transaction keeps no revert data: replay it in its own block, which carries
        # the timestamp it saw; its failed execution changed no state but the sender's nonce
        # and balance, which a call does not check.
        replay = {k: v for k, v in tx.items() if k in ("from", "to", "data", "value", "gas")}
        try:
            self._eth.call(replay, receipt.block_number)
        except Exception as err:
            translated = self._translate(err, label, revert_label=label)
            if isinstance(translated, TxReverted):
                return translated
        if receipt.gas_used >= int(tx.get("gas", 0)) > 0:
            return TransactionFailed(
                f"{label}: transaction {receipt.tx_hash} ran out of gas ({receipt.gas_used} used)"
            )
        return TxReverted(f"{label}: transaction {receipt.tx_hash} reverted")

    # ------------------------------------------------------------------ events

    def _to_receipt(self, raw: Mapping[str, Any]) -> Receipt:
        events = tuple(e for e in (self._decode_log(lg) for lg in raw.get("logs", [])) if e)
        created = raw.get("contractAddress")
        return Receipt(
            tx_hash="0x" + bytes(raw["transactionHash"]).hex(),
            block_number=int(raw["blockNumber"]),
            gas_used=int(raw["gasUsed"]),
            effective_gas_price=int(raw.get("effectiveGasPrice") or 0),
            status=int(raw["status"]),
            events=events,
            contract_address=to_checksum_address(created) if created else None,
        )

    def _decode_log(self, raw: Mapping[str, Any]) -> Event | None:
        topics = [bytes(t) for t in raw.get("topics", [])]
        if not topics:
            return None
        with self._known_lock:
            entry = self._events.get(topics[0])
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
                typ = abi_type(param)
                if _is_dynamic(typ):
                    args[param["name"]] = topic
                else:
                    args[param["name"]] = normalise_param(param, abi_decode([typ], topic)[0])
            values = abi_decode([abi_type(p) for p in plain], bytes(raw.get("data", b"")))
        except DecodingError:
            return None
        for param, value in zip(plain, values, strict=True):
            args[param["name"]] = normalise_param(param, value)
        ordered = {p["name"]: args[p["name"]] for p in inputs}
        return Event(
            name=str(entry["name"]),
            address=checksum(raw["address"]),
            args=ordered,
            block_number=int(raw["blockNumber"]),
            tx_hash="0x" + bytes(raw["transactionHash"]).hex(),
            log_index=int(raw["logIndex"]),
        )

    def get_logs(
        self,
        contract: BoundContract,
        event: str | Sequence[str],
        *,
        from_block: int = 0,
        to_block: int | str = "latest",
        filters: Mapping[str, Any] | None = None,
    ) -> list[Event]:
        """Past events of one contract, in chain order.

        Args:
            contract: The emitting contract.
            event: The event name, or several names fetched in one query (a filtered argument
                must then be indexed at the same position, with the same type, in each).
            from_block: First block to search.
            to_block: Last block to search.
            filters: Values of *indexed* arguments to match (a list means any of them).

        Raises:
            ChainError: The contract has no such event, or a filter names an argument that is
                not indexed (in every event asked for).
        """
        names = [event] if isinstance(event, str) else list(dict.fromkeys(event))
        if not names:
            raise ChainError(f"get_logs on {contract.name} needs at least one event name")
        entries = []
        for name in names:
            found = [e for e in contract.artifact.entries("event") if e["name"] == name]
            if not found:
                raise ChainError(f"{contract.name} has no event {name!r}")
            entries.append(found[0])
        signatures = ["0x" + keccak(text=error_signature(e)).hex() for e in entries]
        topics: list[Any] = [signatures[0] if len(signatures) == 1 else signatures]
        indexed = [[p for p in e.get("inputs", []) if p.get("indexed")] for e in entries]
        label = f"{contract.name}.{'/'.join(names)}"
        wanted = dict(filters or {})
        slots: dict[int, Any] = {}
        for arg, value in wanted.items():
            # Where each event indexes ``arg``: one topic slot must serve them all.
            places = {
                next(((i, abi_type(p)) for i, p in enumerate(params) if p["name"] == arg), None)
                for params in indexed
            }
            place = places.pop() if len(places) == 1 else None
            if place is None:
                raise ChainError(
                    f"cannot filter {label} on {arg}: only indexed arguments can be filtered"
                    + ("" if len(names) == 1 else ", at the same position in every event")
                )
            position, typ = place
            if value is None:
                continue
            if isinstance(value, list | tuple | set) and not typ.endswith("]"):
                slots[position] = [_topic(typ, v) for v in value]
            else:
                slots[position] = _topic(typ, value)
        topics += [slots.get(i) for i in range(max(slots, default=-1) + 1)]
        out: list[Any] = []
        for start, end in self._log_ranges(from_block, to_block):
            params: dict[str, Any] = {
                "address": contract.address,
                "fromBlock": start,
                "toBlock": end,
                "topics": topics,
            }
            out.extend(self._raw_logs(params))
        return [e for e in (self._decode_log(raw) for raw in out) if e and e.name in names]

    def _raw_logs(self, params: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """``eth_getLogs`` for one filter (address, block range, topics); web3's shape."""
        return list(self._rpc("eth_getLogs", lambda: self._eth.get_logs(dict(params))))

    def _log_ranges(self, from_block: int, to_block: int | str) -> list[tuple[int, int | str]]:
        # Public RPC endpoints cap the block range of one eth_getLogs; split long scans.
        step = self.log_block_range
        if not step or (isinstance(to_block, str) and to_block != "latest"):
            return [(from_block, to_block)]
        end = self.block_number() if to_block == "latest" else int(to_block)
        return [(lo, min(lo + step - 1, end)) for lo in range(from_block, end + 1, step)]

    # ------------------------------------------------------------------ the seam

    def _fetch_nonce(self, address: str) -> int:
        return int(
            self._rpc(
                "eth_getTransactionCount",
                lambda: self._eth.get_transaction_count(address, "pending"),
            )
        )

    @staticmethod
    def _checksum(address: str) -> str:
        if not isinstance(address, str) or not is_address(address):
            raise ChainError(f"{address!r} is not an EVM address (expected 0x + 40 hex digits)")
        return checksum(address)

    def _rpc(self, what: str, fn: Any, *, revert_label: str | None = None) -> Any:
        try:
            return fn()
        except ChefsplanError:
            raise
        except Exception as err:
            raise self._translate(err, what, revert_label=revert_label) from err

    def _revert_data(self, err: BaseException) -> bytes | None:
        """Revert data carried by a backend exception, or ``None`` if it is not a revert."""
        data: Any = None
        if isinstance(err, ContractLogicError):
            data = err.data
            if isinstance(data, dict):
                data = data.get("data")
            if data is None:
                return b""
        elif isinstance(err, Web3RPCError):
            error = (err.rpc_response or {}).get("error") if err.rpc_response else None
            if isinstance(error, dict):
                message = str(error.get("message", "")).lower()
                data = error.get("data")
                if isinstance(data, dict):
                    data = data.get("data")
                if data is None and "revert" not in message:
                    return None
                if data is None:
                    return b""
            else:
                return None
        else:
            return None
        if isinstance(data, bytes | bytearray):
            return bytes(data)
        if isinstance(data, str):
            try:
                return bytes(HexBytes(data))
            except ValueError:
                return None
        return None

    def _translate(
        self, err: BaseException, what: str, *, revert_label: str | None = None
    ) -> ChefsplanError:
        """Map a backend exception to the package's error tree."""
        if isinstance(err, ChefsplanError):
            return err
        if revert_label is not None:
            data = self._revert_data(err)
            if data is not None:
                return self._decoder.decode(data, context=revert_label)
        if _is_connection_error(err):
            return ChainUnavailable(
                f"cannot reach the chain node at {self.endpoint} ({type(err).__name__}); "
                "start the node or fix chain.rpc_url"
            )
        text = _error_text(err)
        lowered = text.lower()
        if "insufficient funds" in lowered or "cannot afford" in lowered:
            return TransactionFailed(f"{what}: the sender has insufficient funds for gas and value")
        if isinstance(err, TransactionNotFound):
            return TransactionFailed(f"{what}: {text}")
        return TransactionFailed(f"{what} failed on {self.endpoint}: {text}")


class _NonceTooLow(Exception):
    pass


def _not_mined(tx_hash: str) -> str:
    return f"no mined transaction {tx_hash} on this chain; check the hash and the chain"


def _error_text(err: BaseException) -> str:
    if isinstance(err, Web3RPCError) and isinstance(err.rpc_response, dict):
        error = err.rpc_response.get("error")
        if isinstance(error, dict) and error.get("message"):
            # The node's own words: one line, and short, whatever it sent.
            return " ".join(str(error["message"]).split())[:300]
    text = str(err) or type(err).__name__
    return " ".join(text.split())[:300]


def _is_connection_error(err: BaseException) -> bool:
    import requests

    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(
            current,
            ProviderConnectionError
            | requests.ConnectionError
            | requests.Timeout
            | ConnectionError
            | TimeoutError,
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_dynamic(typ: str) -> bool:
    return typ in ("string", "bytes") or typ.endswith("]") or typ.startswith("(")


def _topic(typ: str, value: Any) -> str:
    if typ == "string":
        return "0x" + keccak(text=str(value)).hex()
    if typ == "bytes":
        return "0x" + keccak(bytes(value)).hex()
    if _is_dynamic(typ):
        raise ChainError(f"cannot filter on an indexed {typ} argument")
    try:
        return "0x" + abi_encode([typ], [value]).hex()
    except (EncodingError, TypeError, ValueError) as err:
        raise ChainError(f"bad filter value {value!r} for an indexed {typ}: {err}") from err
