"""node layer (see docs/architecture.md)."""
