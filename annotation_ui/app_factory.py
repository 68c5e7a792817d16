"""An importable app for multi-worker uvicorn (`hfl annotate serve --workers N`, PostgreSQL): env config."""

from __future__ import annotations

import os

from annotation_ui.app import create_app
from annotation_ui.db import Database

app = create_app(
    Database(os.environ.get("HFL_ANNOTATE_DB", "sqlite:///annotations.db")),
    secure_cookies=bool(os.environ.get("HFL_ANNOTATE_SECURE")),
    session_hours=float(os.environ.get("HFL_ANNOTATE_SESSION_HOURS", "12")),
)
