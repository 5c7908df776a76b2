"""The review app: one FastAPI application with the JSON API (api.py) and the pages (views.py)."""

from __future__ import annotations

import secrets
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from fracture.base.errors import InputError
from fracture.review.api import LoginRequired, add_api_routes
from fracture.review.state import ReviewState
from fracture.review.views import add_page_routes

STATIC_DIR = Path(__file__).parent / "static"


def create_app(state: ReviewState, secret_key: str | None = None, https_only: bool = False) -> FastAPI:
    """The review app over `state`; cookies are `Secure` when `https_only` (TLS or a TLS-terminating proxy)."""
    app = FastAPI(
        title="fracture review",
        summary="Clinical review of a model version's evaluated cases: verdicts, Grad-CAM, sign-off.",
        version="1",
        docs_url=None,  # Swagger UI loads its assets from a CDN; the schema is at /openapi.json
        redoc_url=None,
    )
    app.state.review = state
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret_key or secrets.token_urlsafe(32),
        session_cookie="fracture_review",
        max_age=int(state.session_hours * 3600),
        same_site="strict",
        https_only=https_only,
    )
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(LoginRequired)
    async def _to_login(request: Request, exc: LoginRequired) -> Response:
        return Response(status_code=303, headers={"location": "/login"})

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    add_api_routes(app)
    add_page_routes(app)
    return app
