"""Streamable HTTP for the notes server: bearer-token authentication and a session
admission policy that a flood of sessions cannot lock other clients out of.

Authentication: one shared secret (a token file or `$PYKILN_NOTES_TOKEN`), compared
in constant time; required whenever the server listens on anything but loopback.

Sessions: every client (peer address) may hold `per_client` sessions and the server
`max_sessions` in all. A new session past either bound ends a session nobody uses
(see `Admission`) instead of being refused: sessions opened and left idle, as a flood
leaves them, make room two seconds later, first the asking client's own; a session
in use is never ended. Only when no session can go is a new one refused (503).
"""

from __future__ import annotations

import contextvars
import hmac
import ipaddress
import json
import logging
import math
import os
import sys
from typing import Any

LOOPBACK_NAMES = ("localhost",)
MIN_TOKEN = 16
# The SDK only makes a session's idle scope (what ending an idle session cancels)
# when it has an idle timeout; "never" is a timeout longer than any process lives.
NEVER = 100 * 365 * 24 * 3600.0

_PEER: contextvars.ContextVar[str] = contextvars.ContextVar("pykiln_notes_peer", default="?")


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ConfigError(Exception):
    """A setting the server refuses to start with; the message says which and why."""


def load_token(token_file: str | None) -> bytes | None:
    """The bearer token: `--token-file` (first line), else `$PYKILN_NOTES_TOKEN`, else None."""
    if token_file:
        try:
            with open(token_file, "rb") as f:
                raw = f.read().splitlines()
        except OSError as e:
            raise ConfigError(f"cannot read the token file {token_file}: {e.strerror}") from None
        token, origin = (raw[0] if raw else b""), f"the token file {token_file}"
    elif "PYKILN_NOTES_TOKEN" in os.environ:
        token, origin = os.environ["PYKILN_NOTES_TOKEN"].encode(), "$PYKILN_NOTES_TOKEN"
    else:
        return None
    token = token.strip()
    if len(token) < MIN_TOKEN:
        raise ConfigError(
            f"{origin} holds a token of {len(token)} characters; use at least {MIN_TOKEN} "
            "(for example the output of `openssl rand -hex 32`)"
        )
    if any(c < 0x21 or c > 0x7E for c in token):
        raise ConfigError(f"{origin}: a bearer token is printable ASCII without spaces")
    return token


class BearerAuth:
    """ASGI middleware: every HTTP request carries `Authorization: Bearer <token>`, or
    gets 401 with a `WWW-Authenticate` challenge (RFC 6750). Lifespan passes through."""

    def __init__(self, app: Any, token: bytes) -> None:
        self.app = app
        self.expected = b"Bearer " + token

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = [v for k, v in scope.get("headers", ()) if k == b"authorization"]
        if len(given) == 1 and hmac.compare_digest(given[0], self.expected):
            return await self.app(scope, receive, send)
        challenge = 'Bearer realm="pykiln-notes"'
        if given:
            challenge += ', error="invalid_token"'
        body = json.dumps({"error": "unauthorized", "message": "a valid bearer token is required"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", challenge.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class Tracking:
    """ASGI middleware that tells session admission who is asking (the peer address)
    and which sessions are in use (requests seen per session id)."""

    def __init__(self, app: Any, admission: Admission | None) -> None:
        self.app = app
        self.admission = admission

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.admission is None:
            return await self.app(scope, receive, send)
        client = scope.get("client")
        token = _PEER.set(client[0] if client else "?")
        for k, v in scope.get("headers", ()):
            if k == b"mcp-session-id":
                self.admission.seen(v.decode("latin-1"))
        try:
            await self.app(scope, receive, send)
        finally:
            _PEER.reset(token)


class Admission:
    """The session admission policy, installed on the SDK's session manager (mcp 2.3:
    its `_admit_session` is where a new session is registered).

    A session may be ended to make room only when it is idle (no request in flight)
    and not in use: a session that has only been initialized, idle for `OPENED_IDLE`
    seconds (a client sends its next request at once; a flood never does), or any
    session idle for `IN_USE_IDLE`. The stalest such session of the asking client goes
    first, then (at the global bound) the stalest of all; with none, the new session
    is refused (503)."""

    OPENED_IDLE = 2.0
    IN_USE_IDLE = 30.0

    def __init__(self, manager: Any, per_client: int, max_sessions: int, idle_timeout: float) -> None:
        self.manager = manager
        self.per_client = per_client
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.by_peer: dict[str, dict[str, Any]] = {}
        self.requests: dict[str, int] = {}
        self.refused = 0
        self._said_at = -math.inf
        self._admit = manager._admit_session
        manager._admit_session = self.admit
        # Our bounds replace the SDK's plain refusal at its cap (which room is made
        # under, so it never trips), and our rate-limited message its line for every
        # refused session.
        manager.max_sessions = max_sessions
        logging.getLogger(manager.__class__.__module__).addFilter(
            lambda record: not str(record.msg).startswith("Refusing to open a new session")
        )

    def seen(self, sid: str) -> None:
        if sid in self.requests:
            self.requests[sid] += 1

    def _live(self) -> dict[str, Any]:
        return self.manager._server_instances

    def _stalest_unused(self, sessions: dict[str, Any], now: float) -> str | None:
        best, best_deadline = None, math.inf
        for sid, transport in sessions.items():
            scope = transport.idle_scope
            # While a request is in flight the SDK holds the deadline at infinity;
            # once idle it is the last request's end plus the idle timeout.
            if scope is None or scope.cancel_called or scope.deadline == math.inf:
                continue
            idle_for = now - (scope.deadline - self.idle_timeout)
            # The opening request counts one, `notifications/initialized` another.
            needed = self.OPENED_IDLE if self.requests.get(sid, 0) <= 1 else self.IN_USE_IDLE
            if idle_for >= needed and scope.deadline < best_deadline:
                best, best_deadline = sid, scope.deadline
        return best

    def _end(self, sid: str) -> None:
        transport = self._live().pop(sid, None)
        self.manager._session_owners.pop(sid, None)
        self.requests.pop(sid, None)
        for sessions in self.by_peer.values():
            sessions.pop(sid, None)
        if transport is not None and transport.idle_scope is not None:
            # The session's own task sees its idle scope end and tears the session
            # down as after an idle timeout; its id answers 404 from now on.
            transport.idle_scope.cancel()

    def _make_room(self, sessions: dict[str, Any], now: float) -> bool:
        sid = self._stalest_unused(sessions, now)
        if sid is None:
            return False
        self._end(sid)
        return True

    def _refuse(self, now: float, why: str) -> None:
        # Said at most every 10 s: a flood must not flood the log too.
        self.refused += 1
        if now - self._said_at >= 10:
            print(f"pykiln-notes: refused {self.refused} new session(s) so far; now because {why}", file=sys.stderr)
            self._said_at = now
        return None

    def admit(self, requestor: Any) -> Any:
        import anyio

        live = self._live()
        now = anyio.current_time()
        peer = _PEER.get()
        mine = self.by_peer.setdefault(peer, {})
        for sid in [s for s in mine if s not in live]:
            del mine[sid]
            self.requests.pop(sid, None)
        if len(mine) >= self.per_client and not self._make_room(mine, now):
            return self._refuse(now, f"{peer} holds {len(mine)} sessions in use")
        if len(live) >= self.max_sessions and not self._make_room(live, now):
            return self._refuse(now, f"{len(live)} sessions are open and in use")
        transport = self._admit(requestor)
        if transport is not None:
            mine[transport.mcp_session_id] = transport
            self.requests[transport.mcp_session_id] = 1
        return transport


def serve(server: Any, args: Any) -> int:
    """Streamable HTTP under uvicorn, with its access log on stderr (uvicorn's default
    sends it to stdout)."""
    import copy

    import anyio
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    try:
        token = load_token(args.token_file)
    except ConfigError as e:
        print(f"pykiln-notes: {e}", file=sys.stderr)
        return 2
    if token is None and not is_loopback(args.host):
        print(
            f"pykiln-notes: refusing to listen on {args.host} without authentication: give a bearer token "
            "with --token-file FILE or $PYKILN_NOTES_TOKEN (clients send `Authorization: Bearer <token>`)",
            file=sys.stderr,
        )
        return 2
    if args.max_sessions_per_client < 1 or args.max_sessions < 1:
        print("pykiln-notes: --max-sessions and --max-sessions-per-client must be at least 1", file=sys.stderr)
        return 2
    timeout = None if args.stateless else (args.session_timeout if args.session_timeout > 0 else NEVER)
    app = server.streamable_http_app(stateless_http=args.stateless, session_idle_timeout=timeout, host=args.host)
    admission = None
    if timeout is not None:
        manager = server._lowlevel_server._session_manager
        admission = Admission(manager, args.max_sessions_per_client, args.max_sessions, timeout)
    app = Tracking(app, admission)
    if token is not None:
        app = BearerAuth(app, token)
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    config = uvicorn.Config(app, host=args.host, port=args.port, log_config=log_config, log_level="info")
    anyio.run(uvicorn.Server(config).serve)
    return 0
