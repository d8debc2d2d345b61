"""Notes stored in SQLite, searched with FTS5 (bm25 ranking).

The MCP SDK runs synchronous tools on worker threads, and several server processes
(HTTP replicas) may share one database file. So: one connection per thread (a sqlite3
connection must not be used by two threads at once), WAL journaling (readers never
block the writer), a busy timeout (another process holding the write lock is waited
for, not reported as an error), and one writer at a time within the process, each
write in its own `BEGIN IMMEDIATE` transaction.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
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
MAX_TAGS = 50
MAX_TAG = 100
# FTS5's cost grows faster than linearly with the number of AND-ed terms; a request
# must not be able to occupy the server for seconds.
MAX_QUERY = 2_000
MAX_QUERY_TERMS = 32
BUSY_TIMEOUT_MS = 10_000


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


def _create_private(path: Path) -> None:
    """Make the database's missing directories 0700 and a missing database file 0600
    (notes are private, like other per-user stores; the umask would give 0755/0644).
    An existing file or directory keeps its mode. SQLite gives its -wal and -shm files
    the database file's mode."""
    missing = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            pass  # made by another process meanwhile
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _fts_query(text: str) -> str:
    """Plain words → an FTS5 query that ANDs them, immune to FTS syntax in the input."""
    if len(text) > MAX_QUERY:
        raise NoteError(f"query is longer than {MAX_QUERY} characters")
    words = re.findall(r"\w+", text, flags=re.UNICODE)
    if not words:
        raise NoteError("query must contain at least one word")
    if len(words) > MAX_QUERY_TERMS:
        raise NoteError(f"query has {len(words)} words; at most {MAX_QUERY_TERMS} are allowed")
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


def _clean_tags(tags: list[str] | None) -> list[str]:
    tags = tags or []
    if len(tags) > MAX_TAGS:
        raise NoteError(f"a note has at most {MAX_TAGS} tags")
    clean = sorted({t.strip().lower() for t in tags if t and t.strip()})
    for t in clean:
        if len(t) > MAX_TAG:
            raise NoteError(f"tag {t[:20]!r}… is longer than {MAX_TAG} characters")
    return clean


class NoteStore:
    def __init__(self, path: str | os.PathLike[str]):
        self.path = str(path)
        self._memory = self.path == ":memory:"
        if not self._memory:
            _create_private(Path(self.path))
        self._local = threading.local()
        # One writer at a time in this process; other processes wait on the busy timeout.
        self._write_lock = threading.Lock()
        # An in-memory database exists once per connection: share one, serialised.
        self._shared = self._connect() if self._memory else None
        with self._write_lock:
            db = self.db
            if not self._memory:
                db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,  # autocommit; writes open their own transaction
            check_same_thread=not self._memory,
        )
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return db

    @property
    def db(self) -> sqlite3.Connection:
        """This thread's connection."""
        if self._shared is not None:
            return self._shared
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    def _read(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        if self._shared is not None:
            with self._write_lock:
                return self.db.execute(sql, params).fetchall()
        return self.db.execute(sql, params).fetchall()

    def _write(self, sql: str, params: tuple) -> sqlite3.Cursor:
        with self._write_lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                cur = db.execute(sql, params)
                db.execute("COMMIT")
            except BaseException:
                # Whatever failed (the statement or the commit), nothing is stored and
                # the connection is ready for the next transaction.
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return cur

    def add(self, title: str, body: str, tags: list[str] | None = None) -> int:
        title = (title or "").strip()
        if not title:
            raise NoteError("title must not be empty")
        if len(title) > MAX_TITLE:
            raise NoteError(f"title is longer than {MAX_TITLE} characters")
        if len(body) > MAX_BODY:
            raise NoteError(f"body is longer than {MAX_BODY} characters")
        clean_tags = _clean_tags(tags)
        cur = self._write(
            "INSERT INTO notes(title, body, tags, created) VALUES (?, ?, ?, ?)",
            (title, body, json.dumps(clean_tags), time.time()),
        )
        return int(cur.lastrowid)

    def get(self, note_id: int) -> Note:
        rows = self._read("SELECT * FROM notes WHERE id = ?", (note_id,))
        row = rows[0] if rows else None
        if row is None:
            raise NoteError(f"no note with id {note_id}")
        return Note(row["id"], row["title"], row["body"], json.loads(row["tags"]), row["created"])

    def search(self, query: str, limit: int = 10) -> list[dict]:
        if not 1 <= limit <= 100:
            raise NoteError("limit must be between 1 and 100")
        rows = self._read(
            """
            SELECT n.id, n.title, n.tags,
                   snippet(notes_fts, 1, '[', ']', '…', 12) AS snippet,
                   bm25(notes_fts, 5.0, 1.0, 2.0) AS rank
            FROM notes_fts JOIN notes n ON n.id = notes_fts.rowid
            WHERE notes_fts MATCH ?
            ORDER BY rank LIMIT ?
            """,
            (_fts_query(query), limit),
        )
        return [
            {"id": r["id"], "title": r["title"], "tags": json.loads(r["tags"]), "snippet": r["snippet"], "score": round(-r["rank"], 4)}
            for r in rows
        ]

    def list(self, tag: str | None = None, limit: int = 50) -> list[dict]:
        if not 1 <= limit <= 500:
            raise NoteError("limit must be between 1 and 500")
        if tag and len(tag) > MAX_TAG:
            raise NoteError(f"tag is longer than {MAX_TAG} characters")
        if tag:
            rows = self._read(
                "SELECT n.id, n.title, n.tags, n.created FROM notes n, json_each(n.tags) t "
                "WHERE t.value = ? ORDER BY n.id DESC LIMIT ?",
                (tag.strip().lower(), limit),
            )
        else:
            rows = self._read("SELECT id, title, tags, created FROM notes ORDER BY id DESC LIMIT ?", (limit,))
        return [{"id": r["id"], "title": r["title"], "tags": json.loads(r["tags"]), "created": r["created"]} for r in rows]

    def delete(self, note_id: int) -> bool:
        cur = self._write("DELETE FROM notes WHERE id = ?", (note_id,))
        if cur.rowcount == 0:
            raise NoteError(f"no note with id {note_id}")
        return True
