"""Patient-grouped, label-stratified splits with the cohort policy applied.

Rows are grouped by the connected components of `patient_id` and `group_id` (a patient's images, and an
image's offline-augmented copies, always land in the same split), stratified by label with
`StratifiedGroupKFold`, and seeded. Strategies:

- `cross_domain` (seed option B): `split.train_sources` split by patient into train/val, `split.test_sources`
  are the test set.
- `kfold` (seed option A): `n_folds` folds over every source; fold K is test, fold (K + 1) % n is val.
- `loso`: leave one source out; `fold` indexes the sorted sources present, that source is test, the others
  are split by patient into train/val.

Rows hit by the cohort policy are kept with split `excluded` and a reason; nothing is dropped.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from fracture.config import ExclusionPolicy, Params, SplitParams, dump_params
from fracture.errors import InputError
from fracture.io import atomic_write_text, read_manifest, write_json, write_parquet
from fracture.schema import SPLIT_COLUMNS, SPLITS

log = logging.getLogger(__name__)

STRATEGIES = ("cross_domain", "kfold", "loso")
SUMMARY_COLUMNS = ("split", "source", "images", "patients", "positives", "prevalence")


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
    reasons = ["; ".join(name for name, hit in rules if hit[i]) for i in range(len(df))]
    return pd.Series(reasons, index=df.index, dtype="string").replace("", pd.NA)


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
        sp: split params (sources, n_folds, val_fraction, cohort policy); `strategy`/`fold` win over theirs.
        strategy: cross_domain | kfold | loso.
        fold: kfold test fold, or loso source index.
        seed: base seed; the same seed and manifest give identical splits.

    Returns:
        One row per manifest row, in manifest order, with schema.SPLIT_COLUMNS.

    Raises:
        InputError: a strategy leaves a split empty, or has too few patients to fill its folds.
    """
    reasons = exclusion_reasons(df, sp.exclude)
    work = pd.DataFrame({"source": df["source"], "label": df["label"], "fold": pd.NA, "reason": reasons})
    work["split"] = pd.Series(np.where(reasons.notna(), "excluded", None), index=df.index, dtype=object)
    groups = group_components(df)
    assign = {
        "cross_domain": lambda: assign_cross_domain(work, groups, sp, seed),
        "kfold": lambda: assign_kfold(work, groups, sp, fold, seed),
        "loso": lambda: assign_loso(work, groups, sp, fold, seed),
    }
    assign[strategy]()
    out = pd.DataFrame(
        {"image_id": df["image_id"], "split": work["split"], "fold": work["fold"], "reason": work["reason"]}
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


def _summary_json(summary: pd.DataFrame, splits: pd.DataFrame, strategy: str, fold: int, seed: int) -> dict:
    reasons = splits.loc[splits["split"] == "excluded", "reason"].value_counts()
    return {
        "strategy": strategy,
        "fold": fold,
        "seed": seed,
        "exclusions": {str(k): int(v) for k, v in reasons.items()},
        "rows": summary.to_dict(orient="records"),
    }


def _check_manifest(df: pd.DataFrame, path: Path) -> None:
    missing = [c for c in ("image_id", "source", "patient_id", "group_id", "label") if c not in df.columns]
    if missing:
        raise InputError(f"{path}: manifest lacks column(s) {', '.join(missing)} needed to split")
    if df["image_id"].duplicated().any():
        raise InputError(f"{path}: duplicate image_id values; run `fracture validate` first")
    if df[["image_id", "source", "label"]].isna().any().any():
        raise InputError(f"{path}: null image_id, source or label; run `fracture validate` first")


def run_split(
    params: Params, manifest_path: Path, out_path: Path, strategy: str | None = None, fold: int | None = None
) -> dict:
    """Write splits.parquet, split_summary.json/.csv and the resolved params beside it.

    Returns:
        The split_summary.json content.
    """
    strategy, fold = resolve_strategy(params.split, strategy, fold)
    params = params.model_copy(update={"split": params.split.model_copy(update={"strategy": strategy, "fold": fold})})
    df, _ = read_manifest(manifest_path)
    _check_manifest(df, Path(manifest_path))
    splits = make_splits(df, params.split, strategy, fold, params.base.seed)
    splits["cluster_id"] = group_components(df).astype("string").to_numpy()  # evaluate's bootstrap cluster
    summary = summarise_splits(df, splits)
    out_path = Path(out_path)
    write_parquet(splits, out_path)
    report = _summary_json(summary, splits, strategy, fold, params.base.seed)
    write_json(out_path.parent / "split_summary.json", report)
    atomic_write_text(out_path.parent / "split_summary.csv", summary.to_csv(index=False))
    dump_params(params, out_path.parent / "params.yaml")
    log.info("split %s (fold %d, seed %d):\n%s", strategy, fold, params.base.seed, summary.to_string(index=False))
    return report
