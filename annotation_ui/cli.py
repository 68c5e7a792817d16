"""`hfl annotate`: the expression-labelling server and its import/export."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Expression-labelling server: serve, import items, export the kept set.", no_args_is_help=True
)
