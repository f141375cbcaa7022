from __future__ import annotations

import pytest

from chefsplan_agents.chain import EmbeddedChain
from chefsplan_agents.errors import TransactionFailed


def test_receipt_by_hash_matches_the_sent_transaction() -> None:
    with EmbeddedChain() as chain:
        sender, receiver = chain.accounts[0], chain.accounts[1]
        sent = chain.transfer(receiver, 12345, sender=sender)
        looked_up = chain.receipt(sent.tx_hash)
        assert looked_up.tx_hash == sent.tx_hash
        assert looked_up.gas_used == sent.gas_used == 21000
        assert looked_up.block_number == sent.block_number


def test_unknown_transaction_is_one_clear_error() -> None:
    with EmbeddedChain() as chain:
        with pytest.raises(TransactionFailed, match="no mined transaction 0x") as info:
            chain.receipt("0x" + "ab" * 32)
        assert "\n" not in str(info.value)
