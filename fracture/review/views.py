"""The review app's pages (server-rendered Jinja2) and the image routes they show."""

from __future__ import annotations

import json
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fracture.review import store
from fracture.review.api import (
    CaseQuery,
    VerdictIn,
    case_query,
    list_cases,
    page_user,
    record_verdict,
    run_upload,
    state_of,
    verdict_sets,
    verdicts_csv,
)
from fracture.review.auth import User, new_csrf_token, same_token, verify_password
from fracture.review.cases import OUTCOMES, SUBGROUP_FILTERS, case_record, metadata, neighbours, select_cases

PageUser = Annotated[User, Depends(page_user)]
NO_STORE = {"cache-control": "no-store"}


def render(request: Request, name: str, **context: object) -> HTMLResponse:
    """A template of fracture/templates/review with the session's CSRF token and user."""
    from fracture.templates.pages import environment

    if "csrf" not in request.session:
        request.session["csrf"] = new_csrf_token()
    state = state_of(request)
    env = request.app.state.__dict__.setdefault("jinja", environment())
    html = env.get_template(f"review/{name}").render(
        csrf=request.session["csrf"], user=request.session.get("user"), model_label=state.model_label,
        model_version=state.model_version[:12], **context,
    )  # fmt: skip
    return HTMLResponse(html, headers=NO_STORE)


def check_csrf(request: Request, token: str) -> None:
    """Refuse a form whose CSRF token is not the session's."""
    if not same_token(token, request.session.get("csrf")):
        raise HTTPException(403, "CSRF token missing or wrong: reload the page and try again")


def query_string(query: CaseQuery) -> str:
    """The case list's query as a URL query string (filters kept across pages and cases)."""
    pairs = [("outcome", o) for o in query.outcome]
    pairs += [(c, getattr(query, c)) for c in SUBGROUP_FILTERS if getattr(query, c)]
    if query.prob_min > 0:
        pairs.append(("prob_min", query.prob_min))
    if query.prob_max < 1:
        pairs.append(("prob_max", query.prob_max))
    pairs += [("status", query.status), ("sort", query.sort)]
    return urlencode(pairs)


def image_png(data: bytes) -> Response:
    """A PNG response (private, not stored by shared caches)."""
    return Response(data, media_type="image/png", headers={"cache-control": "private, max-age=300"})


def add_auth_routes(app: FastAPI) -> None:
    """Login and logout."""

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request, error: str = "") -> HTMLResponse:
        return render(request, "login.html.j2", error=error[:200])

    @app.post("/login", include_in_schema=False)
    def login(
        request: Request, username: Annotated[str, Form()], password: Annotated[str, Form()],
        csrf_token: Annotated[str, Form()],
    ) -> Response:  # fmt: skip
        check_csrf(request, csrf_token)
        user = state_of(request).users.get(username)
        if user is None or not verify_password(password, user.password):
            return RedirectResponse("/login?error=wrong+username+or+password", status_code=303)
        request.session.clear()
        request.session.update(user=user.username, csrf=new_csrf_token())  # a fresh token per login
        return RedirectResponse("/", status_code=303)

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request, csrf_token: Annotated[str, Form()]) -> Response:
        check_csrf(request, csrf_token)
        request.session.clear()
        return RedirectResponse("/login", status_code=303)


def add_case_routes(app: FastAPI) -> None:
    """The case list, a case, its images and the verdict form."""

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def case_list(request: Request, user: PageUser, query: Annotated[CaseQuery, Depends(case_query)]) -> Response:
        state = state_of(request)
        result = list_cases(state, query)
        return render(request, "cases.html.j2", result=result, query=query, qs=query_string(query),
                      levels=state.levels, outcomes=OUTCOMES)  # fmt: skip

    @app.get("/cases/{image_id}", response_class=HTMLResponse, include_in_schema=False)
    def case_page(
        request: Request, image_id: str, user: PageUser, query: Annotated[CaseQuery, Depends(case_query)]
    ) -> Response:
        state = state_of(request)
        match = state.cases[state.cases["image_id"] == image_id]
        if match.empty:
            raise HTTPException(404, f"{image_id}: not a case of this evaluation")
        row = match.iloc[0]
        reviewed, flagged = store.verdict_status(state.engine, state.model_version)
        order = select_cases(state.cases, query, reviewed, flagged)["image_id"].tolist()
        prev_id, next_id = neighbours(order, image_id)
        mine = [v for v in store.latest_verdicts(state.engine, state.model_version, image_id)]
        return render(
            request,
            "case.html.j2",
            case=case_record(row, state.threshold),
            meta=metadata(row),
            prev_id=prev_id,
            next_id=next_id,
            qs=query_string(query),
            verdicts=[store.verdict_dict(v) for v in mine],
            has_source=state.images.sources is not None,
            explain_file=state.explain.get(image_id),
        )

    @app.post("/cases/{image_id}/verdict", include_in_schema=False)
    def case_verdict(
        request: Request, image_id: str, user: PageUser, csrf_token: Annotated[str, Form()],
        verdict: Annotated[str, Form()], note: Annotated[str, Form()] = "", label_wrong: Annotated[str, Form()] = "",
        suggested_label: Annotated[str, Form()] = "", next_url: Annotated[str, Form()] = "",
    ) -> Response:  # fmt: skip
        check_csrf(request, csrf_token)
        try:
            body = VerdictIn(
                image_id=image_id,
                verdict=verdict,
                note=note,
                label_wrong=bool(label_wrong),
                suggested_label=int(suggested_label) if label_wrong and suggested_label else None,
            )
        except ValueError as err:
            raise HTTPException(422, f"verdict not recorded: {err}") from None
        record_verdict(state_of(request), body, user.username)
        target = next_url if next_url.startswith("/cases/") or next_url.startswith("/?") else f"/cases/{image_id}"
        return RedirectResponse(target, status_code=303)

    @app.get("/cases/{image_id}/input.png", include_in_schema=False)
    def case_input(request: Request, image_id: str, user: PageUser) -> Response:
        from fracture.review.images import png_bytes

        return image_png(png_bytes(state_of(request).images.model_input(image_id)))

    @app.get("/cases/{image_id}/cam.png", include_in_schema=False)
    def case_cam(request: Request, image_id: str, user: PageUser) -> Response:
        from fracture.review.images import heatmap_rgba, png_bytes

        return image_png(png_bytes(heatmap_rgba(state_of(request).images.cam(image_id))))

    @app.get("/cases/{image_id}/window.json", include_in_schema=False)
    def case_window(request: Request, image_id: str, user: PageUser) -> dict:
        return state_of(request).images.window_defaults(image_id)

    @app.get("/cases/{image_id}/full.png", include_in_schema=False)
    def case_full(
        request: Request, image_id: str, user: PageUser, lo: Annotated[float, Query()],
        hi: Annotated[float, Query()],
    ) -> Response:  # fmt: skip
        from fracture.review.images import window_png

        return image_png(window_png(state_of(request).images.raw(image_id), lo, hi))

    @app.get("/explain/{image_id}.png", include_in_schema=False)
    def explain_figure(request: Request, image_id: str, user: PageUser) -> Response:
        state = state_of(request)
        name = state.explain.get(image_id)
        if not name or state.explain_dir is None:
            raise HTTPException(404, "no precomputed overlay for this case")
        return image_png((state.explain_dir / name).read_bytes())


def add_summary_routes(app: FastAPI) -> None:
    """Summary, sign-off and CSV export."""
    from fracture.review.summary import review_summary, sign_off_verdict

    @app.get("/summary", response_class=HTMLResponse, include_in_schema=False)
    def summary_page(request: Request, user: PageUser) -> Response:
        state = state_of(request)
        summary = review_summary(state.cases, verdict_sets(state)[2])
        signs = [(s, json.loads(s.verdict_json)) for s in store.sign_offs(state.engine, state.model_version)]
        return render(request, "summary.html.j2", summary=summary, sign_offs=signs, outcomes=OUTCOMES)

    @app.post("/signoff", include_in_schema=False)
    def sign_off(
        request: Request, user: PageUser, csrf_token: Annotated[str, Form()], decision: Annotated[str, Form()],
        statement: Annotated[str, Form()],
    ) -> Response:  # fmt: skip
        check_csrf(request, csrf_token)
        statement = statement.strip()
        if decision not in store.DECISIONS or not statement or len(statement) > store.NOTE_MAX:
            raise HTTPException(422, "sign-off needs a decision (signed_off | refused) and a statement")
        state = state_of(request)
        verdict = sign_off_verdict(review_summary(state.cases, verdict_sets(state)[2]), decision, user.username,
                                   statement)  # fmt: skip
        store.add_sign_off(state.engine, {"model_version": state.model_version, "reviewer": user.username,
                                          "decision": decision, "statement": statement,
                                          "verdict_json": json.dumps(verdict.to_dict(), sort_keys=True)})  # fmt: skip
        return RedirectResponse("/summary", status_code=303)

    @app.get("/export/corrections.csv", include_in_schema=False)
    def export_corrections(request: Request, user: PageUser) -> Response:
        from fracture.corrections import corrections_from_verdicts

        state = state_of(request)
        labels = dict(zip(state.cases["image_id"], state.cases["label"].astype(int), strict=True))
        table = corrections_from_verdicts(verdict_sets(state)[2], labels)
        name = f"label-corrections-{state.model_version[:12]}.csv"
        return Response(table.to_csv(index=False), media_type="text/csv",
                        headers={"content-disposition": f'attachment; filename="{name}"', **NO_STORE})  # fmt: skip

    @app.get("/export/verdicts.csv", include_in_schema=False)
    def export_csv(request: Request, user: PageUser) -> Response:
        state = state_of(request)
        name = f"verdicts-{state.model_version[:12]}.csv"
        return Response(verdicts_csv(state), media_type="text/csv",
                        headers={"content-disposition": f'attachment; filename="{name}"', **NO_STORE})  # fmt: skip


def add_upload_routes(app: FastAPI) -> None:
    """Try a new image."""

    @app.get("/try", response_class=HTMLResponse, include_in_schema=False)
    def try_page(request: Request, user: PageUser) -> Response:
        return render(request, "try.html.j2", result=None, error=None)

    @app.post("/try", response_class=HTMLResponse, include_in_schema=False)
    async def try_upload(
        request: Request, user: PageUser, csrf_token: Annotated[str, Form()], file: Annotated[UploadFile, File()]
    ) -> Response:
        check_csrf(request, csrf_token)
        try:
            result = await run_upload(state_of(request), file)
        except HTTPException as err:
            response = render(request, "try.html.j2", result=None, error=str(err.detail))
            response.status_code = err.status_code
            return response
        return render(request, "try.html.j2", result=result, error=None)

    @app.get("/uploads/{token}/{kind}.png", include_in_schema=False)
    def upload_image(request: Request, token: str, kind: str, user: PageUser) -> Response:
        from fracture.review.images import heatmap_rgba, png_bytes
        from fracture.review.uploads import upload_arrays

        image, cam = upload_arrays(state_of(request).upload_dir, token)
        if kind not in ("input", "cam"):
            raise HTTPException(404, "no such image")
        return image_png(png_bytes(image if kind == "input" else heatmap_rgba(cam)))


def add_page_routes(app: FastAPI) -> None:
    """Every page route."""
    add_auth_routes(app)
    add_case_routes(app)
    add_summary_routes(app)
    add_upload_routes(app)
