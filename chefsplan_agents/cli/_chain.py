"""``chefsplan`` commands for the chain layer."""

from __future__ import annotations
