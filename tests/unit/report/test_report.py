"""The HTML report: one section per item a reviewer signs off, every number equal to its artifact's.

The artifacts are realistic: the eval dir is written by evaluate's own `assemble_evaluation` /
`write_evaluation` from scored rows, the model dir by `save_model_dir`, the explain dir by `run_explain` on a
small cache; only the ingest summary, validation.json and the split summary are hand-written in their formats.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fracture.model.card import INTENDED_USE, LIMITATIONS
from fracture.report import run_report
from fracture.report.tables import fmt

N_IMAGES = 96
SIZE = 64


def _blob_images(n: int, size: int, labels: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros((n, size, size), dtype=np.uint8)
    for img, label in zip(out, labels, strict=True):
        top = int(rng.integers(0, size // 4))  # letterbox bands like the real cache
        img[top : size - top] = rng.integers(20, 90, (size - 2 * top, size), dtype=np.uint8)
        cv2.ellipse(img, (size // 2, size // 2), (size // 6, size // 3), 0, 0, 360, 200, -1)
        if label:
            cv2.line(img, (size // 3, size // 2), (2 * size // 3, size // 2 + 3), 40, 2)
    return out


def _scored_rows(rng: np.random.Generator) -> pd.DataFrame:
    """Val and test rows as evaluate scores them: three sources, studies of two views, probs that separate."""
    n = N_IMAGES
    source = np.array(["kaggle", "mura", "hospital"])[(np.arange(n) // 2) % 3]  # two views per patient/study
    label = (rng.random(n) < 0.45).astype(int)
    prob = np.clip(0.35 + 0.3 * label + rng.normal(0, 0.18, n), 0.001, 0.999)
    patient = [f"{s}:p{i // 2:03d}" for i, s in enumerate(source)]
    return pd.DataFrame(
        {
            "image_id": [f"{i:016x}" for i in range(1000, 1000 + n)],
            "split": np.where(np.arange(n) < n // 3, "val", "test"),
            "prob": prob,
            "label": label,
            "patient_id": patient,
            "study_id": [f"{p}/study1" for p in patient],
            "source": source,
            "age": rng.uniform(5, 80, n).round(1),
            "sex": rng.choice(["M", "F"], n),
            "body_part": "wrist",
            "projection": pd.Series(np.where(source == "kaggle", "ap_pa", None), dtype="string"),
            "initial_exam": pd.Series(np.where(source == "kaggle", rng.random(n) < 0.6, None), dtype="boolean"),
            "cast": pd.Series(np.where(source == "kaggle", rng.random(n) < 0.2, None), dtype="boolean"),
            "metal": pd.Series(np.where(source == "kaggle", False, None), dtype="boolean"),
        }
    )


def write_model_dir(params, model_dir: Path) -> None:
    import torch

    from fracture.model.core import build_model, model_config, save_model_dir

    torch.manual_seed(0)
    model = build_model(params.model, SIZE, pretrained=False)
    thresholds = {"youden": 0.5, "f1_max": 0.45, "target_sensitivity": 0.4, "fixed": 0.5}
    config = model_config(params.model, SIZE, thresholds, "youden")
    metadata = {
        "input": {"description": f"1-channel grayscale radiograph, {SIZE} x {SIZE} px"},
        "output": {"description": "one logit; sigmoid gives the probability of a visible fracture"},
        "model_card": {
            "Data": {
                "summary": "train/val only",
                "rows": [{"split": "train", "source": "mura", "images": 40, "positives": 17, "patients": 20}],
            },
            "Limitations": [*LIMITATIONS, "demo model"],  # a card as train writes it, plus one of its own
            "Intended use": INTENDED_USE,
        },
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
        "manifest_hash": "a" * 64,
        "splits_hash": "b" * 64,
        "params_hash": "c" * 64,
        "split_strategy": "cross_domain",
        "mlflow_run_id": "3f2c9d7e0b1a4c5d",
        "best_epoch": 2,
        "val_auroc": 0.8125,
    }
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_loss": [0.71, 0.62, 0.55],
            "val_loss": [0.69, 0.6, 0.61],
            "val_auroc": [0.6, 0.8125, 0.79],
            "lr": [1e-3, 8e-4, 3e-4],
            "seconds": [3.1, 2.9, 3.0],
        }
    )
    save_model_dir(model_dir, model, config, metadata, history, params)


def _write_cache(cache_dir: Path, rows: pd.DataFrame) -> None:
    from fracture.base.io import write_json, write_parquet

    cache_dir.mkdir(parents=True)
    images = _blob_images(len(rows), SIZE, rows["label"].to_numpy(), seed=1)
    np.save(cache_dir / "images.npy", images)
    index = pd.DataFrame(
        {
            "image_id": rows["image_id"].astype("string"),
            "row": np.arange(len(rows), dtype="int64"),
            "sha256": ["0" * 64] * len(rows),
        }
    )
    write_parquet(index.astype({"sha256": "string"}), cache_dir / "index.parquet")
    write_json(
        cache_dir / "meta.json",
        {"image_size": SIZE, "count": len(rows), "window_percentiles": [0.5, 99.5], "format": 1},
    )


def _write_upstream(root: Path) -> None:
    """Ingest summary + quarantine, validation.json + Data Docs, split summary (hand-written, documented formats)."""
    from fracture.base.io import write_json

    ingest = root / "ingest"
    ingest.mkdir()
    counts = {
        "candidates": 33,
        "total": 32,
        "fracture": 14,
        "normal": 18,
        "quarantined": 1,
        "patients": 16,
        "studies": 20,
    }
    kaggle = {**counts, "quarantine_reasons": {"truncated": 1}, "junk_files": 2}
    hospital = {**counts, "candidates": 34, "quarantined": 2, "quarantine_reasons": {"not_an_image": 2}}
    totals = {k: kaggle[k] + hospital[k] for k in counts} | {"quarantine_reasons": {"not_an_image": 2, "truncated": 1}}
    write_json(ingest / "summary.json", {"sources": {"kaggle": kaggle, "hospital": hospital}, "totals": totals})
    pd.DataFrame(
        {
            "source": ["kaggle", "hospital", "hospital"],
            "path": ["images_part1/0001_x.png", "radius/positive/a.png", "radius/negative/b.dcm"],
            "reason": ["truncated PNG", "not an image: bad header", "not an image: empty file"],
        }
    ).to_csv(ingest / "quarantine.csv", index=False)
    validation = root / "validation"
    (validation / "data_docs").mkdir(parents=True)
    (validation / "data_docs" / "index.html").write_text("<html>docs</html>")
    (validation / "validation.html").write_text("<html>image_id_unique: pass</html>")  # `fracture validate`'s page
    write_json(
        validation / "validation.json",
        {
            "success": True,
            "blocking_failed": [],
            "warnings": ["age_in_range"],
            "rows": 96,
            "suite": "manifest",
            "results": [
                {
                    "name": "image_id_unique",
                    "severity": "blocking",
                    "success": True,
                    "observed": {"unexpected_count": 0},
                    "details": {},
                },
                {"name": "age_in_range", "severity": "warning", "success": False, "observed": 0.02, "details": {}},
            ],
        },
    )
    split = root / "split"
    split.mkdir()
    write_json(
        split / "split_summary.json",
        {
            "strategy": "cross_domain",
            "fold": 0,
            "seed": 42,
            "exclusions": {"metal": 3},
            "rows": [
                {
                    "split": "test",
                    "source": "kaggle",
                    "images": 64,
                    "patients": 32,
                    "positives": 30,
                    "prevalence": 0.4688,
                },
                {"split": "val", "source": "mura", "images": 32, "patients": 16, "positives": 13, "prevalence": 0.4062},
            ],
        },
    )
    pd.DataFrame({"image_id": ["x"], "split": ["test"]}).to_parquet(split / "splits.parquet")


def _spectrum_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Three cohort-excluded test images (metal) of new patients, scored like the rest."""
    spectrum = rows[rows["split"] == "test"].head(3).copy()
    spectrum["image_id"] = [f"{i:016x}" for i in range(5000, 5003)]
    spectrum["patient_id"] = [f"kaggle:x{i}" for i in range(3)]
    spectrum["study_id"] = [f"{p}/study1" for p in spectrum["patient_id"]]
    spectrum["cluster_id"] = spectrum["patient_id"]
    return spectrum.assign(reason="metal", cluster_split="test", metal=True, split="excluded")


def _write_flow_and_baseline(split_dir: Path, rows: pd.DataFrame, spectrum: pd.DataFrame, quarantine: Path) -> None:
    """flow.json and baseline.csv as `fracture split` writes them, from the scored and the excluded rows."""
    from fracture.base.io import write_json
    from fracture.split.cohort import baseline_table, flow_counts

    df = pd.concat([rows, spectrum], ignore_index=True)
    df["ao_code"] = pd.Series(np.where(df["source"] == "kaggle", "23r-M/3.1", None), dtype="string")
    splits = pd.DataFrame(
        {
            "split": df["split"],
            "reason": pd.Series(np.where(df["split"] == "excluded", "metal", None), dtype="string"),
            "cluster_id": df["patient_id"],
        }
    )
    write_json(split_dir / "flow.json", flow_counts(df, splits, pd.read_csv(quarantine), "cross_domain", 0))
    baseline_table(df, splits).to_csv(split_dir / "baseline.csv", index=False)


def build_report_inputs(root: Path, params) -> dict[str, Path]:
    """Write every artifact the report reads under `root`; return the run_report keyword paths."""
    from fracture.evaluate import assemble_evaluation, write_evaluation
    from fracture.explain import run_explain

    rows = _scored_rows(np.random.default_rng(7))
    spectrum = _spectrum_rows(rows)
    write_model_dir(params, root / "model")
    _write_cache(root / "cache", rows)
    ev = assemble_evaluation(rows, 0.5, "youden", None, params.evaluate, params.base.seed, spectrum=spectrum)
    write_evaluation(ev, root / "eval", params)
    run_explain(params, root / "model", root / "eval", root / "cache", root / "explain")
    _write_upstream(root)
    _write_flow_and_baseline(root / "split", rows, spectrum, root / "ingest" / "quarantine.csv")
    return {
        "ingest_dir": root / "ingest",
        "validation_dir": root / "validation",
        "splits_path": root / "split" / "splits.parquet",
        "model_dir": root / "model",
        "eval_dir": root / "eval",
        "explain_dir": root / "explain",
    }


@pytest.fixture(scope="module")
def report_params(make_params):
    return make_params({"evaluate": {"n_bootstrap": 40, "min_subgroup_n": 10}, "explain": {"n_per_category": 1}})


@pytest.fixture(scope="module")
def report_inputs(tmp_path_factory, report_params) -> dict[str, Path]:
    return build_report_inputs(tmp_path_factory.mktemp("report-inputs"), report_params)


@pytest.fixture(scope="module")
def report_html(tmp_path_factory, report_params, report_inputs) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("report") / "reports" / "report.html"
    path = run_report(report_params, out, **report_inputs)
    return path, path.read_text(encoding="utf-8")


class _Collector(HTMLParser):
    """Every element's attributes and text; tags that load resources."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[dict] = []
        self.stack: list[dict] = []
        self.resources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        section = next((e["attrs"]["data-section"] for e in reversed(self.stack) if "data-section" in e["attrs"]), None)
        el = {"tag": tag, "attrs": dict(attrs), "text": "", "section": section}
        self.elements.append(el)
        for name in ("src", "href"):
            if name in el["attrs"]:
                self.resources.append(el["attrs"][name])
        if tag not in ("img", "br", "meta", "link", "input"):
            self.stack.append(el)

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()["tag"] == tag:
                break

    def handle_data(self, data: str) -> None:
        for el in self.stack:
            el["text"] += data


def parse(html: str) -> _Collector:
    c = _Collector()
    c.feed(html)
    return c


def with_attr(doc: _Collector, name: str) -> list[dict]:
    return [e for e in doc.elements if name in e["attrs"]]


SECTIONS = (
    "primary",
    "flow",
    "provenance",
    "validation",
    "cohort",
    "training",
    "metrics",
    "curves",
    "confusion",
    "subgroups",
    "per-source",
    "reliability",
    "decision",
    "study",
    "spectrum",
    "gradcam",
    "model-card",
)


def test_report_has_every_section_with_content(report_html):
    doc = parse(report_html[1])
    sections = {e["attrs"]["data-section"]: e for e in with_attr(doc, "data-section")}
    for name in SECTIONS:
        assert name in sections, f"section {name} missing"
        content = [e for e in doc.elements if e["section"] == name and e["tag"] in ("td", "img", "li", "p")]
        assert len(content) >= 2, f"{name}: section is empty"
        assert not re.search(r"\bNo [a-z_./*]+\.(json|csv)\b", sections[name]["text"]), f"{name}: artifact missing"
    assert "missing-artifacts" not in report_html


def test_every_metric_number_matches_metrics_json(report_html, report_inputs):
    metrics = json.loads((report_inputs["eval_dir"] / "metrics.json").read_text())
    cells = with_attr(parse(report_html[1]), "data-metric")
    seen = {c["attrs"]["data-metric"] for c in cells}
    assert set(metrics) <= seen, f"metrics.json keys not shown: {sorted(set(metrics) - seen)[:5]}"
    for c in cells:
        key = c["attrs"]["data-metric"]
        assert key in metrics, f"{key} shown but not in metrics.json"
        assert float(c["attrs"]["data-value"]) == pytest.approx(metrics[key], rel=1e-12, abs=1e-15)
        digits = 4 if c["text"].count(".") and len(c["text"].split(".")[-1]) == 4 else 3
        assert c["text"] == fmt(metrics[key], digits), key


def test_headline_shows_auroc_with_ci_and_trivial_f1(report_html, report_inputs):
    metrics = json.loads((report_inputs["eval_dir"] / "metrics.json").read_text())
    doc = parse(report_html[1])
    headline = next(e for e in doc.elements if e["attrs"].get("id") == "headline")["text"]
    for key in (
        "test.auroc",
        "test.auroc_ci_low",
        "test.auroc_ci_high",
        "test.frozen.sensitivity",
        "test.frozen.specificity",
        "test.trivial_f1",
        "test.prevalence",
    ):
        assert fmt(metrics[key]) in headline, key
    assert "Trivial F1" in headline and "Prevalence" in headline


def test_confusion_and_study_level_come_from_metrics(report_html, report_inputs):
    metrics = json.loads((report_inputs["eval_dir"] / "metrics.json").read_text())
    doc = parse(report_html[1])
    matrices = {e["attrs"]["data-confusion"] for e in with_attr(doc, "data-confusion")}
    assert {"test", "test.study", "val", "val.study"} <= matrices
    shown = {c["attrs"]["data-metric"] for c in with_attr(doc, "data-metric")}
    assert {"test.frozen.tp", "test.frozen.fn", "test.study.frozen.tp", "test.study.auroc"} <= shown
    assert metrics["test.study.n"] < metrics["test.n"]


def test_subgroups_mark_tiny_rows(report_html, report_inputs, report_params):
    subgroups = pd.read_csv(report_inputs["eval_dir"] / "subgroups.csv")
    rows = {e["attrs"]["data-subgroup"]: e for e in with_attr(parse(report_html[1]), "data-subgroup")}
    by_member = {  # a merged "unknown" row stands for each attribute it names
        f"{key.split('/')[0]}/{name}/unknown": el
        for key, el in rows.items()
        for name in el["attrs"].get("data-merged", "").split()
    }
    # the fixture's mura and hospital rows record no projection, initial exam, cast or metal: one row, not four
    merged = [el["attrs"]["data-merged"].split() for el in rows.values() if "data-merged" in el["attrs"]]
    assert ["projection", "initial_exam", "cast", "metal"] in merged
    assert len(rows) == len(subgroups) - sum(len(m) - 1 for m in merged)
    for rec in subgroups.to_dict("records"):
        key = f"{rec['split']}/{rec['subgroup']}/{rec['level']}"
        el = rows.get(key) or by_member[key]
        tiny = rec["n"] < report_params.evaluate.min_subgroup_n or not rec["reliable"]
        assert el["attrs"]["data-tiny"] == str(tiny).lower()
        assert fmt(int(rec["n"])) in el["text"]
    assert any(e["attrs"]["data-tiny"] == "true" for e in rows.values())
    assert any(e["attrs"]["data-tiny"] == "false" for e in rows.values())


def test_identical_unknown_subgroup_rows_are_merged():
    from fracture.report.tables import merge_unknown_rows

    def row(subgroup: str, level, n: int, auroc: float = float("nan")) -> dict:
        return {"split": "val", "subgroup": subgroup, "level": level, "n": n, "auroc": auroc, "note": "",
                "id": f"val/{subgroup}/{level}"}  # fmt: skip

    rows = [
        row("age_band", "20-39", 11, 0.7),
        row("age_band", "unknown", 38),
        row("sex", "F", 14, 0.8),
        row("sex", "unknown", 38),  # the same 38 images as age_band unknown
        row("projection", "unknown", 73),
        row("cast", float("nan"), 73),  # a missing level counts as unknown
        row("site", "unknown", 5),  # unknown too, but other images: kept apart
    ]
    out = merge_unknown_rows(rows)
    assert [(r["subgroup"], r["level"], r["n"]) for r in out] == [
        ("age_band", "20-39", 11),
        ("age_band, sex", "unknown", 38),
        ("sex", "F", 14),
        ("projection, cast", "unknown", 73),
        ("site", "unknown", 5),
    ]
    assert out[1]["id"] == "val/age_band+sex/unknown" and out[4]["id"] == "val/site/unknown"
    assert rows[1]["subgroup"] == "age_band", "the input rows are not modified"
    assert merge_unknown_rows([row("sex", "unknown", 3), row("age_band", "unknown", 4)])[1]["subgroup"] == "age_band"


def test_provenance_cohort_and_validation_numbers(report_html, report_inputs):
    doc = parse(report_html[1])
    split = {e["attrs"]["data-split"]: e["text"] for e in with_attr(doc, "data-split")}
    assert split["test/kaggle/images"] == "64" and split["val/mura/prevalence"] == "0.406"
    summary = {e["attrs"]["data-summary"]: e["text"] for e in with_attr(doc, "data-summary")}
    assert summary["kaggle.candidates"] == "33" and summary["hospital.quarantined"] == "2"
    assert summary["all.total"] == "64" and summary["hospital.quarantine_reasons.not_an_image"] == "2"
    assert summary["kaggle.junk_files"] == "2"
    quarantined = {e["attrs"]["data-quarantine"]: e["text"] for e in with_attr(doc, "data-quarantine")}
    assert quarantined == {"kaggle": "1", "hospital": "2", "all": "3"}  # rows of quarantine.csv
    links = {e["attrs"]["id"]: e for e in doc.elements if e["attrs"].get("id") in ("validation-link", "data-docs-link")}
    assert list(links) == ["validation-link", "data-docs-link"], "the offline page is the primary link"
    for name, path in (("validation-link", "validation.html"), ("data-docs-link", "data_docs/index.html")):
        href = links[name]["attrs"]["href"]
        assert (
            not href.startswith("/")
            and (report_html[0].parent / href).resolve() == (report_inputs["validation_dir"] / path).resolve()
        )
    assert "(offline)" in links["validation-link"]["text"] and "internet" in _section_html(report_html[1], "validation")
    assert "radius/positive/a.png" not in report_html, "file paths must not reach the report"


def test_gallery_matches_the_explain_index(report_html, report_inputs):
    index = json.loads((report_inputs["explain_dir"] / "index.json").read_text())
    figures = with_attr(parse(report_html[1]), "data-image-id")
    assert len(index) > 0
    assert [(f["attrs"]["data-image-id"], f["attrs"]["data-category"]) for f in figures] == sorted(
        [(e["image_id"], e["category"]) for e in index],
        key=lambda t: next(e["source"] for e in index if e["image_id"] == t[0]),
    )  # grouped by source, index order within
    assert "most confident true positives" in report_html[1]
    assert "32 x 32 px" in report_html[1]
    captions = [
        e["text"] for e in parse(report_html[1]).elements if e["tag"] == "figcaption" and e["section"] == "gradcam"
    ]
    assert len(captions) == len(index), "one caption per overlay"
    for text in captions:  # the caveat the PNGs no longer carry
        assert "2 x 2 grid" in text and "32 x 32 px" in text and "64 px input" in text, text


def test_model_card_has_intended_use_limitations_and_lineage(report_html):
    doc = parse(report_html[1])
    text = {e["attrs"].get("id"): e["text"] for e in doc.elements if e["attrs"].get("id")}
    assert "not a diagnosis" in text["intended-use"]
    assert "abnormal" in text["limitations"] and "cast" in text["limitations"]
    # the card's text exists once: one intended-use statement, each limitation once, the dir's own one added
    assert report_html[1].count(">Intended use<") == 1 and report_html[1].count(INTENDED_USE) == 1
    items = [e["text"].strip() for e in doc.elements if e["tag"] == "li" and e["section"] == "model-card"]
    assert sorted(items) == sorted([*LIMITATIONS, "demo model"])
    lineage = {e["attrs"]["data-lineage"]: e["text"] for e in with_attr(doc, "data-lineage")}
    assert lineage["git_commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert "mlflow_run_id" not in lineage and "mlflow_tracking_uri" not in lineage  # run-specific, not the model's
    assert lineage["manifest_hash"] == "a" * 64 and lineage["params_hash"] == "c" * 64
    assert len(lineage["sha256(model.pt)"]) == 64


def test_report_is_self_contained_and_free_of_identifiers(report_html):
    doc = parse(report_html[1])
    for ref in doc.resources:
        assert ref.startswith(("data:image/png;base64,", "#")) or not re.match(r"^[a-z]+:", ref), ref
        assert not ref.startswith(("http:", "https:", "//")), ref
    assert "<script" not in report_html and "<link" not in report_html
    assert len([e for e in doc.elements if e["tag"] == "img"]) >= 5  # curves, history and the gallery
    assert "kaggle:p0" not in report_html and "/study1" not in report_html, "patient/study ids must not appear"


def test_missing_optional_artifacts_are_flagged_not_fatal(tmp_path, report_params, report_inputs):
    inputs = {**report_inputs, "explain_dir": tmp_path / "no-explain", "validation_dir": tmp_path / "no-validation"}
    html = run_report(report_params, tmp_path / "r.html", **inputs).read_text()
    assert 'id="missing-artifacts"' in html and "index.json" in html and "validation.json" in html
    assert "No Grad-CAM overlays" in html
    assert 'id="validation-link"' not in html and 'id="data-docs-link"' not in html


def test_validation_link_only_when_its_page_exists(tmp_path):
    from fracture.report.artifacts import relative_href

    page = tmp_path / "data" / "validation" / "validation.html"
    assert relative_href(page, tmp_path / "reports" / "report.html") is None
    page.parent.mkdir(parents=True)
    page.write_text("<html>pass</html>")
    assert relative_href(page, tmp_path / "reports" / "report.html") == "../data/validation/validation.html"


def test_missing_metrics_is_an_input_error(tmp_path, report_params, report_inputs):
    from fracture.base.errors import InputError

    with pytest.raises(InputError, match="metrics.json"):
        run_report(report_params, tmp_path / "r.html", **{**report_inputs, "eval_dir": tmp_path})


# ------------------------------------------------------------------------------- issue 13: endpoints and flow
def _section_html(html: str, name: str) -> str:
    start = html.index(f'data-section="{name}"')
    return html[start : html.index("</section>", start)]


def test_report_leads_with_the_primary_endpoint(report_html, report_inputs):
    primary = json.loads((report_inputs["eval_dir"] / "primary.json").read_text())
    doc = parse(report_html[1])
    assert [e["attrs"]["data-section"] for e in with_attr(doc, "data-section")][0] == "primary"
    box = next(e for e in doc.elements if e["attrs"].get("id") == "primary-endpoint")
    assert box["attrs"]["data-population"] == primary["primary.population"]
    assert box["attrs"]["data-primary-metric"] == primary["primary.metric"]
    shown = {c["attrs"]["data-metric"]: c for c in with_attr(doc, "data-metric") if c["section"] == "primary"}
    for key in ("primary.value", "primary.ci_low", "primary.ci_high", "primary.n_images", "primary.n_patients"):
        assert float(shown[key]["attrs"]["data-value"]) == pytest.approx(primary[key], rel=1e-12), key
        assert shown[key]["text"] == fmt(primary[key]), key
    section = _section_html(report_html[1], "primary")
    assert f'data-ci-method="{primary["primary.ci_method"]}"' in section
    assert "Pre-specified" in section and "evaluate.primary.metric: auroc" in section
    heading = next(e for e in doc.elements if e["tag"] == "h2" and e["section"] == "metrics")["text"]
    assert "Secondary" in heading


def test_flow_figure_matches_flow_json(report_html, report_inputs):
    flow = json.loads((report_inputs["splits_path"].parent / "flow.json").read_text())
    doc = parse(report_html[1])
    figure = next(e for e in doc.elements if e["attrs"].get("data-figure") == "flow")
    img = next(e for e in doc.elements[doc.elements.index(figure) :] if e["tag"] == "img")
    assert img["attrs"]["src"].startswith("data:image/png;base64,iVBOR")
    cells = {e["attrs"]["data-flow"]: e["text"] for e in with_attr(doc, "data-flow")}
    # 96 scored + 3 excluded (metal) + 3 quarantined
    assert cells["all/candidates"] == str(flow["total"]["candidates"]) == "102"
    assert cells["all/quarantined"] == "3" and cells["all/excluded"] == "3"
    for name, entry in flow["splits"].items():
        assert cells[f"split/{name}/included"] == str(entry["included"])
        assert cells[f"split/{name}/patients"] == str(entry["patients"])


def test_per_source_table_beside_every_pooled_figure(report_html, report_inputs):
    table = pd.read_csv(report_inputs["eval_dir"] / "per_source.csv")
    rows = {e["attrs"]["data-source-row"]: e for e in with_attr(parse(report_html[1]), "data-source-row")}
    assert set(table["split"]) == {"val", "test"}
    assert set(rows) == {f"{r.split}/{r.source}" for r in table.itertuples()}
    for rec in table.to_dict("records"):
        el = rows[f"{rec['split']}/{rec['source']}"]
        assert fmt(int(rec["n"])) in el["text"] and fmt(rec["sensitivity"]) in el["text"]
        assert fmt(rec["sensitivity_ci_low"]) in el["text"]
        assert el["attrs"]["data-flagged"] == str(bool(rec["ci_flagged"])).lower()
    assert any(r.source == "all" for r in table.itertuples()) and len(set(table["source"])) == 4


def test_every_ci_states_its_method_and_flags(report_html, report_inputs):
    intervals = pd.read_csv(report_inputs["eval_dir"] / "intervals.csv").set_index("key")
    html = report_html[1]
    spans = re.findall(r'<span class="ci">(.*?)</span>\s*</td>', html, flags=re.S)
    assert len(spans) > 50
    for span in spans:
        assert re.search(r'data-ci-method="(cluster_bootstrap|wilson)"', span), span[:300]
        low = re.search(r'data-metric="([^"]+)_ci_low"', span)
        if low and low.group(1) in intervals.index:
            rec = intervals.loc[low.group(1)]
            assert f'data-ci-method="{rec["method"]}"' in span, low.group(1)
            assert ('data-ci-flagged="true"' in span) == bool(rec["flagged"]), low.group(1)
    spectrum = pd.read_csv(report_inputs["eval_dir"] / "spectrum.csv")
    flagged = with_attr(parse(html), "data-ci-flagged")
    assert spectrum["ci_flagged"].any(), "the fixture should exercise a flagged row"
    assert sum(e["section"] == "spectrum" for e in flagged) == int(spectrum["ci_flagged"].sum())


def test_target_reliability_decision_and_spectrum(report_html, report_inputs):
    eval_dir = report_inputs["eval_dir"]
    doc = parse(report_html[1])
    targets = {e["attrs"]["data-target"]: e["text"] for e in with_attr(doc, "data-target")}
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert fmt(metrics["target_sensitivity"]) in targets["target_sensitivity"]
    assert fmt(metrics["test.target_sensitivity.sensitivity"]) in targets["target_sensitivity"]
    reliability = pd.read_csv(eval_dir / "reliability.csv")
    bins = {e["attrs"]["data-bin"]: e["text"] for e in with_attr(doc, "data-bin")}
    assert set(bins) == {f"{r.split}/{r.bin}" for r in reliability.itertuples()}
    for r in reliability.itertuples():
        assert fmt(int(r.count)) in bins[f"{r.split}/{r.bin}"] and fmt(r.frac_pos_ci_low) in bins[f"{r.split}/{r.bin}"]
    assert "val chose\n    the checkpoint and the threshold" in report_html[1]
    decision = pd.read_csv(eval_dir / "decision_curve.csv")
    assert len(with_attr(doc, "data-decision")) == len(decision)
    figure = [e for e in doc.elements if e["attrs"].get("data-figure") == "decision_curve"]
    assert figure and figure[0]["section"] == "decision"
    spectrum = pd.read_csv(eval_dir / "spectrum.csv")
    rows = with_attr(doc, "data-spectrum")
    assert len(rows) == len(spectrum) > 0 and all(e["section"] == "spectrum" for e in rows)
    assert "metal" in _section_html(report_html[1], "spectrum")
    assert "spectrum" not in _section_html(report_html[1], "primary")


def test_baseline_characteristics_per_split(report_html, report_inputs):
    baseline = pd.read_csv(report_inputs["splits_path"].parent / "baseline.csv")
    cells = {e["attrs"]["data-baseline"]: e["text"] for e in with_attr(parse(report_html[1]), "data-baseline")}
    for split in ("test", "val"):
        images = baseline.query("split == @split and source == 'all' and characteristic == 'images'")["n"].iloc[0]
        assert cells[f"{split}/all/images/all/image"].startswith(str(images))
    assert any(k.startswith("test/all/ao_class/23r-M") for k in cells)
    assert any(k.startswith("test/all/age, years/median (IQR)") for k in cells)
    assert any("/cast/" in k for k in cells) and any("/sex/" in k for k in cells)


def test_wide_tables_scroll_inside_their_container(report_html):
    html = report_html[1]
    assert html.count("<table") == html.count('<div class="scroll"><table') > 10
    assert re.search(r"\.scroll \{ overflow-x: auto;", html)
    assert "max-width: 100%" in html and '<meta name="viewport"' in html


def test_an_older_eval_dir_shows_not_available_notes(tmp_path, report_params, report_inputs):
    import shutil

    eval_dir, split_dir = tmp_path / "eval", tmp_path / "split"
    shutil.copytree(report_inputs["eval_dir"], eval_dir)
    shutil.copytree(report_inputs["splits_path"].parent, split_dir)
    for name in ("primary.json", "intervals.csv", "per_source.csv", "spectrum.csv", "reliability.csv",
                 "decision_curve.csv", "plots/decision_curve.csv", "plots/val/decision_curve.csv"):  # fmt: skip
        (eval_dir / name).unlink()
    (split_dir / "flow.json").unlink()
    (split_dir / "baseline.csv").unlink()
    inputs = {**report_inputs, "eval_dir": eval_dir, "splits_path": split_dir / "splits.parquet"}
    html = run_report(report_params, tmp_path / "r.html", **inputs).read_text()
    notes = {e["attrs"]["data-not-available"] for e in with_attr(parse(html), "data-not-available")}
    assert notes == {"primary.json", "flow.json", "baseline.csv", "per_source.csv", "reliability.csv",
                     "plots/decision_curve.csv", "decision_curve.csv", "spectrum.csv"}  # fmt: skip
    assert 'id="missing-artifacts"' in html and 'data-ci-method="unknown"' in html
    assert 'data-metric="test.auroc"' in html  # the secondary results are still there


def test_dvc_plots_show_renders_the_decision_curve(tmp_path, report_inputs):
    import shutil
    import subprocess
    import sys

    import yaml

    dvc = Path(sys.executable).with_name("dvc")
    if not dvc.is_file() or shutil.which("git") is None:
        pytest.skip("dvc or git not installed")
    repo = Path(__file__).resolve().parents[3]
    for name in ("dvc.yaml", "params.yaml"):  # dvc.yaml fills ${paths.*} from params.yaml
        shutil.copy(repo / name, tmp_path / name)
    eval_path = yaml.safe_load((repo / "params.yaml").read_text())["paths"]["eval"]
    shutil.copytree(report_inputs["eval_dir"] / "plots", tmp_path / eval_path / "plots")
    for cmd in (["git", "init", "-q"], [str(dvc), "init", "-q"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    shown = subprocess.run([str(dvc), "plots", "show", "--json"], cwd=tmp_path, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)["data"]
    curve = data["decision_curve"][0]["content"]
    assert {v["field"] for v in curve["data"]["values"]} == {"net_benefit", "treat_all", "treat_none"}
    assert "Decision curve" in curve["title"]["text"] and curve["encoding"]["x"]["title"] == "threshold probability"
    top_plots = yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]  # every curve: top-level, titled
    for entry in top_plots:
        ((plot_id, spec),) = entry.items()
        assert spec.get("title") and spec.get("x_label") and spec.get("y_label"), plot_id
        assert plot_id in data, plot_id
        for template, y in spec["y"].items():
            path = template.replace("${paths.eval}", eval_path)
            columns = set(pd.read_csv(tmp_path / path, nrows=1).columns)
            assert {spec["x"], *([y] if isinstance(y, str) else y)} <= columns, path


def test_localization_section_shows_the_figures_and_box_overlays(tmp_path, report_params, report_inputs):
    from fracture.base.io import read_parquet, write_parquet
    from fracture.explain import run_explain

    preds = read_parquet(report_inputs["eval_dir"] / "predictions.parquet")
    test = preds[(preds["split"] == "test") & (preds["label"] == 1)].head(6)
    boxes = pd.DataFrame(
        {
            "image_id": test["image_id"].astype(str).tolist(), "class": "fracture",
            "x": 0.5, "y": 0.5, "w": 0.3, "h": 0.3, "image_width": 100, "image_height": 100, "file": "f.txt", "line": 1,
        }
    )  # fmt: skip
    write_parquet(boxes, tmp_path / "boxes.parquet")
    explain_dir, loc = tmp_path / "explain", tmp_path / "localization.json"
    model, cache = report_inputs["model_dir"], report_inputs["model_dir"].parent / "cache"
    run_explain(report_params, model, report_inputs["eval_dir"], cache, explain_dir, tmp_path / "boxes.parquet", loc)
    inputs = {**report_inputs, "explain_dir": explain_dir}
    html = run_report(report_params, tmp_path / "r.html", **inputs, localization_path=loc).read_text()
    section = html[html.index('id="localization"') :]
    assert 'data-table="localization"' in section and "Pointing game" in section
    assert "Grad-CAM with boxes" in section and "fracture lime" in section
    missing = run_report(report_params, tmp_path / "r2.html", **report_inputs).read_text()
    assert "No localization figures" in missing


def test_cv_section_only_with_a_pool_dir(tmp_path, report_params, report_inputs, report_html):
    from tests.unit.cv.test_cv_pool import _pool_dir

    assert 'data-section="cv"' not in report_html[1]  # the demo report (no --cv) has no CV section
    pool = _pool_dir(tmp_path / "study", report_params)  # a LOSO study of two sources
    html = run_report(report_params, tmp_path / "r.html", **report_inputs, cv_dirs=[pool]).read_text()
    assert 'data-section="cv"' in html and 'data-cv-study="loso"' in html and 'href="#cv"' in html
    assert 'data-cv-fold="fold-0"' in html and 'data-cv-fold="pooled"' in html and "held-out source" in html
    assert "conditional on the fold models" in html and 'data-figure="cv-roc-loso"' in html


def test_the_first_screen_shows_the_coprimary_bounds_the_sample_size_and_the_decision(report_html):
    """Before any section: the verdict, sensitivity / specificity / AUROC with their lower bounds, n needed vs seen."""
    html = report_html[1]
    head = html[: html.index('id="primary"')]  # everything above section 1
    status = re.search(r'id="gate" data-gate-status="(\w+)"', head)
    assert status and status.group(1) in ("passed", "failed", "undecidable")
    assert f"Evaluation gate: {status.group(1).upper()}" in head
    for endpoint in ("auroc", "sensitivity", "specificity"):
        assert f'data-endpoint="{endpoint}"' in head
    assert "lower bound the gate reads" in head and "exact bound (Clopper-Pearson" in head
    assert head.count("data-enough=") == 2 and "positive_patients" in head and "negative_patients" in head
