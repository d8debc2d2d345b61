"""The notes MCP server: tools, a resource template and a prompt over NoteStore."""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError

from pykiln_notes import __version__
from pykiln_notes.store import NoteError, NoteStore, default_db_path

server = MCPServer(
    name="pykiln-notes",
    version=__version__,
    instructions="A personal notes store. Add notes, then find them with full-text search.",
)
_store: NoteStore | None = None


def store() -> NoteStore:
    if _store is None:
        raise ToolError("the note store is not open")
    return _store


def _tool_errors(fn):
    """Turn the store's refusals and database failures into MCP tool errors that say
    what failed (the SDK's own message names only the tool)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NoteError as e:
            raise ToolError(str(e)) from None
        except sqlite3.Error as e:
            print(f"pykiln-notes: {fn.__name__}: database error: {e}", file=sys.stderr)
            raise ToolError(f"{fn.__name__} failed: database error: {e}") from None

    return wrapper


@server.tool()
@_tool_errors
def add_note(title: str, body: str, tags: list[str] = []) -> int:  # noqa: B006 - schema default
    """Save a note and return its id.

    Args:
        title: Short title (required, at most 500 characters).
        body: The note text.
        tags: Optional labels for filtering with list_notes.
    """
    return store().add(title, body, tags)


@server.tool()
@_tool_errors
def search_notes(query: str, limit: int = 10) -> list[dict]:
    """Full-text search over titles, bodies and tags, best matches first (FTS5 bm25).

    Args:
        query: Words to look for; all must match.
        limit: Maximum number of results (1-100).
    """
    return store().search(query, limit)


@server.tool()
@_tool_errors
def get_note(id: int) -> dict:  # noqa: A002 - the MCP argument is called id
    """Return one note with its full body.

    Args:
        id: The note id returned by add_note or search_notes.
    """
    return store().get(id).as_dict()


@server.tool()
@_tool_errors
def list_notes(tag: str | None = None, limit: int = 50) -> list[dict]:
    """List the most recent notes, optionally only those carrying a tag.

    Args:
        tag: Only notes with this tag.
        limit: Maximum number of notes (1-500).
    """
    return store().list(tag, limit)


@server.tool()
@_tool_errors
def delete_note(id: int) -> bool:  # noqa: A002
    """Delete a note by id.

    Args:
        id: The note to delete.
    """
    return store().delete(id)


@server.resource("note://{id}", mime_type="text/markdown", description="A note as Markdown")
def note_resource(id: str) -> str:  # noqa: A002
    try:
        note = store().get(int(id))
    except (ValueError, NoteError):
        raise ResourceNotFoundError(f"no note with id {id}") from None
    tags = f"\n\nTags: {', '.join(note.tags)}" if note.tags else ""
    return f"# {note.title}\n\n{note.body}{tags}\n"


@server.prompt()
def summarize_notes(tag: str = "") -> str:
    """Ask the model to summarise your notes (optionally those with one tag)."""
    notes = store().list(tag or None, 50)
    if not notes:
        return "There are no notes yet. Suggest what I could record."
    lines = []
    for n in notes:
        body = store().get(n["id"]).body
        lines.append(f"- [{n['id']}] {n['title']}: {body[:300]}")
    scope = f" tagged '{tag}'" if tag else ""
    return f"Summarise these notes{scope} in a few bullet points and point out open questions:\n" + "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pykiln-notes", description="Notes MCP server (SQLite FTS5)")
    p.add_argument("--db", help="database file (default: $PYKILN_NOTES_DB or the XDG data dir)")
    p.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    p.add_argument("--host", default="127.0.0.1", help="HTTP bind address (with --transport http)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (with --transport http)")
    p.add_argument(
        "--token-file",
        metavar="FILE",
        help="require `Authorization: Bearer <token>` on every HTTP request, the token being this file's first line "
        "(or $PYKILN_NOTES_TOKEN); required when --host is not a loopback address",
    )
    p.add_argument(
        "--stateless",
        action="store_true",
        help="HTTP without sessions: every request stands alone, so replicas behind a load balancer can share one database",
    )
    p.add_argument(
        "--session-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="end HTTP sessions idle this long (default 600; 0 = never)",
    )
    p.add_argument(
        "--max-sessions",
        type=int,
        default=1000,
        metavar="N",
        help="HTTP sessions open at once (default 1000); past it a new session ends the least recently active idle one",
    )
    p.add_argument(
        "--max-sessions-per-client",
        type=int,
        default=100,
        metavar="N",
        help="HTTP sessions one client address may hold (default 100); past it its own least recently active idle one ends",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__} (SQLite {sqlite3.sqlite_version})")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    global _store
    args = parse_args(argv)
    path = args.db or os.environ.get("PYKILN_NOTES_DB") or str(default_db_path())
    try:
        _store = NoteStore(path)
    except (OSError, sqlite3.Error) as e:
        print(f"pykiln-notes: cannot open database {path}: {e}", file=sys.stderr)
        return 2
    if args.transport == "http":
        from pykiln_notes import http

        return http.serve(server, args)
    else:
        server.run("stdio")
    return 0
