"""bundles layer (see docs/architecture.md)."""
