"""Persistence: SQLAlchemy Core tables, Alembic migrations, the unit of work."""
