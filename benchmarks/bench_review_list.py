"""Benchmark 7: the review app's case list over 30,000 predictions, answered through the app (`GET /api/cases`).

Product: the FastAPI app (fracture.review.web.create_app) over a SQLite store holding 3,000 verdicts, called with
a logged-in session cookie: an FN filter with a subgroup and probability band, sorted by error, page 1; and the
unfiltered list sorted by confidence, last page. Each timed request includes the store query for the verdict
status, the filter, the sort, the page and the JSON answer.
Baseline: the same answer computed by a plain Python loop over the rows as dicts (filter, sort, slice).
Targets: under 1 s per answer (the issue's limit), and the same pages as the loop (the ratio is reported only:
the loop has no store, no HTTP and no JSON to pay for).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Target, alternate, check, demo_params, make_result, median, spread

NAME = "review_list"
FULL = {"predictions": 30_000, "verdicts": 3_000, "reps": 5}
QUICK = {"predictions": 2_000, "verdicts": 100, "reps": 1}
THRESHOLD = 0.5
PASSWORD = "bench-password"
QUERIES = (
    {"outcome": "FN", "source": "kaggle", "prob_min": 0.1, "sort": "error", "page": 1},
    {"sort": "confidence", "page": 10_000},
)


def synthetic_predictions(n: int, seed: int = 0) -> Any:
    """An evaluate-like predictions table with subgroup columns."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    prob = 1 / (1 + np.exp(-(2.0 * (label - 0.5) + rng.normal(size=n))))
    return pd.DataFrame({
        "image_id": [f"{i:016x}" for i in rng.permutation(n)], "split": rng.choice(["val", "test"], n),
        "prob": prob, "label": label, "source": rng.choice(["kaggle", "mura", "hospital"], n),
        "age_band": rng.choice(["<6", "6-11", "12-17"], n), "sex": rng.choice(["F", "M"], n),
        "projection": rng.choice(["ap", "lat"], n), "cast": rng.random(n) < 0.1,
        "clinically_relevant": rng.random(n) < 0.6,
    })  # fmt: skip


def build_app(root: Path, n: int, n_verdicts: int) -> tuple[Any, Any]:
    """The review app over synthetic cases and a store with verdicts (no model: the list never needs one)."""
    from sqlalchemy.orm import Session

    from fracture.review import store
    from fracture.review.auth import User, hash_password
    from fracture.review.cases import filter_levels, with_outcomes
    from fracture.review.state import ReviewState
    from fracture.review.web import create_app

    cases = with_outcomes(synthetic_predictions(n), THRESHOLD)
    engine = store.open_engine(f"sqlite:///{root / 'review.db'}")
    rows = [store.CaseVerdict(model_version="bench", image_id=i, reviewer="alice", verdict="agree", label_wrong=False,
                              note="", created_at=store.now()) for i in cases["image_id"][:n_verdicts]]  # fmt: skip
    with Session(engine) as session, session.begin():
        session.add_all(rows)
    users = {"alice": User("alice", "alice", hash_password(PASSWORD))}
    rp = demo_params().review
    state = ReviewState("bench", "bench", cases, THRESHOLD, None, engine, users, root / "uploads", rp.page_size,
                        rp.session_hours, rp.upload_retention_hours, levels=filter_levels(cases))  # fmt: skip
    return create_app(state), cases


def logged_in_client(app: Any) -> Any:
    """A TestClient with a session cookie (the browser's path, no per-request password hashing)."""
    from fastapi.testclient import TestClient

    client = TestClient(app)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token})
    return client


def loop_list(rows: list[dict], reviewed: set[str], query: dict, page_size: int) -> list[dict]:
    """The baseline: filter, sort and slice the rows in a Python loop."""
    out = []
    for r in rows:
        pred = r["prob"] >= THRESHOLD
        outcome = ("TP" if r["label"] else "FP") if pred else ("FN" if r["label"] else "TN")
        if "outcome" in query and outcome != query["outcome"]:
            continue
        if "source" in query and r["source"] != query["source"]:
            continue
        if r["prob"] < query.get("prob_min", 0.0):
            continue
        margin = abs(r["prob"] - THRESHOLD)
        wrong = outcome in ("FP", "FN")
        key = (-margin if wrong else margin + 2) if query["sort"] == "error" else margin
        out.append((key, r["image_id"], {**r, "outcome": outcome, "reviewed": r["image_id"] in reviewed}))
    out.sort(key=lambda t: (t[0], t[1]))
    pages = max(1, -(-len(out) // page_size))
    page = min(query["page"], pages)
    return [t[2] for t in out[(page - 1) * page_size : page * page_size]]


def run(quick: bool = False) -> dict[str, Any]:
    """Seconds per case-list answer through the app vs the Python loop."""
    cfg = QUICK if quick else FULL
    with tempfile.TemporaryDirectory() as tmp:
        app, cases = build_app(Path(tmp), cfg["predictions"], cfg["verdicts"])
        client = logged_in_client(app)
        rows = cases[["image_id", "prob", "label", "source"]].to_dict("records")
        reviewed = set(cases["image_id"][: cfg["verdicts"]])
        size = app.state.review.page_size
        answers = {q["sort"]: client.get("/api/cases", params=q).json() for q in QUERIES}
        same = all([c["image_id"] for c in answers[q["sort"]]["cases"]]
                   == [r["image_id"] for r in loop_list(rows, reviewed, q, size)] for q in QUERIES)  # fmt: skip
        times = alternate(
            {
                "app": lambda: [client.get("/api/cases", params=q).raise_for_status() for q in QUERIES],
                "loop": lambda: [loop_list(rows, reviewed, q, size) for q in QUERIES],
            },
            cfg["reps"],
        )
        client.close()
    app_s, loop_s = median(times["app"]) / len(QUERIES), median(times["loop"]) / len(QUERIES)
    details = {
        "predictions": cfg["predictions"],
        "verdicts_in_store": cfg["verdicts"],
        "queries": list(QUERIES),
        "answers_match_the_loop": same,
        "fn_matches": answers["error"]["total"],
        "seconds_per_answer": {
            "app": spread([t / len(QUERIES) for t in times["app"]]),
            "loop": spread([t / len(QUERIES) for t in times["loop"]]),
        },  # fmt: skip
        "product": "GET /api/cases through the FastAPI app (session cookie, SQLite verdict status)",
        "baseline": "filter, sort and page the rows as dicts in a Python loop",
    }
    return make_result(
        NAME, "seconds_per_list_answer", app_s, loop_s, "s",
        Target(1.0, op="<=", on="value", text="under 1 s per answer for 30,000 predictions"), details,
        higher_is_better=False,
        checks=[check("same_answer_as_the_loop", float(same), Target(1.0, op=">=", on="value", text="same pages"))],
    )  # fmt: skip
