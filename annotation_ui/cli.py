"""`hfl annotate`: the expression-labelling server and its import/export."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Expression-labelling server: serve, import items, export the kept set.", no_args_is_help=True
)

DB_ENV = "HFL_ANNOTATE_DB"
DEFAULT_DB = "sqlite:///annotations.db"
Db = Annotated[
    str,
    typer.Option(
        "--db", envvar=DB_ENV, help="SQLAlchemy URL or SQLite file (postgresql://user@host/db for teams)"
    ),
]
ProjectName = Annotated[str, typer.Option("--project", help="project name")]


def _db(url: str):  # type: ignore[no-untyped-def]
    from annotation_ui.db import Database

    db = Database(url)
    db.migrate()
    return db


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg="red", err=True)
    raise typer.Exit(2)


@app.command()
def serve(
    db: Db = DEFAULT_DB,
    host: Annotated[str, typer.Option(help="bind address (0.0.0.0: every interface)")] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8765,
    secure_cookies: Annotated[bool, typer.Option(help="mark cookies Secure (behind HTTPS)")] = False,
    session_hours: Annotated[float, typer.Option(help="login session length")] = 12.0,
    root_path: Annotated[str, typer.Option(help="URL prefix when a proxy serves the app under a path")] = "",
    proxy_headers: Annotated[
        bool, typer.Option(help="trust X-Forwarded-* from --forwarded-allow-ips")
    ] = False,
    forwarded_allow_ips: Annotated[str, typer.Option()] = "127.0.0.1",
    workers: Annotated[int, typer.Option(help="processes (PostgreSQL only; SQLite wants one)")] = 1,
) -> None:
    """Serve the labelling app (migrates the database first)."""
    import uvicorn

    from annotation_ui.app import create_app

    database = _db(db)
    if database.is_sqlite and workers > 1:
        _fail("SQLite serves from one process; use PostgreSQL for --workers > 1")
    typer.echo(f"hfl annotate: http://{host}:{port}{root_path}/  (db {database.url.render_as_string()})")
    if workers > 1:
        os.environ[DB_ENV] = db
        os.environ["HFL_ANNOTATE_SECURE"] = "1" if secure_cookies else ""
        os.environ["HFL_ANNOTATE_SESSION_HOURS"] = str(session_hours)
        uvicorn.run(
            "annotation_ui.app_factory:app",
            host=host,
            port=port,
            workers=workers,
            root_path=root_path,
            proxy_headers=proxy_headers,
            forwarded_allow_ips=forwarded_allow_ips,
        )
        return
    uvicorn.run(
        create_app(database, secure_cookies=secure_cookies, session_hours=session_hours),
        host=host,
        port=port,
        root_path=root_path,
        proxy_headers=proxy_headers,
        forwarded_allow_ips=forwarded_allow_ips,
        log_level="info",
    )


@app.command()
def migrate(db: Db = DEFAULT_DB) -> None:
    """Create or upgrade the database schema (serve does this too)."""
    database = _db(db)
    typer.echo(f"schema up to date: {database.url.render_as_string()}")


@app.command("adduser")
def adduser(
    username: str,
    role: Annotated[str, typer.Option(help="annotator or admin")] = "annotator",
    password: Annotated[
        str | None, typer.Option(envvar="HFL_ANNOTATE_PASSWORD", help="prompted for when not given")
    ] = None,
    project: Annotated[
        list[str] | None, typer.Option("--project", help="make the user a member of this project (repeat)")
    ] = None,
    db: Db = DEFAULT_DB,
) -> None:
    """Add an account (Argon2-hashed password), optionally a member of projects."""
    from annotation_ui.security import create_user
    from annotation_ui.team import find_project, set_member

    if password is None:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    database = _db(db)

    def work(s):  # type: ignore[no-untyped-def]
        u = create_user(s, username, password or "", role)
        for name in project or []:
            set_member(s, find_project(s, name), u)
        return u.username

    try:
        name = database.transact(work)
    except ValueError as exc:
        _fail(str(exc))
    where = f" (member of {', '.join(project)})" if project else ""
    typer.echo(f"added {role} {name}{where}")


@app.command("passwd")
def passwd(
    username: str,
    password: Annotated[str | None, typer.Option(envvar="HFL_ANNOTATE_PASSWORD")] = None,
    db: Db = DEFAULT_DB,
) -> None:
    """Set a user's password; every session of the user ends (they log in again)."""
    from annotation_ui.security import check_password_length
    from annotation_ui.team import find_user, set_password

    if password is None:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    try:
        check_password_length(password)
        ended = _db(db).transact(lambda s: set_password(s, find_user(s, username), password or ""))
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"password set for {username}; {ended} session(s) ended")


def _set_active(username: str, active: bool, db: str) -> None:
    from annotation_ui.team import find_user, set_active

    try:
        ended = _db(db).transact(lambda s: set_active(s, find_user(s, username), active))
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"{username} {'enabled' if active else f'disabled; {ended} session(s) ended'}")


@app.command("disable")
def disable(username: str, db: Db = DEFAULT_DB) -> None:
    """Disable a user: they cannot log in, their sessions and leases end (their labels stay)."""
    _set_active(username, False, db)


@app.command("enable")
def enable(username: str, db: Db = DEFAULT_DB) -> None:
    """Enable a disabled user again."""
    _set_active(username, True, db)


@app.command("members")
def members_cmd(
    project: ProjectName = "default",
    add: Annotated[
        list[str] | None, typer.Option("--add", help="user names to add (repeat or a,b,c)")
    ] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="user names to remove")] = None,
    db: Db = DEFAULT_DB,
) -> None:
    """Show or change who works on a project (annotators see and get only their projects)."""
    from annotation_ui.team import find_project, find_user, members, set_member, team_size

    def names(values: list[str] | None) -> list[str]:
        return [n for v in values or [] for n in v.split(",") if n.strip()]

    def work(s):  # type: ignore[no-untyped-def]
        p = find_project(s, project)
        for n in names(add):
            set_member(s, p, find_user(s, n), True)
        for n in names(remove):
            set_member(s, p, find_user(s, n), False)
        return [(u.username, u.role, u.active) for u in members(s, p)], team_size(s, p), p.raters_per_item

    try:
        rows, size, raters = _db(db).transact(work)
    except ValueError as exc:
        _fail(str(exc))
    for name, role, active in rows:
        typer.echo(f"{name}\t{role}\t{'active' if active else 'disabled'}")
    typer.echo(f"project {project!r}: {size} active annotator(s), {raters} raters per item")
    if size < raters:
        typer.secho(
            f"warning: {raters} raters per item but {size} annotators: no item can be completed "
            f"(add members or lower the raters: hfl annotate settings --project {project} --raters {size})",
            fg="yellow",
            err=True,
        )


@app.command("users")
def users(db: Db = DEFAULT_DB) -> None:
    """List accounts (role, active or disabled, login lock) and locked client addresses."""
    from sqlalchemy import select

    from annotation_ui import throttle
    from annotation_ui.models import User, utcnow

    policy = throttle.LoginPolicy()
    with _db(db).read() as s:
        locks = {(lk["scope"], lk["key"]): lk for lk in throttle.lockouts(s, policy, utcnow())}
        for u in s.scalars(select(User).order_by(User.id)):
            lk = locks.pop((throttle.ACCOUNT, throttle.account_key(u.username)), None)
            state = "active" if u.active else "disabled"
            if lk:
                state += f"\tlogin {'locked' if lk['locked'] else 'delayed'} {lk['retry_after_s']} s"
            typer.echo(f"{u.username}\t{u.role}\t{state}")
        for (scope, key), lk in locks.items():
            what = "locked" if lk["locked"] else "delayed"
            typer.echo(f"[{scope}] {key}\t{lk['failures']} failed logins\t{what} {lk['retry_after_s']} s")


@app.command("unlock")
def unlock(
    name: Annotated[str | None, typer.Argument(help="user name")] = None,
    address: Annotated[str | None, typer.Option(help="a client address instead of a user")] = None,
    db: Db = DEFAULT_DB,
) -> None:
    """Lift a login lock of a user (or of a client address) and forget its failed logins."""
    from annotation_ui import throttle
    from annotation_ui.security import normalize_username

    if (name is None) == (address is None):
        _fail("give a user name or --address")
    if address:
        scope, key = throttle.ADDRESS, address
    else:
        scope, key = throttle.ACCOUNT, throttle.account_key(normalize_username(name or ""))
    n = _db(db).transact(lambda s: throttle.clear(s, scope, key))
    typer.echo(f"{scope} {key}: {'unlocked' if n else 'was not locked'}")


@app.command("import")
def import_(
    sources: Annotated[
        list[Path], typer.Argument(help="build folders, manifests, .tar shards, image folders")
    ],
    project: ProjectName = "default",
    db: Db = DEFAULT_DB,
    config: Annotated[
        Path | None, typer.Option(help="YAML: raters_per_item, quorum, lease_seconds, gold_every, guidelines")
    ] = None,
    raters: Annotated[int | None, typer.Option(help="raters per item (default 5)")] = None,
    quorum: Annotated[int | None, typer.Option(help="agreeing raters to keep an item (default 3)")] = None,
    guidelines: Annotated[Path | None, typer.Option(help="text file shown on the labelling page")] = None,
    gold: Annotated[
        Path | None, typer.Option(help="gold answers: JSONL/JSON/CSV key,expression,intensity")
    ] = None,
    gold_every: Annotated[
        int | None, typer.Option(help="a gold item every N labels (0: never; default 10)")
    ] = None,
    lease_seconds: Annotated[int | None, typer.Option(help="how long a served item stays reserved")] = None,
    split: Annotated[str | None, typer.Option(help="only this split of a build")] = None,
    limit: Annotated[int | None, typer.Option(help="import at most N new items per source")] = None,
    members: Annotated[
        str | None, typer.Option(help="annotators who work on the project: a,b,c or 'all' (active ones)")
    ] = None,
    show_instruction: Annotated[
        bool | None,
        typer.Option(help="show a pair's edit instruction on the labelling page (hidden by default)"),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="accept raters above the team size or a quorum that is not a majority")
    ] = False,
) -> None:
    """Import items (single faces or source/target pairs) into a project.

    Refused (nothing is imported) when the raters per item exceed the project's active annotator members
    or the quorum is not a strict majority of the raters, unless --force."""
    from sqlalchemy import select

    from annotation_ui.importer import (
        check_team,
        get_or_create_project,
        import_samples,
        load_gold,
        read_source,
    )
    from annotation_ui.models import User
    from annotation_ui.team import find_user, set_member

    settings: dict = {}
    if config is not None:
        import yaml

        settings = yaml.safe_load(config.read_text()) or {}
        if "guidelines_file" in settings:
            settings["guidelines"] = (config.parent / settings.pop("guidelines_file")).read_text()
    text = guidelines.read_text() if guidelines is not None else settings.get("guidelines")
    gold_map = load_gold(gold) if gold is not None else None
    database = _db(db)

    def work(s):  # type: ignore[no-untyped-def]
        p = get_or_create_project(
            s,
            project,
            raters_per_item=raters or settings.get("raters_per_item"),
            quorum=quorum or settings.get("quorum"),
            guidelines=text,
            lease_seconds=lease_seconds or settings.get("lease_seconds"),
            gold_every=gold_every if gold_every is not None else settings.get("gold_every"),
            force=force,
        )
        show = show_instruction if show_instruction is not None else settings.get("show_instruction")
        if show is not None:
            p.show_instruction = bool(show)
        wanted = members or settings.get("members")
        if wanted == "all":
            team = s.scalars(select(User).where(User.role == "annotator", User.active)).all()
        else:  # "a,b,c" on the command line, a list or a string in the YAML config
            listed = wanted if isinstance(wanted, list) else str(wanted or "").split(",")
            team = [find_user(s, str(n).strip()) for n in listed if str(n).strip()]
        for u in team:
            set_member(s, p, u)
        check_team(s, p, force)
        results = [import_samples(s, p, read_source(src, split), gold_map, limit) for src in sources]
        return p.id, results

    for src in sources:
        if not src.exists():
            _fail(f"{src}: no such file or folder")
    try:
        pid, results = database.transact(work)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    for src, r in zip(sources, results, strict=True):
        typer.echo(f"{src}: {r.added} added, {r.existing} already there, {len(r.skipped)} without an image")
    typer.echo(f"project {project!r} (id {pid})")


@app.command("settings")
def settings_cmd(
    project: ProjectName = "default",
    raters: Annotated[int | None, typer.Option(help="raters per item")] = None,
    quorum: Annotated[int | None, typer.Option(help="agreeing raters to keep an item")] = None,
    lease_seconds: Annotated[int | None, typer.Option(help="how long a served item stays reserved")] = None,
    show_instruction: Annotated[bool | None, typer.Option(help="show a pair's instruction")] = None,
    force: Annotated[
        bool, typer.Option(help="accept raters above the team size or a quorum that is not a majority")
    ] = False,
    db: Db = DEFAULT_DB,
) -> None:
    """Show or change a project's raters per item, quorum, lease and instruction display.

    Raters may go up at any time and down to the most labels an item already holds; the quorum may
    change at any time (strict majority unless --force); see the README's team section."""
    from annotation_ui.importer import check_team, configure_project
    from annotation_ui.team import find_project, team_size

    def work(s):  # type: ignore[no-untyped-def]
        p = find_project(s, project)
        if raters is not None or quorum is not None:
            configure_project(s, p, raters, quorum, force)
            check_team(s, p, force)
        if lease_seconds is not None:
            if lease_seconds < 1:
                raise ValueError("--lease-seconds: at least 1")
            p.lease_seconds = lease_seconds
        if show_instruction is not None:
            p.show_instruction = show_instruction
        return p.raters_per_item, p.quorum, p.lease_seconds, p.show_instruction, team_size(s, p)

    try:
        r, q, lease, show, team = _db(db).transact(work)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(
        f"project {project!r}: {r} raters per item, quorum {q}, lease {lease} s, "
        f"instruction {'shown' if show else 'hidden'}, {team} active annotator member(s)"
    )


@app.command()
def export(
    out: Annotated[Path, typer.Option(help="output folder")],
    project: ProjectName = "default",
    db: Db = DEFAULT_DB,
    fmt: Annotated[str, typer.Option("--format", help="jsonl, parquet or both")] = "both",
    eval_fraction: Annotated[float, typer.Option(help="share of kept items for eval (paper: 1K of 18K)")] = 1
    / 18,
    eval_size: Annotated[
        int | None, typer.Option(help="exact eval count (overrides --eval-fraction)")
    ] = None,
    seed: Annotated[str, typer.Option(help="salt of the deterministic split")] = "hfl",
) -> None:
    """Write the kept set (quorum reached) with a train/eval split, agreement.json and confusion.png."""
    from sqlalchemy import select

    from annotation_ui.export import export_project
    from annotation_ui.models import Project

    formats = {"both": ("jsonl", "parquet"), "jsonl": ("jsonl",), "parquet": ("parquet",)}.get(fmt)
    if formats is None:
        _fail("--format: jsonl, parquet or both")
    with _db(db).read() as s:
        p = s.scalar(select(Project).where(Project.name == project))
        if p is None:
            _fail(f"no project {project!r}")
        summary = export_project(s, p, out, formats, eval_fraction, eval_size, seed)
    r, q = summary["project"]["raters_per_item"], summary["project"]["quorum"]
    typer.echo(
        f"exported {summary['items_kept']} items ({summary['train']} train / {summary['eval']} eval) -> {out}"
    )
    typer.echo(
        f"of {summary['items_total']} items: {summary['items_complete']} complete ({r} labels each), "
        f"{summary['items_kept']} of them kept (>= {q} of {r} agree), "
        f"{summary['items_complete'] - summary['items_kept']} without a quorum; "
        f"{summary['items_total'] - summary['items_complete']} not complete yet (not exported)"
    )
    typer.echo(
        "fleiss kappa {:.3f} · alpha expression {} · alpha intensity {}".format(
            summary["fleiss_kappa_expression"] or float("nan"),
            summary["krippendorff_alpha_expression_nominal"],
            summary["krippendorff_alpha_intensity_ordinal"],
        )
    )


@app.command()
def stats(project: ProjectName = "default", db: Db = DEFAULT_DB) -> None:
    """Print the project's agreement figures as JSON."""
    from sqlalchemy import select

    from annotation_ui.models import Project
    from annotation_ui.stats import project_report

    with _db(db).read() as s:
        p = s.scalar(select(Project).where(Project.name == project))
        if p is None:
            _fail(f"no project {project!r}")
        typer.echo(json.dumps(project_report(s, p), indent=2, default=str))
