"""Bounded requests (issue 14, items 2-3): 413 before the body is read (tighter without a session), one
password length rule on every path; strict ids and clamped limits (404/422, never 500), the security
headers on every answer, errors included, and a connection that keeps working after a bad request."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest
from annotate_support import PASSWORD, add_users, make_project
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from annotation_ui.app import SECURITY_HEADERS, create_app
from annotation_ui.db import Database
from annotation_ui.guard import ANON_BODY_LIMIT, BODY_LIMIT
from annotation_ui.testing import LiveServer, login

pytest_plugins = ["annotate_fixtures"]


@pytest.fixture
def setup(sqlite_db: Database, face_shard: Path) -> Database:
    make_project(sqlite_db, face_shard, limit=3, gold_every=0)
    add_users(sqlite_db, ["ann"])
    add_users(sqlite_db, ["boss"], role="admin")
    return sqlite_db


def _head_only(port: int, head: str, timeout: float = 10.0) -> bytes:
    """Send request headers only (no body) and read the answer: it must come without the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def _has_security_headers(raw: bytes) -> bool:
    head = raw.split(b"\r\n\r\n", 1)[0].decode().lower()
    return all(f"{k.lower()}: " in head for k in SECURITY_HEADERS)


def test_60_mib_login_is_413_before_reading(setup: Database) -> None:
    with LiveServer(create_app(setup)) as srv:
        size = 60 * 1024 * 1024
        head = (
            f"POST /api/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n"
        )
        t0 = time.monotonic()
        raw = _head_only(srv.port, head)  # had the server waited for the 60 MiB, this would time out
        assert raw.startswith(b"HTTP/1.1 413"), raw[:200]
        assert b"connection: close" in raw.lower() and _has_security_headers(raw)
        # a 40 MiB upload in flight does not hold anybody else up: the health check answers meanwhile
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as slow:
            slow.sendall(head.replace(str(size), str(40 * 1024 * 1024)).encode() + b"{" * 1000)
            assert httpx.get(srv.url + "/healthz", timeout=5).status_code == 200
        assert time.monotonic() - t0 < 10
        # a login with a session cookie is still an unauthenticated route: the tight limit applies
        head2 = head.replace(str(size), str(ANON_BODY_LIMIT + 1)).replace(
            "Content-Type", "Cookie: hfl_session=x\r\nContent-Type"
        )
        assert _head_only(srv.port, head2).startswith(b"HTTP/1.1 413")


def test_chunked_bodies_are_bounded_too(setup: Database) -> None:
    with LiveServer(create_app(setup)) as srv:

        def chunked(parts: list[bytes]) -> bytes:
            head = (
                "POST /api/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )
            body = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts) + b"0\r\n\r\n"
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                s.sendall(head.encode() + body)
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            return data

        big = chunked([b'{"username": "ann", "password": "' + b"x" * 8192] * 3 + [b'"}'])
        assert big.startswith(b"HTTP/1.1 413") and _has_security_headers(big)
        ok = chunked([b'{"username": "ann", ', f'"password": "{PASSWORD}"}}'.encode()])
        assert ok.startswith(b"HTTP/1.1 200"), ok[:300]


def test_limits_are_tighter_without_a_session(setup: Database) -> None:
    c = TestClient(create_app(setup))
    login(c, "ann", PASSWORD)
    item = c.post("/api/projects/1/next").json()["item"]
    url = f"/api/projects/1/items/{item['id']}/label"
    pad = "x" * (ANON_BODY_LIMIT * 2)  # over the anonymous limit, well under the session one
    r = c.post(url, json={"expression": "happy", "intensity": "slightly", "note": pad})
    assert r.status_code == 200  # a logged-in request of 32 KiB is fine
    anon = TestClient(create_app(setup))
    assert anon.post(url, json={"expression": "happy", "note": pad}).status_code == 413
    big = "x" * (BODY_LIMIT + 1)
    assert c.post("/api/projects/1/next", content=big).status_code == 413


def test_password_length_is_the_same_everywhere(setup: Database, tmp_path: Path) -> None:
    """An admin could create a user with an 8 MiB password who could never log in (login caps at 1,024)."""
    from annotation_ui.cli import app

    boss = TestClient(create_app(setup))
    login(boss, "boss", PASSWORD)
    huge = "p" * (8 * 1024 * 1024)
    assert boss.post("/api/admin/users", json={"username": "big", "password": huge}).status_code == 413
    r = boss.post("/api/admin/users", json={"username": "big", "password": "p" * 1025})
    assert r.status_code == 422 and "8 to 1024 characters" in r.json()["detail"]
    assert boss.post("/api/admin/users", json={"username": "edge", "password": "p" * 1024}).status_code == 200
    edge = TestClient(create_app(setup))
    assert edge.post("/api/login", json={"username": "edge", "password": "p" * 1024}).status_code == 200
    assert edge.post("/api/login", json={"username": "edge", "password": "p" * 1025}).status_code == 422
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    run = CliRunner().invoke
    r = run(app, ["adduser", "big", "--db", url], env={"HFL_ANNOTATE_PASSWORD": huge})
    assert r.exit_code == 2 and "8 to 1024 characters" in r.output
    assert run(app, ["adduser", "ok1", "--db", url], env={"HFL_ANNOTATE_PASSWORD": PASSWORD}).exit_code == 0
    r = run(app, ["passwd", "ok1", "--db", url], env={"HFL_ANNOTATE_PASSWORD": huge})
    assert r.exit_code == 2 and "8 to 1024 characters" in r.output
    r = run(app, ["passwd", "ok1", "--db", url], env={"HFL_ANNOTATE_PASSWORD": "short"})
    assert r.exit_code == 2 and "8 to 1024 characters" in r.output


NINES30 = "9" * 30
BAD_IDS = [
    f"/api/items/{NINES30}/media/src",
    "/api/items/%C2%B2/media/src",  # superscript two: str.isdigit() is True, int() raises
    "/api/items/" + "9" * 5000 + "/media/image",
    "/api/items/%D9%A3/media/image",  # Arabic-Indic three
    "/api/items/%EF%BC%91/media/image",  # full-width one
    "/api/items/0/media/image",
    "/api/items/2147483648/media/image",  # one past the 32-bit range
    f"/api/projects/{NINES30}",
    "/api/projects/%C2%B2",
    "/api/projects/" + "9" * 5000,
    "/api/projects/%EF%BC%91",
    f"/api/admin/projects/{NINES30}/stats",
    f"/api/admin/projects/{NINES30}/items",
    "/api/admin/projects/%D9%A1/confusion.png",
]


def test_ids_never_500_and_the_connection_survives(setup: Database) -> None:
    """The issue's requests, as an admin (who passes every role check), on one kept-alive connection."""
    with LiveServer(create_app(setup)) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        login(c, "boss", PASSWORD)
        for path in BAD_IDS:
            r = c.get(path)
            assert r.status_code == 404, (path[:60], r.status_code, r.text[:200])
            assert all(r.headers.get(k) == v for k, v in SECURITY_HEADERS.items()), path[:60]
            assert c.get("/api/me").status_code == 200  # the next request on the connection works
        for method, path in [
            ("POST", f"/api/projects/{NINES30}/next"),
            ("POST", f"/api/projects/1/items/{NINES30}/skip"),
            ("POST", "/api/projects/%C2%B2/undo"),
        ]:
            r = c.request(method, path)
            assert r.status_code == 404 and r.headers["x-frame-options"] == "DENY", (path, r.text)
        r = c.post(f"/api/projects/1/items/{NINES30}/label", json={"expression": "neutral"})
        assert r.status_code == 404
        assert c.get("/api/items/1/media/image").status_code == 200  # an ordinary id still works
        assert c.get("/api/projects/1").status_code == 200


def test_offset_and_limit_are_clamped(setup: Database) -> None:
    boss = TestClient(create_app(setup))
    login(boss, "boss", PASSWORD)
    base = "/api/admin/projects/1/items"
    r = boss.get(f"{base}?offset={'9' * 25}")
    assert r.status_code == 200 and r.json() == {"total": 3, "items": []}
    assert len(boss.get(f"{base}?limit=-1").json()["items"]) == 1  # clamped to 1, not "no limit"
    assert len(boss.get(f"{base}?limit={'9' * 40}").json()["items"]) == 3  # clamped to 500
    assert len(boss.get(f"{base}?offset=-5&limit=2").json()["items"]) == 2
    for bad in ("offset=abc", "limit=%C2%B2", "limit=1e3", "offset=" + "9" * 100):
        r = boss.get(f"{base}?{bad}")
        assert r.status_code == 422 and r.headers["x-content-type-options"] == "nosniff", bad


def test_an_unexpected_error_is_a_500_with_headers() -> None:
    """The guard's last line of defence, on an app that raises: JSON 500 with every security header."""
    from fastapi import FastAPI

    from annotation_ui.guard import Guard

    app = FastAPI()
    app.add_middleware(Guard)

    @app.get("/boom")
    def boom() -> dict:
        raise OverflowError("Python int too large to convert to SQLite INTEGER")

    r = TestClient(app).get("/boom")
    assert r.status_code == 500 and r.json() == {"detail": "internal error (logged on the server)"}
    assert all(r.headers.get(k) == v for k, v in SECURITY_HEADERS.items())
