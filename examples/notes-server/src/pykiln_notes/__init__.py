"""pykiln-notes: a notes/memory MCP server backed by SQLite FTS5."""

__all__ = ["__version__"]
__version__ = "0.1.0"
