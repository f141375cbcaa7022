"""chain layer (see docs/architecture.md)."""
