"""The HTTP API: FastAPI routes over the service layer, idempotent and multi-tenant."""
