"""MLflow model registry: register with lineage and evidence, gated promotion, rollback, download by alias.

Aliases, not stages (deprecated in MLflow 3): `register` points `challenger` at the new version; `promote`
moves `champion` when the candidate passes the gate against the current champion and keeps the old one as
`previous-champion`; `rollback` restores it. Everything a decision rests on is stored as version tags (the
lineage, the headline test metrics with their CIs, the frozen threshold, the gate result) so that the
registry alone shows why a version is where it is, and who moved it when.

Registration is all or nothing: the version is created only after the model's artifacts are uploaded; a
failed upload deletes the half-logged model (and the run, when it was created here) and raises InputError.

Modules, one concern each (callers import from them directly):

- `names`: alias names, tag keys and the headline metrics every other module agrees on.
- `client`: the MLflow client on the resolved tracking URI, error translation, tag/time/user values.
- `lineage`: pure register inputs: reading and cross-checking the model and eval dirs, the fingerprint,
  the evaluation gate, the version tags.
- `register`: `run_register`, the `register` step, and its MLflow phases (run, logged model, evidence,
  version), all or nothing.
- `compare`: pure like-with-like comparison: test-set fingerprint and equality, paired cluster-bootstrap CI of
  the AUROC difference, DeLong's test, the comparison's gate rows and `comparison.*` tags.
- `evidence`: the comparison's registry I/O: both versions' test predictions, test-set reuse, recording tags.
- `gate`: the pure promotion gate (candidate vs champion tags, plus the comparison's rows) and its table.
- `aliases`: `run_promote` and `run_rollback`, the alias moves.
- `download`: `download_model_dir` (the model dir, for predict) and `fetch_model` (the whole MLflow model, for
  serving and promotion) for `models:/NAME@ALIAS` and `models:/NAME/VERSION` URIs, both verified.
- `verify`: the checks before anything loads a registered model: models-from-code only, no pickle, this
  package's model code, weights that hash to the registered fingerprint.

Who may call which is decided by the tracking server (MLflow basic auth, the project's roles and guard:
`fracture.access`); `promote`, `rollback` and `register` check the user's permission before they change anything.
"""
