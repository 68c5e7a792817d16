"""Auth and CSRF refusals, cookie flags, per-queue image access, path traversal (404)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from annotate_support import PASSWORD, add_users, make_project
from fastapi.testclient import TestClient
from sqlalchemy import select

from annotation_ui.app import create_app
from annotation_ui.db import Database
from annotation_ui.models import User
from annotation_ui.testing import LiveServer, login

pytest_plugins = ["annotate_fixtures"]


@pytest.fixture
def setup(sqlite_db: Database, face_shard: Path) -> Database:
    make_project(sqlite_db, face_shard, limit=3, gold_every=0)
    add_users(sqlite_db, ["ann", "other"])
    add_users(sqlite_db, ["boss"], role="admin")
    return sqlite_db


def test_login_refusals_and_cookie_flags(setup: Database) -> None:
    c = TestClient(create_app(setup, secure_cookies=True), base_url="https://testserver")
    assert c.post("/api/login", json={"username": "ann", "password": "wrong-password"}).status_code == 401
    assert c.post("/api/login", json={"username": "nobody", "password": PASSWORD}).status_code == 401
    form = c.post("/api/login", data={"username": "ann", "password": PASSWORD})
    assert form.status_code == 415  # form posts (what a cross-site page can send) are refused
    r = c.post("/api/login", json={"username": "ann", "password": PASSWORD})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" in cookie
    with setup.read() as s:
        stored = s.scalar(select(User.password_hash).where(User.username == "ann"))
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert r.headers["content-security-policy"].startswith("default-src 'self'")


def test_unauthenticated_refusals(setup: Database) -> None:
    c = TestClient(create_app(setup))
    assert c.get("/api/me").status_code == 401
    assert c.post("/api/projects/1/next").status_code == 401
    assert c.get("/api/items/1/media/image").status_code == 401
    assert c.get("/api/admin/projects/1/stats").status_code == 401
    r = c.get("/label", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "login"


def test_csrf_refusals(setup: Database) -> None:
    c = TestClient(create_app(setup))
    csrf = login(c, "ann", PASSWORD)
    del c.headers["X-CSRF-Token"]
    assert c.post("/api/projects/1/next").status_code == 403
    assert c.post("/api/projects/1/next", headers={"X-CSRF-Token": "forged"}).status_code == 403
    item = c.post("/api/projects/1/next", headers={"X-CSRF-Token": csrf}).json()["item"]
    body = {"expression": "happy", "intensity": "slightly"}
    assert c.post(f"/api/projects/1/items/{item['id']}/label", json=body).status_code == 403
    assert c.post(f"/api/projects/1/items/{item['id']}/skip").status_code == 403
    assert c.post("/api/projects/1/undo").status_code == 403
    assert c.post("/api/logout").status_code == 403
    # another user's token does not work for this session either
    other = TestClient(create_app(setup))
    other_csrf = login(other, "other", PASSWORD)
    assert c.post("/api/projects/1/next", headers={"X-CSRF-Token": other_csrf}).status_code == 403
    ok = c.post(f"/api/projects/1/items/{item['id']}/label", json=body, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200
    assert c.post("/api/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert c.get("/api/me").status_code == 401  # the session is gone server-side


def test_roles_and_queue_isolation(setup: Database) -> None:
    ann = TestClient(create_app(setup))
    login(ann, "ann", PASSWORD)
    other = TestClient(create_app(setup))
    login(other, "other", PASSWORD)
    boss = TestClient(create_app(setup))
    login(boss, "boss", PASSWORD)
    assert ann.get("/api/admin/projects/1/stats").status_code == 403
    assert ann.get("/api/admin/users").status_code == 403
    new = {"username": "mallory", "password": "long-enough-1", "role": "admin"}
    assert ann.post("/api/admin/users", json=new).status_code == 403
    assert ann.get("/admin", follow_redirects=False).headers["location"] == "label"
    mine = ann.post("/api/projects/1/next").json()["item"]["id"]
    theirs = other.post("/api/projects/1/next").json()["item"]["id"]
    # images: only items in one's own queue; everything else is 404 (no existence leak)
    assert ann.get(f"/api/items/{mine}/media/image").status_code == 200
    unseen = next(i for i in (1, 2, 3) if i not in (mine, theirs))
    assert ann.get(f"/api/items/{unseen}/media/image").status_code == 404
    if theirs != mine:
        assert ann.get(f"/api/items/{theirs}/media/image").status_code == 404
    assert boss.get(f"/api/items/{unseen}/media/image").status_code == 200
    # labelling an item one was not served is refused
    r = ann.post(f"/api/projects/1/items/{unseen}/label", json={"expression": "sad", "intensity": "normally"})
    assert r.status_code == 409
    assert boss.post("/api/admin/users", json=new).status_code == 200
    assert boss.post("/api/admin/users", json=new).status_code == 422  # exists


TRAVERSALS = [
    "/static/../../../../etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/..%2f..%2f..%2fpyproject.toml",
    "/static/%2e%2e/app.py",
    "/static/../app.py",
    "/api/items/1/media/..%2f..%2f..%2fetc%2fpasswd",
    "/api/items/1/media/../../../../etc/passwd",
    "/api/items/..%2f..%2fetc%2fpasswd/media/image",
    "/api/items/%2e%2e/media/image",
    "/api/items/1%2f..%2f2/media/image",
    "/api/items/-1/media/image",
    "/api/items/1/media/%2fetc%2fpasswd",
    "/api/items/1/media/image%00.png",
    "/..%2f..%2fetc%2fpasswd",
]


def _raw_get(port: int, path: str, cookie: str) -> tuple[int, bytes]:
    """Send the path byte for byte (clients normalise '..' away; a raw socket does not)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
        s.sendall(head.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


def test_path_traversal_is_404(setup: Database) -> None:
    with LiveServer(create_app(setup)) as srv:
        c = TestClient(create_app(setup))
        login(c, "boss", PASSWORD)  # even an admin gets nothing but items by id
        cookie = f"hfl_session={c.cookies.get('hfl_session')}"
        for path in TRAVERSALS:
            status, data = _raw_get(srv.port, path, cookie)
            assert status == 404, (path, status)
            assert b"root:" not in data and b"[project]" not in data and b"create_app" not in data
        status, data = _raw_get(srv.port, "/api/items/1/media/image", cookie)
        assert status == 200 and b"\xff\xd8" in data  # the legitimate route works through the same path
