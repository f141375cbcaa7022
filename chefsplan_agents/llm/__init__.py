"""llm layer (see docs/architecture.md)."""
