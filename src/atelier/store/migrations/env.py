"""Alembic's environment: runs the scripts on the connection handed over by
``atelier.store.migrations`` (never from an ini file's URL)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from atelier.store.db import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with atelier.store.migrations.upgrade() or `atelier db upgrade`")

sqlite = connection.dialect.name == "sqlite"
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things: batch mode copies the table instead.
    render_as_batch=sqlite,
    compare_type=True,
)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        # Two processes upgrading at once (two servers starting) take turns.
        connection.execute(text("SELECT pg_advisory_xact_lock(7290001)"))
    context.run_migrations()
