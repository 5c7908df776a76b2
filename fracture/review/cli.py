"""The `fracture review` commands' bodies; fracture/cli.py registers them (with its error handling and examples)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DEFAULT_PARAMS = Path("params.yaml")


def review_serve(
    model: Annotated[str, typer.Option(help="Model dir, or models:/NAME@ALIAS / models:/NAME/VERSION.")],
    eval: Annotated[Path, typer.Option("--eval", help="Eval dir of that model (predictions.parquet).")],
    users: Annotated[Path | None, typer.Option(help="Users file (YAML, scrypt hashes; see docs/review.md).")] = None,
    explain: Annotated[Path | None, typer.Option(help="Explain dir (precomputed Grad-CAM figures).")] = None,
    cache: Annotated[Path | None, typer.Option(help="Preprocess cache: the images as the model saw them.")] = None,
    manifest: Annotated[Path | None, typer.Option(help="manifest.parquet: source files at full resolution.")] = None,
    data_root: Annotated[Path, typer.Option(help="Where the manifest's source roots resolve.")] = Path("."),
    host: Annotated[str | None, typer.Option(help="Interface (default: params review.host, loopback).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default: params review.port).")] = None,
    db: Annotated[str | None, typer.Option(help="SQLAlchemy URL (default: SQLite in --state-dir).")] = None,
    state_dir: Annotated[Path, typer.Option(help="Database, Grad-CAM cache, uploads.")] = Path("data/review"),
    tls_cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM), with --tls-key.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    behind_proxy: Annotated[
        bool, typer.Option(help="A reverse proxy terminates TLS (trust X-Forwarded-*, Secure cookies).")
    ] = False,
    params: Annotated[Path, typer.Option("--params", help="params.yaml to use.", dir_okay=False)] = DEFAULT_PARAMS,
) -> None:
    """Run the clinical review app: case list, Grad-CAM, verdicts, sign-off (Ctrl-C stops it)."""
    from fracture.config import load_params
    from fracture.review.server import ServeOptions, check_exposure, run_review_serve

    cfg = load_params(params)
    opts = ServeOptions(host or cfg.review.host, port or cfg.review.port, users, state_dir, db, tls_cert, tls_key,
                        behind_proxy)  # fmt: skip
    check_exposure(opts)  # before loading anything
    run_review_serve(cfg, model, eval, opts, explain_dir=explain, cache_dir=cache, manifest=manifest,
                     data_root=data_root)  # fmt: skip


def review_add_user(
    users: Annotated[Path, typer.Option(help="Users file to create or update.")],
    username: Annotated[str, typer.Option(help="Login name.")],
    name: Annotated[str | None, typer.Option(help="Display name on verdicts and sign-offs.")] = None,
) -> None:
    """Add a clinical reviewer to the users file (password from a prompt or $FRACTURE_REVIEW_PASSWORD; scrypt hash)."""
    import os

    from fracture.review.auth import add_user

    password = os.environ.get("FRACTURE_REVIEW_PASSWORD") or typer.prompt(
        "Password", hide_input=True, confirmation_prompt=True
    )
    add_user(users, username, password, name)


def review_summary(
    model: Annotated[str, typer.Option(help="models:/NAME/VERSION or models:/NAME@ALIAS.")],
    eval: Annotated[Path, typer.Option("--eval", help="Eval dir the review was done on.")],
    db: Annotated[str | None, typer.Option(help="SQLAlchemy URL (default: SQLite in --state-dir).")] = None,
    state_dir: Annotated[Path, typer.Option(help="The review app's state dir.")] = Path("data/review"),
    out: Annotated[Path, typer.Option(help="Review record (JSON) to write and attach.")] = Path("reports/review.json"),
) -> None:
    """Attach a version's clinical review (counts, agreement, sign-off) to the registry as tags and an artifact."""
    from fracture.review.registry import run_review_summary

    run_review_summary(model, eval, db or f"sqlite:///{(state_dir / 'review.db').resolve()}", out)
