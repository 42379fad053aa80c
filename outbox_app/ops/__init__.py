"""Operating the outbox: the queries operators run, the CLI and the web view."""
