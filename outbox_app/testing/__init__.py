"""Testing helpers for handler authors: run a registered handler against a real database
inside a transaction that is rolled back afterwards (see ``HandlerHarness``), and a
pytest plugin whose ``outbox_harness`` fixture opens one per test."""

from outbox_app.testing.harness import HandlerHarness, Outcome, Published, RemoteCall

__all__ = ["HandlerHarness", "Outcome", "Published", "RemoteCall"]
