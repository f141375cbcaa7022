"""``chefsplan`` commands for the node layer."""

from __future__ import annotations
