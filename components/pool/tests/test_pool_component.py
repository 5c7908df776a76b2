"""The `pool` component hands every fold's eval dir, in order, to `steps.pool_step`."""

from fracture.kubeflow.components.pool.component import pool
from kfp import dsl

from fracture.kubeflow import steps


def test_pool_component_passes_every_folds_eval_dir(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(steps, "pool_step", lambda *args: seen.setdefault("args", args))
    folds = [dsl.Dataset(name="eval_dirs", uri=str(tmp_path / f"fold-{k}"), metadata={}) for k in range(3)]
    out = dsl.Dataset(name="pool_dir", uri=str(tmp_path / "pool"), metadata={})
    metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / "metrics"), metadata={})
    pool.python_func(params_json="{}", eval_dirs=folds, pool_dir=out, metrics=metrics)
    assert seen["args"] == ("{}", [str(tmp_path / f"fold-{k}") for k in range(3)], str(tmp_path / "pool"), metrics)
