"""The FastAPI application: pages, static assets, the JSON API, security headers."""

from __future__ import annotations

import threading
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from annotation_ui import api_admin, api_auth, api_label
from annotation_ui.assign import AssignError
from annotation_ui.db import Database
from annotation_ui.deps import Settings, optional_user
from annotation_ui.guard import SECURITY_HEADERS, Guard
from annotation_ui.throttle import LoginPolicy

STATIC = Path(__file__).parent / "static"
__all__ = ["SECURITY_HEADERS", "create_app"]


def _warm_imports() -> None:
    import krippendorff  # noqa: F401
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def create_app(
    db: Database,
    secure_cookies: bool = False,
    session_hours: float = 12.0,
    login_policy: LoginPolicy | None = None,
) -> FastAPI:
    """The labelling app on one database; `login_policy`: login throttling thresholds."""
    app = FastAPI(title="HFL expression labelling", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = Settings(
        db=db,
        secure_cookies=secure_cookies,
        session_hours=session_hours,
        login_policy=login_policy or LoginPolicy(),
    )
    app.include_router(api_auth.router)
    app.include_router(api_label.router)
    app.include_router(api_admin.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(AssignError)
    def _assign_error(request: Request, exc: AssignError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    app.add_middleware(Guard)
    # the dashboard's first confusion image would otherwise pay matplotlib's import (seconds, cold)
    threading.Thread(target=_warm_imports, daemon=True).start()

    def page(name: str) -> FileResponse:
        return FileResponse(STATIC / name, headers={"Cache-Control": "no-store"})

    @app.get("/", include_in_schema=False)
    def root(request: Request) -> Response:
        auth = optional_user(request)
        if auth is None:
            return RedirectResponse("login", status_code=303)
        return RedirectResponse("admin" if auth.is_admin else "label", status_code=303)

    @app.get("/login", include_in_schema=False)
    def login_page() -> Response:
        return page("login.html")

    @app.get("/label", include_in_schema=False)
    def label_page(request: Request) -> Response:
        if optional_user(request) is None:
            return RedirectResponse("login", status_code=303)
        return page("label.html")

    @app.get("/admin", include_in_schema=False)
    def admin_page(request: Request) -> Response:
        auth = optional_user(request)
        if auth is None:
            return RedirectResponse("login", status_code=303)
        if not auth.is_admin:
            return RedirectResponse("label", status_code=303)
        return page("admin.html")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        return {"ok": True}

    return app
