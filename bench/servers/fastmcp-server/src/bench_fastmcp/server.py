"""A FastMCP server with a few typed tools."""

from datetime import datetime, timezone

from fastmcp import FastMCP
from pydantic import BaseModel

mcp = FastMCP("bench-fastmcp")


class Firing(BaseModel):
    """One kiln firing."""

    cone: int
    hours: float
    note: str = ""


@mcp.tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@mcp.tool
def utc_now() -> str:
    """The current time in UTC, ISO 8601."""
    return datetime.now(timezone.utc).isoformat()


@mcp.tool
def log_firing(firing: Firing) -> str:
    """Describe a firing."""
    return f"cone {firing.cone} for {firing.hours} h {firing.note}".strip()


def main() -> None:
    mcp.run(show_banner=False)
