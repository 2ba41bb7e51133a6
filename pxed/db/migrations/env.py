"""Alembic environment: always run online, on the connection pxed hands in
(see pxed.db.migrate.alembic_config)."""

from alembic import context

from pxed.db.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,  # SQLite can only ALTER by copying tables
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
