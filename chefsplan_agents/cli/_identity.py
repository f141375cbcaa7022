"""``chefsplan`` commands for the identity layer."""

from __future__ import annotations
