"""A FastAPI service on SQLAlchemy's asyncio extension that publishes through the outbox:
see README.md beside this file."""
