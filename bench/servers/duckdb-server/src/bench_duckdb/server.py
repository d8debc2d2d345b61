"""An MCP server answering SQL over a small in-memory DuckDB table."""

import duckdb
from mcp.server import MCPServer

server = MCPServer(name="bench-duckdb")
_db = duckdb.connect(":memory:")
_db.execute("CREATE TABLE kilns AS SELECT range AS id, 'kiln ' || range AS name FROM range(1000)")


@server.tool()
def query(sql: str) -> list[list]:
    """Run a read-only SQL query and return its rows."""
    return [list(row) for row in _db.execute(sql).fetchall()]


@server.tool()
def count_kilns() -> int:
    """How many kilns the table holds."""
    return _db.execute("SELECT count(*) FROM kilns").fetchone()[0]


def main() -> None:
    server.run()
