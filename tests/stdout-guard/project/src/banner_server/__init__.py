"""An MCP server with stray prints on stdout (see pyproject.toml)."""

from mcp.server import MCPServer

print("Starting MCP server 'banner' ...")

server = MCPServer("banner")


@server.tool()
def echo(text: str) -> str:
    """Return the text."""
    print(f"echo called with {text!r}")
    return text


def main():
    print("Listening on stdio")
    server.run("stdio")
