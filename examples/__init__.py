"""Examples of services that use the outbox (runnable from the repository's root)."""
