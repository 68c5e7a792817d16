"""Helpers for tests and benchmarks: a live server in a thread, a logged-in API client."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import uvicorn

from annotation_ui.pgtemp import free_port


class LiveServer:
    """uvicorn serving an app on loopback from a background thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=1,
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def login(client: httpx.Client, username: str, password: str) -> str:
    """Log the client in; sets its CSRF header; returns the token."""
    r = client.post("/api/login", json={"username": username, "password": password})
    r.raise_for_status()
    csrf = r.json()["csrf"]
    client.headers["X-CSRF-Token"] = csrf
    return csrf
