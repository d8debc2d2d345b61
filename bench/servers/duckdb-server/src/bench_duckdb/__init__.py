"""Bench server: SQL over an in-memory DuckDB."""
