"""Notes stored in SQLite, searched with FTS5 (bm25 ranking)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (
    id      INTEGER PRIMARY KEY,
    title   TEXT NOT NULL,
    body    TEXT NOT NULL,
    tags    TEXT NOT NULL DEFAULT '[]',
    created REAL NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS notes_fts USING fts5(
    title, body, tags, content='notes', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS notes_ai AFTER INSERT ON notes BEGIN
    INSERT INTO notes_fts(rowid, title, body, tags) VALUES (new.id, new.title, new.body, new.tags);
END;
CREATE TRIGGER IF NOT EXISTS notes_ad AFTER DELETE ON notes BEGIN
    INSERT INTO notes_fts(notes_fts, rowid, title, body, tags) VALUES ('delete', old.id, old.title, old.body, old.tags);
END;
"""

MAX_TITLE = 500
MAX_BODY = 1_000_000


class NoteError(ValueError):
    """A request the store refuses; the message is meant for the caller."""


@dataclass
class Note:
    id: int
    title: str
    body: str
    tags: list[str] = field(default_factory=list)
    created: float = 0.0

    def as_dict(self) -> dict:
        return {"id": self.id, "title": self.title, "body": self.body, "tags": self.tags, "created": self.created}


def default_db_path() -> Path:
    """`$XDG_DATA_HOME/pykiln-notes/notes.db` (default `~/.local/share/...`)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "pykiln-notes" / "notes.db"


def _fts_query(text: str) -> str:
    """Plain words → an FTS5 query that ANDs them, immune to FTS syntax in the input."""
    words = re.findall(r"\w+", text, flags=re.UNICODE)
    if not words:
        raise NoteError("query must contain at least one word")
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


class NoteStore:
    def __init__(self, path: str | os.PathLike[str]):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.executescript(SCHEMA)

    def add(self, title: str, body: str, tags: list[str] | None = None) -> int:
        title = (title or "").strip()
        if not title:
            raise NoteError("title must not be empty")
        if len(title) > MAX_TITLE:
            raise NoteError(f"title is longer than {MAX_TITLE} characters")
        if len(body) > MAX_BODY:
            raise NoteError(f"body is longer than {MAX_BODY} characters")
        clean_tags = sorted({t.strip().lower() for t in (tags or []) if t and t.strip()})
        with self.db:
            cur = self.db.execute(
                "INSERT INTO notes(title, body, tags, created) VALUES (?, ?, ?, ?)",
                (title, body, json.dumps(clean_tags), time.time()),
            )
        return int(cur.lastrowid)

    def get(self, note_id: int) -> Note:
        row = self.db.execute("SELECT * FROM notes WHERE id = ?", (note_id,)).fetchone()
        if row is None:
            raise NoteError(f"no note with id {note_id}")
        return Note(row["id"], row["title"], row["body"], json.loads(row["tags"]), row["created"])

    def search(self, query: str, limit: int = 10) -> list[dict]:
        if not 1 <= limit <= 100:
            raise NoteError("limit must be between 1 and 100")
        rows = self.db.execute(
            """
            SELECT n.id, n.title, n.tags,
                   snippet(notes_fts, 1, '[', ']', '…', 12) AS snippet,
                   bm25(notes_fts, 5.0, 1.0, 2.0) AS rank
            FROM notes_fts JOIN notes n ON n.id = notes_fts.rowid
            WHERE notes_fts MATCH ?
            ORDER BY rank LIMIT ?
            """,
            (_fts_query(query), limit),
        ).fetchall()
        return [
            {"id": r["id"], "title": r["title"], "tags": json.loads(r["tags"]), "snippet": r["snippet"], "score": round(-r["rank"], 4)}
            for r in rows
        ]

    def list(self, tag: str | None = None, limit: int = 50) -> list[dict]:
        if not 1 <= limit <= 500:
            raise NoteError("limit must be between 1 and 500")
        if tag:
            rows = self.db.execute(
                "SELECT n.id, n.title, n.tags, n.created FROM notes n, json_each(n.tags) t "
                "WHERE t.value = ? ORDER BY n.id DESC LIMIT ?",
                (tag.strip().lower(), limit),
            ).fetchall()
        else:
            rows = self.db.execute("SELECT id, title, tags, created FROM notes ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [{"id": r["id"], "title": r["title"], "tags": json.loads(r["tags"]), "created": r["created"]} for r in rows]

    def delete(self, note_id: int) -> bool:
        with self.db:
            cur = self.db.execute("DELETE FROM notes WHERE id = ?", (note_id,))
        if cur.rowcount == 0:
            raise NoteError(f"no note with id {note_id}")
        return True
