"""``chefsplan`` commands for the devnet layer."""

from __future__ import annotations
