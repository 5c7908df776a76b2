"""The review app's pure parts: passwords and the users file, the case list's filters, the store's transactions,
the sign-off verdict, and the start-up refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from fracture.base.errors import InputError
from fracture.cli import app
from fracture.review import CLINICAL_REVIEWER_ROLE, store
from fracture.review.auth import add_user, hash_password, load_users, verify_password
from fracture.review.cases import CaseQuery, page_of, select_cases, with_outcomes
from fracture.review.server import ServeOptions, check_exposure, is_loopback
from fracture.review.summary import review_summary, sign_off_verdict
from fracture.review.uploads import purge_uploads, shown_name


def test_passwords_are_stored_as_scrypt_hashes_and_checked():
    stored = hash_password("correct horse", n=2**10)
    assert stored.startswith("scrypt$1024$") and "correct horse" not in stored
    assert verify_password("correct horse", stored)
    assert not verify_password("wrong horse", stored)
    assert not verify_password("correct horse", "scrypt$garbage")
    assert hash_password("x" * 8) != hash_password("x" * 8)  # salted


def test_users_file_round_trip_and_refusals(tmp_path):
    users = tmp_path / "users.yaml"
    add_user(users, "alice", "long-enough-pw", name="Dr A")
    add_user(users, "alice", "another-password")  # replaced, not duplicated
    loaded = load_users(users)
    assert list(loaded) == ["alice"] and verify_password("another-password", loaded["alice"].password)
    users.write_text("users:\n  - username: eve\n    password: plain-text\n")
    with pytest.raises(InputError, match="must be a scrypt hash"):
        load_users(users)
    with pytest.raises(InputError, match="no users file"):
        load_users(tmp_path / "absent.yaml")
    with pytest.raises(InputError, match="at least 8"):
        add_user(users, "bob", "short")


def test_the_two_reviewer_roles_have_different_names():
    from fracture.access.names import REVIEWER_ROLE

    assert CLINICAL_REVIEWER_ROLE != REVIEWER_ROLE and "fracture-reviewer" not in CLINICAL_REVIEWER_ROLE


def frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "image_id": [f"{i:04d}" for i in range(n)], "split": "test", "prob": rng.random(n),
        "label": rng.integers(0, 2, n), "source": rng.choice(["kaggle", "mura"], n), "sex": rng.choice(["F", "M"], n),
        "cast": pd.array(rng.choice([True, False], n), dtype="boolean"),
    })  # fmt: skip
    return with_outcomes(df, 0.4)


def test_outcomes_at_the_frozen_threshold_and_filters():
    df = frame()
    prob, label = df["prob"].to_numpy(), df["label"].to_numpy()
    fn = select_cases(df, CaseQuery(outcome=("FN",)), set(), set())
    assert set(fn["image_id"]) == set(df["image_id"][(prob < 0.4) & (label == 1)])
    both = select_cases(df, CaseQuery(outcome=("FP", "FN"), source="mura", cast="yes"), set(), set())
    assert (both["source"] == "mura").all() and (both["cast"] == "yes").all()
    assert both["outcome"].isin(["FP", "FN"]).all()
    band = select_cases(df, CaseQuery(prob_min=0.2, prob_max=0.3), set(), set())
    assert band["prob"].between(0.2, 0.3).all() and len(band) == ((prob >= 0.2) & (prob <= 0.3)).sum()
    at = with_outcomes(pd.DataFrame({"image_id": ["a"], "split": "test", "prob": [0.4], "label": [1]}), 0.4)
    assert at["outcome"].tolist() == ["TP"]  # positive when prob >= threshold, as evaluate decides


def test_sorts_status_filter_and_pages():
    df = frame()
    errors = select_cases(df, CaseQuery(sort="error"), set(), set())
    wrong = errors["outcome"].isin(["FP", "FN"]).to_numpy()
    assert wrong[: wrong.sum()].all()  # every error before every correct case
    assert (np.diff(errors["margin"].to_numpy()[: wrong.sum()]) <= 0).all()  # most confidently wrong first
    unsure = select_cases(df, CaseQuery(sort="confidence"), set(), set())
    assert (np.diff(unsure["margin"].to_numpy()) >= 0).all()
    reviewed = set(df["image_id"][:10])
    assert set(select_cases(df, CaseQuery(status="reviewed"), reviewed, set())["image_id"]) == reviewed
    assert len(select_cases(df, CaseQuery(status="unreviewed"), reviewed, set())) == len(df) - 10
    rows, pages = page_of(errors, 99, 30)
    assert pages == 7 and len(rows) == 200 - 6 * 30  # past the end: the last page


def verdict(**kw) -> dict:
    row = {"model_version": "m1", "image_id": "0001", "reviewer": "alice", "verdict": "agree", "label_wrong": False,
           "suggested_label": None, "note": ""}  # fmt: skip
    return row | kw


def test_verdicts_append_and_the_latest_per_reviewer_counts(tmp_path):
    engine = store.open_engine(f"sqlite:///{tmp_path / 'r.db'}")
    store.add_verdict(engine, verdict())
    store.add_verdict(engine, verdict(verdict="disagree"))
    store.add_verdict(engine, verdict(reviewer="bob", verdict="unsure"))
    store.add_verdict(engine, verdict(model_version="m2"))
    latest = {(v.reviewer, v.verdict) for v in store.latest_verdicts(engine, "m1")}
    assert latest == {("alice", "disagree"), ("bob", "unsure")}
    with Session(engine) as s:
        assert s.query(store.CaseVerdict).count() == 4  # history kept


def count(engine) -> int:
    with Session(engine) as s:
        return s.query(store.CaseVerdict).count()


def test_a_failed_verdict_write_leaves_no_partial_row(tmp_path):
    engine = store.open_engine(f"sqlite:///{tmp_path / 'r.db'}")
    store.add_verdict(engine, verdict())
    with pytest.raises(IntegrityError):  # the schema's own CHECK refuses it
        store.add_verdict(engine, verdict(verdict="maybe"))

    def fail(session) -> None:  # noqa: ANN001
        raise RuntimeError("disk full at commit")

    event.listen(Session, "before_commit", fail)
    try:
        with pytest.raises(RuntimeError, match="disk full"):
            store.add_verdict(engine, verdict(image_id="0002"))
    finally:
        event.remove(Session, "before_commit", fail)
    assert count(engine) == 1
    assert [v.image_id for v in store.latest_verdicts(engine, "m1")] == ["0001"]


def test_migrations_run_once_and_reopen(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store.add_verdict(store.open_engine(url), verdict())
    assert len(store.latest_verdicts(store.open_engine(url), "m1")) == 1  # upgrade head on a migrated db is a no-op


def test_summary_and_the_sign_off_verdict():
    cases = with_outcomes(pd.DataFrame({"image_id": ["a", "b", "c"], "split": "test", "prob": [0.9, 0.1, 0.8],
                                        "label": [1, 1, 0]}), 0.5)  # fmt: skip  # TP, FN, FP
    rows = [
        {"image_id": "a", "reviewer": "alice", "verdict": "agree", "label_wrong": False, "suggested_label": None,
         "note": "", "created_at": None},
        {"image_id": "b", "reviewer": "alice", "verdict": "disagree", "label_wrong": False, "suggested_label": None,
         "note": "", "created_at": None},
        {"image_id": "c", "reviewer": "bob", "verdict": "agree", "label_wrong": True, "suggested_label": 1,
         "note": "looks broken", "created_at": None},
    ]  # fmt: skip
    summary = review_summary(cases, rows)
    assert summary["reviewed"] == 3 and summary["agreement"] == pytest.approx(2 / 3)
    assert summary["per_outcome"]["FN"] == {"cases": 1, "reviewed": 1, "agree": 0, "disagree": 1, "unsure": 0}
    assert [f["image_id"] for f in summary["label_flags"]] == ["c"]
    signed = sign_off_verdict(summary, "signed_off", "alice", "fine")
    assert signed.gate == "review" and signed.passed
    refused = sign_off_verdict(summary, "refused", "bob", "too many FN")
    assert refused.status == "failed" and refused.reasons == ("refused by bob: too many FN",)
    from fracture.contracts.verdict import Verdict

    assert Verdict.from_dict(refused.to_dict()) == refused


def test_off_loopback_needs_users_and_tls_or_a_proxy(tmp_path):
    users = tmp_path / "u.yaml"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    check_exposure(ServeOptions("127.0.0.1", 1, users, tmp_path))
    with pytest.raises(InputError, match="every reviewer logs in"):
        check_exposure(ServeOptions("127.0.0.1", 1, None, tmp_path))
    with pytest.raises(InputError, match="needs TLS"):
        check_exposure(ServeOptions("0.0.0.0", 1, users, tmp_path))
    check_exposure(ServeOptions("0.0.0.0", 1, users, tmp_path, behind_proxy=True))
    check_exposure(ServeOptions("0.0.0.0", 1, users, tmp_path, tls_cert=users, tls_key=users))


@pytest.mark.parametrize(
    ("args", "message"),
    [((), "every reviewer logs in"), (("--users", "u.yaml", "--host", "0.0.0.0"), "refusing to serve logins")],
)
def test_review_serve_refuses_to_start_before_loading_anything(tmp_path, args, message):
    result = CliRunner().invoke(app, ["review", "serve", "--model", str(tmp_path / "no-model"), "--eval",
                                      str(tmp_path / "no-eval"), *args])  # fmt: skip
    assert result.exit_code == 2
    assert message in result.output


def test_upload_names_are_sanitised_and_old_uploads_purged(tmp_path):
    assert shown_name("../../etc/pa$$wd.png") == "pa__wd.png"
    old, new = tmp_path / ("a" * 32), tmp_path / ("b" * 32)
    old.mkdir()
    new.mkdir()
    import os
    import time

    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert purge_uploads(tmp_path, retention_hours=1) == 1
    assert not old.exists() and new.exists()


def test_label_corrections_export_read_and_apply(tmp_path):
    from fracture.corrections import apply_corrections, corrections_from_verdicts, read_corrections

    verdicts = [
        {"image_id": "a", "reviewer": "alice", "label_wrong": True, "suggested_label": 1, "note": "fracture seen"},
        {"image_id": "b", "reviewer": "alice", "label_wrong": True, "suggested_label": 1, "note": "same label"},
        {"image_id": "c", "reviewer": "bob", "label_wrong": False, "suggested_label": None, "note": ""},
    ]
    table = corrections_from_verdicts(verdicts, {"a": 0, "b": 1, "c": 0})
    assert table.to_dict("records") == [
        {"image_id": "a", "old_label": 0, "new_label": 1, "reviewer": "alice", "reason": "fracture seen"}
    ]
    path = tmp_path / "corrections.csv"
    table.to_csv(path, index=False)
    manifest = pd.DataFrame({"image_id": ["a", "b"], "label": [0, 1], "label_source": ["folder", "folder"]})
    fixed, n = apply_corrections(manifest, read_corrections(path), str(path))
    assert n == 1 and fixed["label"].tolist() == [1, 1] and fixed["label_source"].tolist() == ["review", "folder"]
    with pytest.raises(InputError, match="stale"):
        apply_corrections(fixed, read_corrections(path), str(path))  # already applied: old label 0 is gone
    pd.concat([table, table.assign(reviewer="bob", old_label=1, new_label=0)]).to_csv(path, index=False)
    with pytest.raises(InputError, match="disagree on the new label of a"):
        read_corrections(path)


def test_full_resolution_keeps_16_bit_values_until_windowing(tmp_path):
    import cv2

    from fracture.images.decode import read_raw
    from fracture.review.images import window_png

    arr = (np.arange(64 * 48) + 40_000).astype(np.uint16).reshape(64, 48)  # 3,072 levels, far past 8 bits
    cv2.imwrite(str(tmp_path / "deep.png"), arr)
    raw = read_raw(tmp_path / "deep.png")
    assert raw.dtype == np.float32 and np.array_equal(raw, arr.astype(np.float32))
    narrow = cv2.imdecode(np.frombuffer(window_png(raw, 41_000.0, 41_255.0), np.uint8), cv2.IMREAD_UNCHANGED)
    assert narrow.shape == (64, 48) and len(np.unique(narrow)) == 256  # a 255-unit window keeps every level
