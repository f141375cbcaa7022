"""Typed client for the ``OutputLog`` contract: a cheap on-chain accountability log."""

from __future__ import annotations

from dataclasses import dataclass

from chefsplan_agents.chain import BoundContract, Chain, Receipt, to_address, to_bytes32
from chefsplan_agents.errors import MarketError

__all__ = ["LoggedOutput", "OutputLogClient"]


@dataclass(frozen=True)
class LoggedOutput:
    """One ``OutputLogged`` entry.

    Attributes:
        sender: Who logged it.
        subject: What it is about (a task id, a conversation hash, a DID hash).
        output_hash: Hash of the output.
        result_cid: CID of the output on IPFS.
        block_number: Block that holds the entry.
        tx_hash: The logging transaction.
    """

    sender: str
    subject: bytes
    output_hash: bytes
    result_cid: str
    block_number: int
    tx_hash: str


class OutputLogClient:
    """Log output hashes on chain and read them back.

    Args:
        contract: The deployed ``OutputLog`` (``Deployment.output_log``).
        from_block: Where event scans start.
    """

    def __init__(self, contract: BoundContract, *, from_block: int = 0) -> None:
        if contract.name != "OutputLog":
            raise MarketError(f"OutputLogClient needs an OutputLog, not {contract.name}")
        self.contract = contract
        self.from_block = from_block

    @classmethod
    def at(cls, chain: Chain, address: str, *, from_block: int = 0) -> OutputLogClient:
        """Bind the log deployed at ``address``."""
        return cls(chain.contract("OutputLog", address), from_block=from_block)

    def log_output(
        self,
        subject: bytes | str,
        output_hash: bytes | str,
        result_cid: str,
        *,
        sender: str | None = None,
    ) -> Receipt:
        """Record that ``sender`` produced ``output_hash`` (at ``result_cid``) for ``subject``."""
        return self.contract.transact(
            "logOutput",
            to_bytes32(subject, "subject"),
            to_bytes32(output_hash, "output_hash"),
            result_cid,
            sender=sender,
        )

    def entries(
        self, *, subject: bytes | str | None = None, sender: str | None = None
    ) -> list[LoggedOutput]:
        """Logged outputs, optionally only for one subject and/or one sender, oldest first."""
        filters: dict[str, object] = {}
        if subject is not None:
            filters["subject"] = to_bytes32(subject, "subject")
        if sender is not None:
            filters["sender"] = to_address(sender, "sender")
        events = self.contract.get_logs(
            "OutputLogged", from_block=self.from_block, filters=filters or None
        )
        return [
            LoggedOutput(
                sender=str(e.args["sender"]),
                subject=bytes(e.args["subject"]),
                output_hash=bytes(e.args["outputHash"]),
                result_cid=str(e.args["resultCid"]),
                block_number=e.block_number,
                tx_hash=e.tx_hash,
            )
            for e in events
        ]
