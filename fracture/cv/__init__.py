"""Cross-validation studies: k-fold and leave-one-source-out, each fold trained and evaluated, pooled out of fold.

`folds` writes one split (and one resolved params file) per fold; train and evaluate run per fold unchanged; `pool`
gathers the folds' eval dirs into one out-of-fold result (`folds.csv`, `oof_predictions.parquet`, `pooled.json`).
`recipe` names the training recipe a CV result is evidence for (registered versions trained the same way).
"""


def fold_dir_name(fold: int) -> str:
    """`fold-<K>`: the folder of fold K under a study's folds/, models/ and eval/ dirs."""
    return f"fold-{fold}"


# The pool dir's contract (fracture.cv.pool writes it; the report and the registry read it).
FILES = {"folds": "folds.csv", "oof": "oof_predictions.parquet", "pooled": "pooled.json", "study": "study.json"}
