"""One module per schema revision, oldest first by their four-digit numbers (Alembic skips this file)."""
