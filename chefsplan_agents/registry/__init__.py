"""registry layer (see docs/architecture.md)."""
