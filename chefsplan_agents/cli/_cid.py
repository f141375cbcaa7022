"""``chefsplan`` commands for the cid layer."""

from __future__ import annotations
