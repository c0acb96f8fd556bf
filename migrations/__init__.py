"""Alembic's script directory, shipped as package data so the installed bot can migrate.

`db.migrate` points Alembic at this package's folder; `alembic` on the command line finds it
through `[tool.alembic]` in pyproject.toml (a source checkout).
"""
