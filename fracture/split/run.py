"""Patient-grouped, label-stratified splits with the cohort policy applied.

Rows are grouped by the connected components of `patient_id` and `group_id` (a patient's images, and an
image's offline-augmented copies, always land in the same split), stratified by label with
`StratifiedGroupKFold`, and seeded. Strategies:

- `cross_domain` (seed option B): `split.train_sources` split by patient into train/val, `split.test_sources`
  are the test set.
- `kfold` (seed option A): `n_folds` folds over every source; fold K is test, fold (K + 1) % n is val.
- `loso`: leave one source out; `fold` indexes the sorted sources present, that source is test, the others
  are split by patient into train/val.

Rows hit by the cohort policy are kept with split `excluded` and a reason; nothing is dropped. Offline-augmented
copies (`augmented_from` set) stay with their group: in train they train, in val or test they are `excluded`
(`augmented_copy`), so only originals are ever scored. `split.mura_valid` (`val` / `test`) puts MURA's own valid
set, with the rest of its leakage groups, in that split before the strategy splits the remaining rows.
Each row's `cluster_id` is its leakage group: the unit evaluate's bootstrap resamples.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from fracture.base.errors import InputError, MultiLine
from fracture.base.io import atomic_write_text, read_manifest, write_json, write_parquet
from fracture.config import ExclusionPolicy, Params, SplitParams, dump_params
from fracture.contracts.artifacts import BASELINE, FLOW, QUARANTINE, SPLIT_SUMMARY_CSV, SPLIT_SUMMARY_JSON
from fracture.contracts.schema import SPLIT_COLUMNS, SPLITS, copy_exclusion_reason
from fracture.contracts.tasks import TASK_REASON, apply_task, check_split_classes
from fracture.split.cohort import baseline_table, flow_counts

log = logging.getLogger(__name__)

STRATEGIES = ("cross_domain", "kfold", "loso")
SUMMARY_COLUMNS = ("split", "source", "images", "patients", "positives", "prevalence")
MANIFEST_NEEDS = ("image_id", "source", "patient_id", "group_id", "augmented_from", "label")


def _flag(df: pd.DataFrame, column: str) -> np.ndarray:
    """A nullable boolean manifest column as plain bool (null = False); all False when the column is absent."""
    if column not in df.columns:
        return np.zeros(len(df), dtype=bool)
    return df[column].astype("boolean").fillna(False).to_numpy(dtype=bool)


def exclusion_reasons(df: pd.DataFrame, policy: ExclusionPolicy) -> pd.Series:
    """Why each row is excluded by the cohort policy ("; "-joined), null for rows that are kept."""
    rules = []
    if policy.metal:
        rules.append(("metal", _flag(df, "metal")))
    if policy.diagnosis_uncertain:
        rules.append(("diagnosis_uncertain", _flag(df, "diagnosis_uncertain")))
    if policy.sex_other and "sex" in df.columns:
        rules.append(("sex O", df["sex"].astype("string").eq("O").fillna(False).to_numpy(dtype=bool)))
    if policy.projection_other and "projection" in df.columns:
        rules.append(("projection other", df["projection"].astype("string").eq("other").fillna(False).to_numpy(bool)))
    if TASK_REASON in df.columns:  # outside the task (fracture.contracts.tasks.apply_task)
        task = df[TASK_REASON].astype("string")
        rules.append((task.fillna(""), task.notna().to_numpy(bool)))
    reasons = ["; ".join(str(_at(name, i)) for name, hit in rules if hit[i]) for i in range(len(df))]
    return pd.Series(reasons, index=df.index, dtype="string").replace("", pd.NA)


def _at(name: str | pd.Series, i: int) -> str:
    """A rule's reason: its fixed name, or the row's own text (a task's reason)."""
    return name if isinstance(name, str) else name.iloc[i]


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving
        i = parent[i]
    return i


def group_components(df: pd.DataFrame) -> pd.Series:
    """Leakage groups: connected components of rows sharing a patient_id or a group_id.

    Returns:
        Per row, the component's smallest image_id (a label independent of row order).
    """
    keys: dict[str, int] = {}
    parent: list[int] = []
    row_node = np.empty(len(df), dtype=np.int64)
    for i, (image_id, patient, group) in enumerate(zip(df["image_id"], df["patient_id"], df["group_id"], strict=True)):
        ids = [f"p:{patient}" if pd.notna(patient) else f"i:{image_id}", f"g:{group}" if pd.notna(group) else None]
        nodes = []
        for key in filter(None, ids):
            if key not in keys:
                keys[key] = len(parent)
                parent.append(len(parent))
            nodes.append(keys[key])
        for other in nodes[1:]:
            parent[_find(parent, other)] = _find(parent, nodes[0])
        row_node[i] = nodes[0]
    roots = pd.Series([_find(parent, int(n)) for n in row_node], index=df.index)
    return df["image_id"].astype(str).groupby(roots).transform("min")


def stratified_group_folds(labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """Fold index per row from a seeded StratifiedGroupKFold (whole groups per fold, label mix balanced).

    Raises:
        ValueError: fewer groups than folds.
    """
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise ValueError(f"{n_groups} patient group(s) cannot fill {n_splits} folds")
    folds = np.full(len(labels), -1, dtype=np.int64)
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")  # tiny sets; folds still valid
        for k, (_, test_idx) in enumerate(cv.split(np.zeros(len(labels)), labels, groups)):
            folds[test_idx] = k
    return folds


def split_train_val(labels: np.ndarray, groups: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """Label each row train or val: one of round(1 / val_fraction) stratified group folds becomes val."""
    n_splits = max(2, round(1 / val_fraction))
    folds = stratified_group_folds(labels, groups, n_splits, seed)
    return np.where(folds == 0, "val", "train")


def _check_groups_within_sources(df: pd.DataFrame, groups: pd.Series, strategy: str) -> None:
    spans = df.groupby(groups)["source"].nunique()
    bad = spans[spans > 1]
    if len(bad):
        shown = ", ".join(map(str, bad.index[:5]))
        raise InputError(
            f"split strategy {strategy!r}: {len(bad)} patient/augmentation group(s) span several sources "
            f"(groups containing image_id {shown}); patient_id and group_id must be namespaced by source"
        )


def stratify_labels(df: pd.DataFrame) -> pd.Series:
    """The labels splits stratify on: the ingested ones, before clinical-review corrections.

    A corrected row (`label_source` "review", fracture.corrections) holds the flipped binary label; stratifying on
    the original keeps every image in the split it had, so a correction never moves an image between splits.
    """
    label = df["label"].astype(int)
    if "label_source" not in df.columns:
        return label
    corrected = df["label_source"].astype("string").eq("review").fillna(False).to_numpy()
    return label.where(~corrected, 1 - label)


def _train_val(df: pd.DataFrame, rows: np.ndarray, groups: pd.Series, sp: SplitParams, seed: int, what: str) -> None:
    """Write "train"/"val" into df["split"] for the boolean mask `rows`."""
    if not rows.any():
        return
    try:
        df.loc[rows, "split"] = split_train_val(
            df.loc[rows, "label"].to_numpy(), groups[rows].to_numpy(), sp.val_fraction, seed
        )
    except ValueError as err:
        raise InputError(f"cannot split {what} into train/val by patient: {err}") from None


def assign_cross_domain(df: pd.DataFrame, groups: pd.Series, sp: SplitParams, seed: int) -> None:
    """Seed option B: train_sources -> train/val by patient, test_sources -> test; other sources excluded."""
    overlap = sorted(set(sp.train_sources) & set(sp.test_sources))
    if overlap:
        raise InputError(f"split.train_sources and split.test_sources overlap: {', '.join(overlap)}")
    _check_groups_within_sources(df, groups, "cross_domain")
    open_rows = df["split"].isna().to_numpy()
    source = df["source"].astype(str)
    df.loc[open_rows & source.isin(sp.test_sources).to_numpy(), "split"] = "test"
    train_rows = open_rows & source.isin(sp.train_sources).to_numpy()
    _train_val(df, train_rows, groups, sp, seed, f"train_sources {list(sp.train_sources)}")
    other = df["split"].isna().to_numpy()
    df.loc[other, "split"] = "excluded"
    df.loc[other, "reason"] = "source " + source[other] + " not in split.train_sources or split.test_sources"


def assign_kfold(df: pd.DataFrame, groups: pd.Series, sp: SplitParams, fold: int, seed: int) -> None:
    """Seed option A: fold `fold` is test, fold (fold + 1) % n_folds is val, the rest train; `fold` recorded."""
    rows = df["split"].isna().to_numpy()
    try:
        folds = stratified_group_folds(df.loc[rows, "label"].to_numpy(), groups[rows].to_numpy(), sp.n_folds, seed)
    except ValueError as err:
        raise InputError(f"split strategy 'kfold' with n_folds={sp.n_folds}: {err}") from None
    names = np.where(folds == fold, "test", np.where(folds == (fold + 1) % sp.n_folds, "val", "train"))
    df.loc[rows, "split"] = names
    df.loc[rows, "fold"] = folds


def assign_loso(df: pd.DataFrame, groups: pd.Series, sp: SplitParams, fold: int, seed: int) -> None:
    """Leave one source out: the `fold`-th sorted source is test, the others train/val by patient."""
    sources = sorted(df["source"].astype(str).unique())
    if fold >= len(sources):
        raise InputError(f"split strategy 'loso': fold {fold} out of range for sources present {sources}")
    _check_groups_within_sources(df, groups, "loso")
    held_out = sources[fold]
    open_rows = df["split"].isna().to_numpy()
    is_test = (df["source"].astype(str) == held_out).to_numpy()
    df.loc[open_rows & is_test, "split"] = "test"
    _train_val(df, open_rows & ~is_test, groups, sp, seed, f"sources other than {held_out}")


def mura_trains(df: pd.DataFrame, sp: SplitParams, strategy: str, fold: int) -> bool:
    """Whether the strategy trains on MURA (then `split.mura_valid` applies; a held-out MURA is all test anyway)."""
    if strategy == "cross_domain":
        return "mura" in sp.train_sources
    if strategy == "loso":
        sources = sorted(df["source"].astype(str).unique())
        return fold < len(sources) and sources[fold] != "mura"
    return True


def pin_mura_valid(df: pd.DataFrame, work: pd.DataFrame, groups: pd.Series, sp: SplitParams, how: tuple) -> None:
    """Honour MURA's own split (`split.mura_valid`) where the strategy trains on MURA.

    `test`: MURA's valid rows go to test; MURA's train rows are split by the strategy. `val`: MURA's valid rows go
    to val and its train rows to train. Whole leakage groups move (MURA's two sets share no patient), and only rows
    the cohort policy kept.
    """
    if sp.mura_valid == "pool" or "source_split" not in df.columns or not mura_trains(df, sp, *how):
        return
    mura = (df["source"].astype(str) == "mura").to_numpy()
    official = mura & df["source_split"].astype("string").eq("valid").fillna(False).to_numpy(dtype=bool)
    targets = [(official, sp.mura_valid)] + ([(mura & ~official, "train")] if sp.mura_valid == "val" else [])
    for rows, target in targets:
        moved = groups.isin(set(groups[rows])).to_numpy() & work["split"].isna().to_numpy()
        work.loc[moved, "split"] = target
        log.info("split.mura_valid=%s: %d MURA image(s) placed in %s", sp.mura_valid, moved.sum(), target)


def exclude_scored_copies(df: pd.DataFrame, work: pd.DataFrame) -> None:
    """Augmented copies whose group landed in val or test are excluded (only originals are scored)."""
    is_copy = df["augmented_from"].notna().to_numpy()
    for name in ("val", "test"):
        rows = is_copy & (work["split"] == name).to_numpy()
        work.loc[rows, ["split", "reason", "fold"]] = ["excluded", copy_exclusion_reason(name), pd.NA]


def _check_not_empty(splits: pd.DataFrame, df: pd.DataFrame, sp: SplitParams, strategy: str, fold: int) -> None:
    present = sorted(df["source"].astype(str).unique())
    for name in ("train", "val", "test"):
        if not (splits["split"] == name).any():
            hint = {
                "cross_domain": f"train_sources {list(sp.train_sources)}, test_sources {list(sp.test_sources)}",
                "kfold": f"n_folds {sp.n_folds}, fold {fold}",
                "loso": f"fold {fold}",
            }[strategy]
            raise InputError(
                f"split strategy {strategy!r} ({hint}) leaves {name} empty; sources present: {', '.join(present)} "
                f"({int((splits['split'] == 'excluded').sum())} of {len(df)} rows excluded by the cohort policy)"
            )


def make_splits(df: pd.DataFrame, sp: SplitParams, strategy: str, fold: int, seed: int) -> pd.DataFrame:
    """Assign every manifest row to train/val/test/excluded.

    Args:
        df: the manifest.
        sp: split params (sources, n_folds, val_fraction, mura_valid, cohort policy); `strategy`/`fold` win over
            theirs.
        strategy: cross_domain | kfold | loso.
        fold: kfold test fold, or loso source index.
        seed: base seed; the same seed and manifest give identical splits.

    Returns:
        One row per manifest row, in manifest order, with schema.SPLIT_COLUMNS (`cluster_id`: the leakage group).

    Raises:
        InputError: a strategy leaves a split empty, or has too few patients to fill its folds.
    """
    reasons = exclusion_reasons(df, sp.exclude)
    # `label` here only stratifies: the ingested label, so a review correction never moves an image between splits
    work = pd.DataFrame({"source": df["source"], "label": stratify_labels(df), "fold": pd.NA, "reason": reasons})
    work["split"] = pd.Series(np.where(reasons.notna(), "excluded", None), index=df.index, dtype=object)
    groups = group_components(df)
    pin_mura_valid(df, work, groups, sp, (strategy, fold))
    assign = {
        "cross_domain": lambda: assign_cross_domain(work, groups, sp, seed),
        "kfold": lambda: assign_kfold(work, groups, sp, fold, seed),
        "loso": lambda: assign_loso(work, groups, sp, fold, seed),
    }
    assign[strategy]()
    exclude_scored_copies(df, work)
    out = pd.DataFrame(
        {
            "image_id": df["image_id"],
            "split": work["split"],
            "fold": work["fold"],
            "reason": work["reason"],
            "cluster_id": groups,
        }
    )
    out = out.astype(SPLIT_COLUMNS).reset_index(drop=True)
    _check_not_empty(out, df, sp, strategy, fold)
    return out


def summarise_splits(df: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    """Images, patients, positives and prevalence per split and source (plus source "all")."""
    joined = splits[["split"]].assign(
        source=df["source"].astype(str).to_numpy(),
        patient_id=df["patient_id"].to_numpy(),
        label=df["label"].astype(int).to_numpy(),
    )
    both = pd.concat([joined, joined.assign(source="all")])
    table = both.groupby(["split", "source"], sort=False).agg(
        images=("label", "size"), patients=("patient_id", "nunique"), positives=("label", "sum")
    )
    table["prevalence"] = (table["positives"] / table["images"]).round(4)
    table = table.reset_index()
    order = {name: i for i, name in enumerate(SPLITS)}
    table = table.sort_values(["split", "source"], key=lambda s: s.map(order) if s.name == "split" else s)
    return table[list(SUMMARY_COLUMNS)].reset_index(drop=True)


def resolve_strategy(sp: SplitParams, strategy: str | None, fold: int | None) -> tuple[str, int]:
    """The CLI's --strategy/--fold over params, validated.

    Raises:
        InputError: unknown strategy, negative fold, or a kfold fold >= n_folds.
    """
    strategy = sp.strategy if strategy is None else strategy
    fold = sp.fold if fold is None else fold
    if strategy not in STRATEGIES:
        raise InputError(f"unknown split strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if fold < 0 or (strategy == "kfold" and fold >= sp.n_folds):
        raise InputError(f"split strategy {strategy!r}: fold {fold} out of range (n_folds {sp.n_folds})")
    return strategy, fold


def _summary_json(summary: pd.DataFrame, splits: pd.DataFrame, how: dict, seed: int) -> dict:
    reasons = splits.loc[splits["split"] == "excluded", "reason"].value_counts()
    return {
        "task": how["task"],
        "strategy": how["strategy"],
        "fold": how["fold"],
        "seed": seed,
        "exclusions": {str(k): int(v) for k, v in reasons.items()},
        "rows": summary.to_dict(orient="records"),
    }


def _check_manifest(df: pd.DataFrame, path: Path) -> None:
    missing = [c for c in MANIFEST_NEEDS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: manifest lacks column(s) {', '.join(missing)} needed to split (re-run ingest)")
    if df["image_id"].duplicated().any():
        raise InputError(f"{path}: duplicate image_id values; run `fracture validate` first")
    if df[["image_id", "source", "label"]].isna().any().any():
        raise InputError(f"{path}: null image_id, source or label; run `fracture validate` first")


def read_quarantine(manifest_path: Path) -> pd.DataFrame | None:
    """Ingest's quarantine.csv beside the manifest; None (with a warning) when there is none.

    Raises:
        InputError: the file exists but is not a CSV with `source` and `reason` columns.
    """
    path = Path(manifest_path).parent / QUARANTINE
    if not path.is_file():
        log.warning("%s not found: flow.json counts accepted images only (no quarantine stage)", path)
        return None
    try:
        quarantine = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise InputError(f"{path}: cannot read quarantine table ({err})") from None
    missing = [c for c in ("source", "reason") if c not in quarantine.columns]
    if missing:
        raise InputError(f"{path}: quarantine table lacks column(s) {', '.join(missing)}")
    return quarantine.replace("", pd.NA)


def write_cohort_tables(df: pd.DataFrame, splits: pd.DataFrame, manifest_path: Path, out_dir: Path, how: dict) -> dict:
    """flow.json (STARD flow counts) and baseline.csv (characteristics per split) into `out_dir`.

    Returns:
        The flow counts.
    """
    flow = flow_counts(df, splits, read_quarantine(manifest_path), how["strategy"], how["fold"])
    write_json(out_dir / FLOW, flow)
    atomic_write_text(out_dir / BASELINE, baseline_table(df, splits).to_csv(index=False))
    return flow


def run_split(
    params: Params, manifest_path: Path, out_path: Path, strategy: str | None = None, fold: int | None = None
) -> dict:
    """Write splits.parquet, split_summary.json/.csv, flow.json, baseline.csv and the resolved params beside it.

    ingest's quarantine.csv, read from beside the manifest, feeds the flow's quarantine stage.

    Returns:
        The split_summary.json content.
    """
    strategy, fold = resolve_strategy(params.split, strategy, fold)
    params = params.model_copy(update={"split": params.split.model_copy(update={"strategy": strategy, "fold": fold})})
    df, _ = read_manifest(manifest_path)
    _check_manifest(df, Path(manifest_path))
    task = params.base.task
    if task != "fracture" and strategy != "kfold":
        raise InputError(
            f"task {task!r} has labels in GRAZPEDWRI-DX only: split it with split.strategy kfold (patient-grouped "
            f"folds within that source), not {strategy!r}"
        )
    df = apply_task(df, task)
    splits = make_splits(df, params.split, strategy, fold, params.base.seed)
    if task != "fracture":
        check_split_classes(splits, df["label"], task)
    summary = summarise_splits(df, splits)
    out_path = Path(out_path)
    write_parquet(splits, out_path)
    report = _summary_json(summary, splits, {"task": task, "strategy": strategy, "fold": fold}, params.base.seed)
    write_json(out_path.parent / SPLIT_SUMMARY_JSON, report)
    atomic_write_text(out_path.parent / SPLIT_SUMMARY_CSV, summary.to_csv(index=False))
    write_cohort_tables(df, splits, Path(manifest_path), out_path.parent, {"strategy": strategy, "fold": fold})
    dump_params(params, out_path.parent / "params.yaml")
    table = MultiLine(summary.to_string(index=False))
    log.info("split %s (fold %d, seed %d):\n%s", strategy, fold, params.base.seed, table)
    return report
