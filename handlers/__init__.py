"""Business handlers, one module per service. Each module registers its handlers with
``@handler(event_type, service=...)`` and its business tables with the registry."""
