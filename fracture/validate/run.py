"""Great Expectations checks over the manifest, plus image-level checks on a seeded sample.

The suite is built once here (`build_suite`) and used by the `validate` step and by tests. Checks that Great
Expectations cannot express on the raw manifest (identical content carrying conflicting labels, decoding a
sample of images) are computed into extra boolean columns of the validated frame, so they run, render and
report like every other expectation. Only the dtype check is plain Python; it is reported in the same format.

Every expectation has a stable name and a severity: `blocking` failures fail the step (exit 1, after every
output is written), `warning` failures are logged and reported. `params.validate.severity` overrides the
defaults below by base name (the part before `:`, e.g. `class_balance` for `class_balance:kaggle`).
"""

from __future__ import annotations

import html
import logging
import math
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from great_expectations.checkpoint import UpdateDataDocsAction
from great_expectations.core.expectation_validation_result import ExpectationValidationResult
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from great_expectations.expectations.metadata_types import FailureSeverity
from great_expectations.expectations.row_conditions import Column

from fracture.base.errors import ConfigError, GateError
from fracture.base.io import atomic_write_text, read_manifest, resolve_image_path, write_json
from fracture.base.parallel import parallel_map
from fracture.config import SOURCES, Params, ValidateParams, dump_params
from fracture.contracts.artifacts import VALIDATION_HTML, VALIDATION_JSON
from fracture.contracts.schema import AO_STATUSES, MANIFEST_COLUMNS
from fracture.validate.boxes import BOX_SEVERITY, build_box_suite
from fracture.validate.page import render_results_page

log = logging.getLogger(__name__)

Severity = Literal["blocking", "warning"]

SUITE_NAME = "manifest"
DOCS_SITE = "fracture"
RUN_NAME = "fracture-validate"
NOT_NULL_COLUMNS = ("image_id", "source", "path", "patient_id", "label", "group_id", "width", "height", "sha256")
ROW_ID_COLUMNS = ("image_id", "source", "path", "sha256", "label")  # named for every unexpected row
MAX_ROWS_REPORTED = 50  # per expectation, in validation.json and Data Docs
MAX_ROWS_IN_MESSAGE = 10

# Derived columns: computed in Python, checked by GX (True = row passes; null = not checked).
CONFLICT_COLUMN = "sha256_label_consistent"
DECODABLE_COLUMN = "sampled_image_decodable"
CONTENT_COLUMN = "sampled_image_not_blank"

DEFAULT_SEVERITY: dict[str, Severity] = {
    "not_empty": "blocking",
    "columns_present": "blocking",
    "column_types": "blocking",
    "not_null": "blocking",
    "label_binary": "blocking",
    "source_known": "blocking",
    "ao_status_known": "blocking",
    "image_id_unique": "blocking",
    "source_path_unique": "blocking",
    "no_conflicting_labels": "blocking",
    "image_dimensions": "blocking",
    "images_decodable": "blocking",
    "images_not_blank": "blocking",
    "age_range": "warning",
    "class_balance": "warning",
    **BOX_SEVERITY,  # boxes.parquet beside the manifest (fracture/validate/boxes.py)
}


def resolve_severity(overrides: Mapping[str, str]) -> dict[str, Severity]:
    """Default severities with `params.validate.severity` applied.

    Raises:
        ConfigError: an override names an expectation that does not exist.
    """
    unknown = sorted(set(overrides) - set(DEFAULT_SEVERITY))
    if unknown:
        raise ConfigError(
            f"validate.severity: unknown expectation name(s) {', '.join(unknown)}; known: {', '.join(DEFAULT_SEVERITY)}"
        )
    return {**DEFAULT_SEVERITY, **overrides}  # type: ignore[dict-item]


def _meta(name: str, severity: Mapping[str, Severity]) -> dict[str, Any]:
    level = severity[name.split(":")[0]]
    gx_level = FailureSeverity.CRITICAL if level == "blocking" else FailureSeverity.WARNING
    return {"meta": {"name": name, "severity": level}, "severity": gx_level}


def _table_expectations(vp: ValidateParams, sev: Mapping[str, Severity]) -> list[gxe.Expectation]:
    cols = list(MANIFEST_COLUMNS)
    out: list[gxe.Expectation] = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1, **_meta("not_empty", sev)),
        gxe.ExpectTableColumnsToMatchSet(column_set=cols, exact_match=False, **_meta("columns_present", sev)),
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1], **_meta("label_binary", sev)),
        gxe.ExpectColumnValuesToBeInSet(column="source", value_set=list(SOURCES), **_meta("source_known", sev)),
        gxe.ExpectColumnValuesToBeInSet(  # null outside GRAZPEDWRI-DX (GX skips nulls)
            column="ao_status", value_set=list(AO_STATUSES), **_meta("ao_status_known", sev)
        ),
        gxe.ExpectColumnValuesToBeUnique(column="image_id", **_meta("image_id_unique", sev)),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["source", "path"], **_meta("source_path_unique", sev)),
        gxe.ExpectColumnValuesToBeInSet(
            column=CONFLICT_COLUMN, value_set=[True], **_meta("no_conflicting_labels", sev)
        ),
    ]
    out += [gxe.ExpectColumnValuesToNotBeNull(column=c, **_meta(f"not_null:{c}", sev)) for c in NOT_NULL_COLUMNS]
    lo, hi = vp.age_range
    out.append(gxe.ExpectColumnValuesToBeBetween(column="age", min_value=lo, max_value=hi, **_meta("age_range", sev)))
    out += [
        gxe.ExpectColumnValuesToBeBetween(
            column=side, min_value=1, max_value=vp.max_side, **_meta(f"image_dimensions:{side}", sev)
        )
        for side in ("width", "height")
    ]
    return out


def build_suite(vp: ValidateParams, sources: Sequence[str]) -> gx.ExpectationSuite:
    """The manifest suite: schema, values, uniqueness, label consistency, balance and sampled-image checks.

    Args:
        vp: the `validate` params (ranges, class balance bounds, image sample size, severities).
        sources: the sources present in the manifest; each gets its own class-balance expectation.

    Returns:
        An unsaved suite; each expectation carries `meta.name` and `meta.severity`.
    """
    sev = resolve_severity(vp.severity)
    expectations = _table_expectations(vp, sev)
    cb = vp.class_balance
    expectations += [
        gxe.ExpectColumnMeanToBeBetween(
            column="label",
            min_value=cb.min_positive,
            max_value=cb.max_positive,
            row_condition=Column("source") == src,
            **_meta(f"class_balance:{src}", sev),
        )
        for src in sorted(sources)
    ]
    if vp.image_sample > 0:
        expectations += [
            gxe.ExpectColumnValuesToBeInSet(
                column=DECODABLE_COLUMN, value_set=[True], **_meta("images_decodable", sev)
            ),
            gxe.ExpectColumnValuesToBeInSet(column=CONTENT_COLUMN, value_set=[True], **_meta("images_not_blank", sev)),
        ]
    return gx.ExpectationSuite(name=SUITE_NAME, expectations=expectations, notes=_suite_notes(expectations))


def _suite_notes(expectations: Sequence[gxe.Expectation]) -> list[str]:
    names = ", ".join(f"`{e.meta['name']}` ({e.meta['severity']})" for e in expectations)
    return [
        f"Derived columns (True = row passes, empty = not checked): `{CONFLICT_COLUMN}` is False where the same "
        f"sha256 (identical file bytes) carries another label; `{DECODABLE_COLUMN}` / `{CONTENT_COLUMN}` hold the "
        "decode and blank-image checks of a seeded image sample.",
        f"Expectations (name, severity; blocking failures fail `fracture validate`): {names}. "
        "`column_types` is checked in Python and reported in validation.json only.",
    ]


def _lossless_cast(s: pd.Series, dtype: str) -> pd.Series | None:
    """`s` cast to `dtype`, or None when the cast fails or changes a value or a null."""
    try:
        cast = s.astype(dtype)
    except (TypeError, ValueError, OverflowError):
        return None
    if not cast.isna().equals(s.isna()):
        return None
    if pd.api.types.is_numeric_dtype(cast.dtype) or pd.api.types.is_bool_dtype(cast.dtype):
        ok = s.notna()
        try:
            same = np.array_equal(cast[ok].to_numpy(float), pd.to_numeric(s[ok]).to_numpy(float))
        except (TypeError, ValueError):
            return None
        return cast if same else None
    return cast


def coerce_columns(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """Cast every schema column that casts losslessly; report the others.

    Returns:
        The frame with castable columns in their schema dtype, and {column: observed dtype} for those that
        could not be cast without losing or changing values (they are left as read).
    """
    out = df.copy()
    bad: dict[str, str] = {}
    for col, dtype in MANIFEST_COLUMNS.items():
        if col not in df.columns or str(df[col].dtype) == dtype:
            continue
        cast = _lossless_cast(df[col], dtype)
        if cast is None:
            bad[col] = str(df[col].dtype)
        else:
            out[col] = cast
    return out, bad


def column_types_result(bad: Mapping[str, str], severity: Mapping[str, Severity]) -> dict[str, Any]:
    """The dtype check's entry in validation.json (a Python check: GX has no nullable-dtype expectation)."""
    return {
        "name": "column_types",
        "severity": severity["column_types"],
        "success": not bad,
        "observed": dict(bad),
        "details": {
            "engine": "python",
            "expected": {c: MANIFEST_COLUMNS[c] for c in bad},
            "note": "columns that cannot be cast to the schema dtype without changing values",
        },
    }


def label_consistency(df: pd.DataFrame) -> pd.Series:
    """Per row: False where another row with the same sha256 (identical bytes) carries a different label."""
    if not {"sha256", "label"} <= set(df.columns):
        return pd.Series(pd.NA, index=df.index, dtype="boolean")
    n_labels = df.groupby("sha256", dropna=True)["label"].transform("nunique")
    consistent = ~(n_labels > 1)
    return consistent.astype("boolean").where(df["sha256"].notna(), pd.NA)


def sample_indices(n_rows: int, n_sample: int, seed: int) -> np.ndarray:
    """Sorted positional indices of a seeded sample of `min(n_sample, n_rows)` rows."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_rows, size=min(n_sample, n_rows), replace=False))


def check_image(
    path: Path, window_percentiles: tuple[float, float], min_std: float, max_pixels: int, max_side: int
) -> tuple[bool, bool | None, str | None]:
    """Decode one image the way preprocess does (window, ingest's size limits) and test it for content.

    Returns:
        (decodable, not_blank or None when undecodable, reason or None when both pass).
    """
    from fracture.images.decode import read_grayscale  # lazy: keeps GX-only uses free of OpenCV

    try:
        img = read_grayscale(path, window_percentiles, max_pixels=max_pixels, max_side=max_side)
    except Exception as err:  # any decoder failure is a finding to report, not a crash
        return False, None, f"{type(err).__name__}: {err}"
    std = float(np.std(img)) if np.size(img) else 0.0
    if not math.isfinite(std):
        return True, False, "non-finite pixel values after windowing"
    if std < min_std:
        return True, False, f"blank or constant: windowed pixel std {std:.4f} < {min_std}"
    return True, True, None


def check_image_sample(df: pd.DataFrame, roots: Mapping[str, str], params: Params, data_root: Path) -> pd.DataFrame:
    """Decode a seeded sample of manifest rows.

    Returns:
        One row per sampled image, indexed like `df`: decodable, not_blank (nullable booleans), reason.
    """
    vp = params.validate_
    rows = df.iloc[sample_indices(len(df), vp.image_sample, params.base.seed)]
    result = pd.DataFrame({"decodable": pd.NA, "not_blank": pd.NA, "reason": pd.NA}, index=rows.index).astype(
        {"decodable": "boolean", "not_blank": "boolean", "reason": "string"}
    )
    paths: dict[Any, Path] = {}
    for idx, row in rows.iterrows():
        try:
            paths[idx] = resolve_image_path(dict(roots), str(row["source"]), str(row["path"]), data_root)
        except Exception as err:  # no root recorded, path escapes root, null path
            result.loc[idx, ["decodable", "reason"]] = [False, f"cannot resolve path: {err}"]
    ip = params.ingest  # the limits preprocess decodes under: an image it refuses must not pass here
    fn = partial(check_image, window_percentiles=params.preprocess.window_percentiles, min_std=vp.min_image_std,
                 max_pixels=ip.max_pixels, max_side=ip.max_side)  # fmt: skip
    checked = parallel_map(fn, list(paths.values()), params.base.num_workers, desc="validate images")
    for idx, (decodable, not_blank, reason) in zip(paths, checked, strict=True):
        result.loc[idx, ["decodable", "not_blank", "reason"]] = [decodable, not_blank, reason]
    return result


def add_check_columns(df: pd.DataFrame, images: pd.DataFrame | None) -> pd.DataFrame:
    """The frame GX validates: the manifest plus the derived pass/fail columns (null = not checked)."""
    frame = df.copy()
    frame[CONFLICT_COLUMN] = label_consistency(df)
    unchecked = pd.Series(pd.NA, index=df.index, dtype="boolean")
    for column, key in ((DECODABLE_COLUMN, "decodable"), (CONTENT_COLUMN, "not_blank")):
        frame[column] = unchecked if images is None else images[key].reindex(df.index).astype("boolean")
    return frame


def _gx_context(docs_dir: Path) -> Any:
    """An in-memory GX context whose only Data Docs site is a plain folder at `docs_dir`."""
    site = {
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "show_how_to_buttons": False},
    }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={DOCS_SITE: site},
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def run_suite(frame: pd.DataFrame, suite: gx.ExpectationSuite, docs_dir: Path) -> list[ExpectationValidationResult]:
    """Validate `frame` against `suite` and build the Data Docs site in `docs_dir`.

    Returns:
        One result per expectation, in the suite's order.
    """
    ctx = _gx_context(docs_dir)
    batch = ctx.data_sources.add_pandas(SUITE_NAME).add_dataframe_asset(SUITE_NAME)
    batch_def = batch.add_batch_definition_whole_dataframe("whole_manifest")
    suite = ctx.suites.add(suite)
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=SUITE_NAME, data=batch_def, suite=suite))
    result_format = {
        "result_format": "SUMMARY",
        "partial_unexpected_count": MAX_ROWS_REPORTED,
        "unexpected_index_column_names": [c for c in ROW_ID_COLUMNS if c in frame.columns],
    }
    checkpoint = ctx.checkpoints.add(
        gx.Checkpoint(
            name=SUITE_NAME,
            validation_definitions=[vd],
            actions=[UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE])],
            result_format=result_format,
        )
    )
    run = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=RUN_NAME))
    results = next(iter(run.run_results.values())).results
    order = {e.meta["name"]: i for i, e in enumerate(suite.expectations)}
    return sorted(results, key=lambda r: order[r.expectation_config.meta["name"]])


def box_results(
    boxes_path: Path, manifest: pd.DataFrame, severity: Mapping[str, Severity]
) -> list[ExpectationValidationResult]:
    """The box suite's results on boxes.parquet beside the manifest; none when ingest wrote no box table."""
    if not boxes_path.is_file():
        return []
    from fracture.base.io import read_parquet

    boxes = read_parquet(boxes_path)
    if boxes.empty:
        return []
    ids = sorted(manifest["image_id"].dropna().astype(str).unique()) if "image_id" in manifest.columns else []
    suite = build_box_suite(lambda name: _meta(name, severity), ids)
    with tempfile.TemporaryDirectory() as docs:  # the manifest's Data Docs site stays the one published
        return run_suite(boxes, suite, Path(docs))


def _jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, NaN/NA -> None, unknown objects -> str."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, str | bytes):
        obj = obj.item()
    if obj is None or obj is pd.NA or isinstance(obj, bool | int | str):
        return None if obj is pd.NA else obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return str(obj)


def _exception_message(r: ExpectationValidationResult) -> str | None:
    info = r.exception_info or {}
    if info.get("raised_exception"):
        return info.get("exception_message")
    messages = [v.get("exception_message") for v in info.values() if isinstance(v, dict) and v.get("raised_exception")]
    return "; ".join(dict.fromkeys(m for m in messages if m)) or None


def result_entry(r: ExpectationValidationResult) -> dict[str, Any]:
    """One GX result as a validation.json entry: name, severity, success, observed, details."""
    cfg = r.expectation_config
    res = dict(r.result or {})
    if "observed_value" in res:
        observed = res["observed_value"]
    else:
        observed = {k: res.get(k) for k in ("unexpected_count", "element_count", "missing_count") if k in res}
    kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("result_format", "catch_exceptions", "batch_id")}
    details: dict[str, Any] = {"engine": "great_expectations", "expectation": cfg.type, "kwargs": kwargs}
    if res.get("partial_unexpected_index_list"):
        details["rows"] = res["partial_unexpected_index_list"]
    elif res.get("details"):
        details["mismatch"] = res["details"]
    if (message := _exception_message(r)) is not None:
        details["error"] = message
    return _jsonable(
        {
            "name": cfg.meta["name"],
            "severity": cfg.meta["severity"],
            "success": bool(r.success),
            "observed": observed,
            "details": details,
        }
    )


def finish_image_entries(entries: list[dict[str, Any]], images: pd.DataFrame | None, df: pd.DataFrame) -> None:
    """Image checks: observed = sampled/failed counts, and the decoder's reason on each failing row."""
    reasons: dict[str, Any] = {}
    if images is not None and "image_id" in df.columns:
        reasons = dict(zip(df.loc[images.index, "image_id"].astype(str), images["reason"], strict=True))
    for entry in entries:
        if entry["name"] in ("images_decodable", "images_not_blank"):
            for row in entry["details"].get("rows", []):
                reason = reasons.get(str(row.get("image_id")))
                row["reason"] = None if reason is None or reason is pd.NA else str(reason)
            failed = entry["observed"].get("unexpected_count") if isinstance(entry["observed"], dict) else None
            entry["observed"] = {"sampled": 0 if images is None else len(images), "unexpected_count": failed}


def summarise(entries: list[dict[str, Any]], n_rows: int) -> dict[str, Any]:
    """validation.json: overall success, failed blocking and warning names, and every entry.

    Deterministic for a given manifest and params (no times, no absolute paths): DVC hashes it, and validation.html
    is rendered from it alone.
    """
    failed = [e for e in entries if not e["success"]]
    blocking = [e["name"] for e in failed if e["severity"] == "blocking"]
    return {
        "success": not blocking,
        "blocking_failed": blocking,
        "warnings": [e["name"] for e in failed if e["severity"] == "warning"],
        "rows": n_rows,
        "suite": SUITE_NAME,
        "results_page": VALIDATION_HTML,  # plain, offline, deterministic (fracture/validate/page.py)
        "data_docs": "data_docs/index.html",  # Great Expectations' site: holds the run time, so no DVC output
        "results": entries,
    }


def _describe_failure(entry: Mapping[str, Any]) -> str:
    details = entry.get("details", {})
    if details.get("error"):
        return f"{entry['name']} (error: {details['error']})"
    rows = details.get("rows") or []
    shown = "; ".join(
        ", ".join(f"{k}={v}" for k, v in row.items() if k in (*ROW_ID_COLUMNS, "reason"))
        for row in rows[:MAX_ROWS_IN_MESSAGE]
    )
    more = f" (+{len(rows) - MAX_ROWS_IN_MESSAGE} more)" if len(rows) > MAX_ROWS_IN_MESSAGE else ""
    return f"{entry['name']} (observed {entry['observed']})" + (f" rows: {shown}{more}" if shown else "")


def gate_message(report: Mapping[str, Any], json_path: Path) -> str:
    """The GateError text: every failed blocking expectation, with the offending rows where known."""
    failed = [e for e in report["results"] if not e["success"] and e["severity"] == "blocking"]
    lines = "\n  ".join(_describe_failure(e) for e in failed)
    return f"{json_path}: {len(failed)} blocking expectation(s) failed:\n  {lines}"


def add_offline_index(docs_dir: Path) -> None:
    """Put plain relative links to every page at the top of index.html.

    GX fills its index tables with JavaScript loaded from CDNs; without network the index would look empty.
    """
    index = docs_dir / "index.html"
    found = [p for sub in ("validations", "expectations") for p in (docs_dir / sub).rglob("*.html")]
    pages = sorted(p.relative_to(docs_dir).as_posix() for p in found)
    items = "".join(f'<li><a href="{html.escape(p)}">{html.escape(p)}</a></li>' for p in pages)
    block = (
        f'<div class="container" id="fracture-pages"><p>Pages (plain links, work offline):</p><ul>{items}</ul></div>'
    )
    text = index.read_text(encoding="utf-8")
    index.write_text(re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + block, text, count=1), encoding="utf-8")


def _build_docs_into(out_dir: Path, frame: pd.DataFrame, suite: gx.ExpectationSuite) -> list[Any]:
    """Run the suite with Data Docs built beside `out_dir/data_docs`, then swap the new site in."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".data_docs.", dir=out_dir))
    try:
        results = run_suite(frame, suite, tmp)
        add_offline_index(tmp)
        dst = out_dir / "data_docs"
        if dst.exists():
            shutil.rmtree(dst)
        tmp.rename(dst)
        dst.chmod(0o755)  # mkdtemp made it owner-only; the site is meant to be served and shared
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def run_validate(params: Params, manifest_path: Path, out_dir: Path, data_root: Path = Path(".")) -> dict:
    """Validate a manifest; write validation.json, validation.html, data_docs/ and the resolved params to `out_dir`.

    `data_root` is where the manifest's relative source roots resolve (for the decoded image sample).

    Returns:
        The validation.json content.

    Raises:
        InputError: the manifest cannot be read (ConfigError for unknown names in validate.severity).
        GateError: a blocking expectation failed (raised after all outputs are written).
    """
    severity = resolve_severity(params.validate_.severity)
    df, roots = read_manifest(manifest_path)
    typed, bad_types = coerce_columns(df)
    images = None
    if params.validate_.image_sample > 0 and {"source", "path"} <= set(typed.columns) and len(typed):
        images = check_image_sample(typed, roots, params, Path(data_root))
    frame = add_check_columns(typed, images)
    sources = sorted(typed["source"].dropna().astype(str).unique()) if "source" in typed.columns else []
    results = _build_docs_into(Path(out_dir), frame, build_suite(params.validate_, sources))
    results += box_results(Path(manifest_path).with_name("boxes.parquet"), typed, severity)
    entries = [result_entry(r) for r in results]
    entries.insert(2, column_types_result(bad_types, severity))  # after not_empty, columns_present
    finish_image_entries(entries, images, typed)
    report = summarise(entries, len(df))
    json_path = Path(out_dir) / VALIDATION_JSON
    write_json(json_path, report)
    atomic_write_text(Path(out_dir) / report["results_page"], render_results_page(report))
    dump_params(params, Path(out_dir) / "params.yaml")
    for e in entries:
        if not e["success"] and e["severity"] == "warning":
            log.warning("validation warning: %s (observed %s)", e["name"], e["observed"])
    log.info("validated %d rows: %d expectations, results in %s", len(df), len(entries), out_dir / VALIDATION_HTML)
    if report["blocking_failed"]:
        raise GateError(gate_message(report, json_path))
    return report
