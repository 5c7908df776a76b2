"""The review app's JSON API and who may call it (its OpenAPI schema is served at /openapi.json).

Pages are in fracture/review/views.py, the application in fracture/review/web.py. Every route but /login and
/static needs a logged-in clinical reviewer: a session cookie (signed, HttpOnly, SameSite=Strict) from the login
form, or HTTP Basic credentials for scripts (no `WWW-Authenticate` challenge is ever sent, so a browser never
caches Basic credentials that a cross-site form could reuse). Forms carry a per-session CSRF token;
cookie-authenticated API writes carry it as the `X-CSRF-Token` header.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import logging
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from pydantic import BaseModel, Field

from fracture.base.errors import InputError
from fracture.review import store
from fracture.review.auth import User, same_token, verify_password
from fracture.review.cases import CaseQuery, case_record, page_of, select_cases
from fracture.review.state import ReviewState

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
CSV_FIELDS = ("model_version", "image_id", "reviewer", "verdict", "label_wrong", "suggested_label", "note",
              "created_at")  # fmt: skip


class LoginRequired(Exception):
    """A page asked for without a login: redirect to /login."""


class VerdictIn(BaseModel):
    """A verdict on one case (POST /api/verdicts)."""

    image_id: str = Field(min_length=1, max_length=64)
    verdict: Literal["agree", "disagree", "unsure"]
    note: str = Field(default="", max_length=store.NOTE_MAX)
    label_wrong: bool = False
    suggested_label: Literal[0, 1] | None = None


class VerdictOut(BaseModel):
    """A stored verdict."""

    image_id: str
    model_version: str
    reviewer: str
    verdict: str
    label_wrong: bool
    suggested_label: int | None
    note: str
    created_at: str | None


class CaseOut(BaseModel):
    """One case of the list."""

    image_id: str
    split: str
    source: str
    prob: float
    label: int
    pred: int
    decision: str
    outcome: str
    threshold: float
    reviewed: bool


class CasePage(BaseModel):
    """A page of the case list."""

    total: int
    page: int
    pages: int
    page_size: int
    threshold: float
    model_version: str
    cases: list[CaseOut]


class PredictionOut(BaseModel):
    """The prediction for an uploaded image (as `fracture predict`)."""

    token: str
    prob: float
    threshold: float
    decision: str
    intended_use: str
    input_url: str
    cam_url: str


def state_of(request: Request) -> ReviewState:
    """The app's ReviewState."""
    return request.app.state.review


def basic_user(request: Request, users: dict[str, User]) -> User | None:
    """The user named by valid HTTP Basic credentials, else None."""
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        username, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user = users.get(username)
    return user if user is not None and verify_password(password, user.password) else None


def session_user(request: Request) -> User | None:
    """The user of the session cookie, else None."""
    username = request.session.get("user")
    return state_of(request).users.get(username) if isinstance(username, str) else None


def api_user(request: Request) -> User:
    """The API caller; unsafe methods with a cookie session must carry the session's CSRF token."""
    users = state_of(request).users
    user = basic_user(request, users)
    if user is not None:
        return user
    user = session_user(request)
    if user is None:
        raise HTTPException(401, "log in first (session cookie or HTTP Basic credentials)")
    if request.method not in ("GET", "HEAD") and not same_token(
        request.headers.get("x-csrf-token"), request.session.get("csrf")
    ):
        raise HTTPException(403, "missing or wrong X-CSRF-Token header")
    return user


def page_user(request: Request) -> User:
    """The logged-in reviewer of a page (redirects to /login otherwise)."""
    user = session_user(request)
    if user is None:
        raise LoginRequired
    return user


ApiUser = Annotated[User, Depends(api_user)]


def case_query(
    outcome: Annotated[list[Literal["TP", "FP", "FN", "TN"]] | None, Query()] = None,
    split: Annotated[str | None, Query(max_length=64)] = None,
    source: Annotated[str | None, Query(max_length=64)] = None,
    age_band: Annotated[str | None, Query(max_length=64)] = None,
    sex: Annotated[str | None, Query(max_length=64)] = None,
    body_part: Annotated[str | None, Query(max_length=64)] = None,
    projection: Annotated[str | None, Query(max_length=64)] = None,
    cast: Annotated[str | None, Query(max_length=64)] = None,
    clinically_relevant: Annotated[str | None, Query(max_length=64)] = None,
    prob_min: Annotated[float, Query(ge=0, le=1)] = 0.0,
    prob_max: Annotated[float, Query(ge=0, le=1)] = 1.0,
    status: Literal["any", "reviewed", "unreviewed", "label_flagged"] = "any",
    sort: Literal["error", "confidence", "prob", "image_id"] = "error",
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int | None, Query(ge=1, le=500)] = None,
) -> CaseQuery:
    """The case list's query parameters (shared by the page and GET /api/cases)."""
    return CaseQuery(
        tuple(outcome or ()), split, source, age_band, sex, body_part, projection, cast, clinically_relevant,
        prob_min, prob_max, status, sort, page, page_size or 0,
    )  # fmt: skip


def verdict_sets(state: ReviewState) -> tuple[set[str], set[str], list[dict]]:
    """(reviewed image ids, label-flagged image ids, current verdicts) of the version."""
    rows = [store.verdict_dict(v) for v in store.latest_verdicts(state.engine, state.model_version)]
    return {r["image_id"] for r in rows}, {r["image_id"] for r in rows if r["label_wrong"]}, rows


def list_cases(state: ReviewState, query: CaseQuery) -> dict:
    """A page of cases for the query, as JSON."""
    reviewed, flagged = store.verdict_status(state.engine, state.model_version)
    size = query.page_size or state.page_size
    selected = select_cases(state.cases, query, reviewed, flagged)
    rows, pages = page_of(selected, query.page, size)
    cases = [case_record(r, state.threshold) | {"reviewed": r["image_id"] in reviewed} for _, r in rows.iterrows()]
    return {"total": len(selected), "page": min(query.page, pages), "pages": pages, "page_size": size,
            "threshold": state.threshold, "model_version": state.model_version, "cases": cases}  # fmt: skip


def record_verdict(state: ReviewState, body: VerdictIn, reviewer: str) -> dict:
    """Store one verdict (a case of this version only)."""
    if not (state.cases["image_id"] == body.image_id).any():
        raise HTTPException(404, f"{body.image_id}: not a case of this evaluation")
    if body.label_wrong and body.suggested_label is None:
        raise HTTPException(422, "label_wrong needs suggested_label (0 or 1)")
    row = body.model_dump() | {"model_version": state.model_version, "reviewer": reviewer}
    row["suggested_label"] = row["suggested_label"] if body.label_wrong else None
    return store.verdict_dict(store.add_verdict(state.engine, row))


def verdicts_csv(state: ReviewState) -> str:
    """Every current verdict of the version as CSV (CSV_FIELDS)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in verdict_sets(state)[2]:
        writer.writerow(row)
    return buf.getvalue()


def add_api_routes(app: FastAPI) -> None:
    """The JSON API."""

    @app.get("/api/cases", response_model=CasePage, tags=["api"])
    def api_cases(request: Request, user: ApiUser, query: Annotated[CaseQuery, Depends(case_query)]) -> dict:
        """The evaluated cases, filtered, sorted and paged (the case list's query parameters)."""
        return list_cases(state_of(request), query)

    @app.get("/api/verdicts", response_model=list[VerdictOut], tags=["api"])
    def api_verdicts(
        request: Request, user: ApiUser, image_id: Annotated[str | None, Query(max_length=64)] = None
    ) -> list[dict]:
        """The current verdict of every (case, reviewer) for the reviewed model version."""
        state = state_of(request)
        return [store.verdict_dict(v) for v in store.latest_verdicts(state.engine, state.model_version, image_id)]

    @app.post("/api/verdicts", response_model=VerdictOut, status_code=201, tags=["api"])
    def api_add_verdict(request: Request, user: ApiUser, body: VerdictIn) -> dict:
        """Record the caller's verdict on a case."""
        return record_verdict(state_of(request), body, user.username)

    @app.post("/api/predict", response_model=PredictionOut, tags=["api"],
              responses={422: {"description": "not a usable radiograph"}})  # fmt: skip
    async def api_predict(request: Request, user: ApiUser, file: Annotated[UploadFile, File()]) -> dict:
        """Score one uploaded PNG / JPEG / TIFF / DICOM as `fracture predict` does, with its Grad-CAM."""
        return await run_upload(state_of(request), file)


async def run_upload(state: ReviewState, file: UploadFile) -> dict:
    """Purge expired uploads, then predict the new one (an InputError becomes a 422 with predict's text)."""
    from starlette.concurrency import run_in_threadpool

    from fracture.review.uploads import predict_upload, purge_uploads

    purge_uploads(state.upload_dir, state.upload_retention_hours)
    data = await file.read()
    try:
        result = await run_in_threadpool(predict_upload, state.predictor, data, file.filename, state.upload_dir)
    except InputError as err:
        raise HTTPException(422, str(err)) from None
    token = result["token"]
    return result | {"input_url": f"/uploads/{token}/input.png", "cam_url": f"/uploads/{token}/cam.png"}
