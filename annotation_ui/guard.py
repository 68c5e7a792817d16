"""The outer ASGI guard of the app: security headers on every answer, request-size limits enforced
before the body is read.

* An unexpected exception is answered with a JSON 500 (logged with its traceback) instead of a bare
  error from the server, and
* every response, errors included, carries the security headers (CSP, frame, sniffing, referrer) and
  API answers `Cache-Control: no-store` (images excepted).

* A request whose `Content-Length` exceeds the limit is answered 413 at once: the body is never read
  (an unauthenticated 60 MiB login costs nothing). A body without a length (chunked) is read only up
  to the limit, then refused.
* The limit is tighter where no session exists yet: `/api/login`, and any request without a session
  cookie, may carry `ANON_BODY_LIMIT`; a logged-in request `BODY_LIMIT` (labels and admin forms are
  tiny; nothing is uploaded through the app).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from annotation_ui.security import SESSION_COOKIE

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
log = logging.getLogger("annotation_ui")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
_SEC = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
BODY_LIMIT = 1 << 20  # 1 MiB for logged-in requests
ANON_BODY_LIMIT = 16 << 10  # 16 KiB for the login and anything without a session cookie


def _header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope.get("headers", []):
        if k == name:
            return v
    return None


def body_limit(scope: Scope, limit: int = BODY_LIMIT, anon_limit: int = ANON_BODY_LIMIT) -> int:
    """The largest body this request may carry."""
    path = scope.get("path", "")
    cookie = _header(scope, b"cookie") or b""
    has_session = f"{SESSION_COOKIE}=".encode() in cookie
    return anon_limit if path.endswith("/api/login") or not has_session else limit


async def send_json(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
    """A small JSON error answer; closes the connection (the unread body must not be parsed as a request)."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _with_headers(scope: Scope, send: Send) -> Send:
    """Wrap `send` so the response start carries the security headers (those the app did not set)."""
    path = scope.get("path", "")
    no_store = "/api/" in path and "/media/" not in path

    async def wrapped(msg: Message) -> None:
        if msg["type"] == "http.response.start":
            headers = list(msg.get("headers", []))
            present = {k.lower() for k, _ in headers}
            headers += [(k, v) for k, v in _SEC if k not in present]
            if no_store and b"cache-control" not in present:
                headers.append((b"cache-control", b"no-store"))
            msg = {**msg, "headers": headers}
        await send(msg)

    return wrapped


class Guard:
    """ASGI middleware: security headers, body-size limits (see the module docstring)."""

    def __init__(self, app: ASGIApp, limit: int = BODY_LIMIT, anon_limit: int = ANON_BODY_LIMIT) -> None:
        self.app = app
        self.limit = limit
        self.anon_limit = anon_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_headers(scope, send)
        started = False

        async def tracked(msg: Message) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self._limited(scope, receive, tracked)
        except Exception:  # noqa: BLE001  (the last line of defence: answer, log, keep the server up)
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await send_json(tracked, 500, "internal error (logged on the server)", [])

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = body_limit(scope, self.limit, self.anon_limit)
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.isdigit() or len(length) > 18:
                await send_json(send, 400, "bad Content-Length", [])
                return
            if int(length) > limit:
                await send_json(send, 413, f"request body over {limit} bytes", [])
                return
        elif scope.get("method") in ("POST", "PUT", "PATCH", "DELETE"):
            # No length given (chunked): read at most `limit` bytes, then hand the buffered body on.
            chunks: list[bytes] = []
            size = 0
            more = True
            while more:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                chunk = msg.get("body", b"")
                size += len(chunk)
                if size > limit:
                    await send_json(send, 413, f"request body over {limit} bytes", [])
                    return
                chunks.append(chunk)
                more = msg.get("more_body", False)
            body = b"".join(chunks)
            sent = False

            async def replay() -> Message:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
            return
        await self.app(scope, receive, send)
