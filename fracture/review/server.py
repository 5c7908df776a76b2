"""`fracture review serve`: check where the app may listen, load the model, the cases and the store, run uvicorn.

Every reviewer logs in, on loopback too (`--users`). Off loopback the app also needs TLS (`--tls-cert` and
`--tls-key`) or `--behind-proxy` (a reverse proxy that terminates TLS and sets X-Forwarded-*), else it refuses
to start before loading anything.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fracture.base.errors import InputError
from fracture.config import Params
from fracture.contracts.artifacts import EXPLAIN_INDEX
from fracture.review.state import ReviewState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    """Where and how the app listens, and where it keeps its state."""

    host: str
    port: int
    users_file: Path | None
    state_dir: Path
    db_url: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    behind_proxy: bool = False


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(opts: ServeOptions) -> None:
    """Refuse to start without a users file, or off loopback without TLS or a documented proxy.

    Raises:
        InputError: naming what is missing.
    """
    if opts.users_file is None:
        raise InputError("--users: every reviewer logs in; create the file with `fracture review add-user`")
    if (opts.tls_cert is None) != (opts.tls_key is None):
        raise InputError("--tls-cert and --tls-key go together")
    if not is_loopback(opts.host) and opts.tls_cert is None and not opts.behind_proxy:
        raise InputError(
            f"--host {opts.host}: off loopback the app needs TLS (--tls-cert/--tls-key) or --behind-proxy "
            "(a reverse proxy terminating TLS); refusing to serve logins in clear text"
        )


def source_paths(manifest_path: Path, data_root: Path, image_ids: pd.Series) -> pd.Series:
    """image_id -> absolute source file, for the cases' rows of the manifest."""
    from fracture.base.io import read_manifest, resolve_image_path

    manifest, roots = read_manifest(manifest_path)
    rows = manifest[manifest["image_id"].astype(str).isin(set(image_ids))]
    paths = [str(resolve_image_path(roots, s, p, data_root)) for s, p in zip(rows["source"], rows["path"], strict=True)]
    return pd.Series(paths, index=rows["image_id"].astype(str).to_numpy())


def explain_index(explain_dir: Path | None) -> dict[str, str]:
    """image_id -> overlay file of a `fracture explain` dir (empty without one)."""
    from fracture.base.io import read_json

    if explain_dir is None:
        return {}
    index = Path(explain_dir) / EXPLAIN_INDEX
    if not index.is_file():
        raise InputError(f"{index}: missing; pass the dir `fracture explain` wrote")
    return {str(e["image_id"]): str(e["file"]) for e in read_json(index)}


def secret_key(state_dir: Path) -> str:
    """The session-signing key, kept in the state dir (mode 0600) so logins survive a restart."""
    path = Path(state_dir) / "session.key"
    if not path.is_file():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def build_state(
    params: Params, model: str, eval_dir: Path, opts: ServeOptions, *, explain_dir: Path | None = None,
    cache_dir: Path | None = None, manifest: Path | None = None, data_root: Path = Path("."),
) -> ReviewState:  # fmt: skip
    """Load the model, the evaluated cases, the source paths and the store."""
    from fracture.review.auth import load_users
    from fracture.review.cases import filter_levels, load_cases
    from fracture.review.images import CaseImages
    from fracture.review.store import open_engine
    from fracture.serving.predict import load_predictor

    rp = params.review
    users = load_users(opts.users_file) if opts.users_file else {}
    state_dir = Path(opts.state_dir)
    (state_dir / "uploads").mkdir(parents=True, exist_ok=True)
    cases, threshold = load_cases(eval_dir)
    predictor = load_predictor(model, state_dir / "model")
    if abs(predictor.threshold - threshold) > 1e-9:
        raise InputError(f"{eval_dir}: frozen threshold {threshold} is not the model's {predictor.threshold}; "
                         "pass the eval dir of this model")  # fmt: skip
    version = predictor.lineage["model_digest"]
    sources = source_paths(manifest, data_root, cases["image_id"]) if manifest else None
    images = CaseImages(predictor, state_dir / "versions" / version[:16], cache_dir, sources)
    engine = open_engine(opts.db_url or f"sqlite:///{(state_dir / 'review.db').resolve()}")
    log.info("review: %d cases of model %s (%s), %d reviewers", len(cases), version[:12], model, len(users))
    return ReviewState(
        version, model, cases, threshold, images, engine, users, state_dir / "uploads", rp.page_size,
        rp.session_hours, rp.upload_retention_hours, explain_index(explain_dir), explain_dir, filter_levels(cases),
    )  # fmt: skip


def run_review_serve(params: Params, model: str, eval_dir: Path, opts: ServeOptions, **sources: object) -> None:
    """Check exposure, build the app and serve it until Ctrl-C."""
    import uvicorn

    from fracture.review.web import create_app

    check_exposure(opts)
    Path(opts.state_dir).mkdir(parents=True, exist_ok=True)
    state = build_state(params, model, eval_dir, opts, **sources)
    https = opts.tls_cert is not None or opts.behind_proxy
    app = create_app(state, secret_key(opts.state_dir), https_only=https)
    scheme = "https" if https else "http"
    log.info("review app on %s://%s:%d (log in as a clinical reviewer from %s)", scheme, opts.host, opts.port,
             opts.users_file)  # fmt: skip
    uvicorn.run(
        app, host=opts.host, port=opts.port, log_level="warning", proxy_headers=opts.behind_proxy,
        ssl_certfile=str(opts.tls_cert) if opts.tls_cert else None,
        ssl_keyfile=str(opts.tls_key) if opts.tls_key else None,
    )  # fmt: skip
