"""`hfl train`: landmark tokenizer and LaTo trainers."""

from __future__ import annotations

import typer

app = typer.Typer(help="Train the landmark tokenizer or LaTo from HFL shards.", no_args_is_help=True)
