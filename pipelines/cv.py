"""The cross-validation study as one Kubeflow pipeline (compiled when `split.strategy` is kfold or loso).

ingest -> validate -> preprocess, then a `dsl.ParallelFor` over `cv.folds` (at most `pipeline.max_parallel_folds`
at once): split_fold -> train (GPU, or a TrainJob launcher) -> evaluate, each fold on its own params (the fold
index, `cv.n_folds`, `cv.epochs`); `dsl.Collected` gathers the folds' eval dirs into one `pool` task. The study
ends at the pooled result: nothing is registered from it (`fracture register --cv` attaches a pool dir to a version
trained with the same recipe).
"""

import json
from collections.abc import Callable

from fracture.kubeflow.components.evaluate.component import evaluate
from fracture.kubeflow.components.ingest.component import ingest
from fracture.kubeflow.components.pool.component import pool
from fracture.kubeflow.components.preprocess.component import preprocess
from fracture.kubeflow.components.split_fold.component import split_fold
from fracture.kubeflow.components.train.component import train as train_in_pod
from fracture.kubeflow.components.train_trainjob.component import train as train_trainjob
from fracture.kubeflow.components.validate.component import validate
from kfp import dsl

from fracture.config import Params
from fracture.cv.folds import study_params

CV_PIPELINE_NAME = "fracture-cross-validation"


def build_cv_pipeline(params: Params, task_setup: Callable, train_setup: Callable) -> Callable:
    """The @dsl.pipeline function of the study (`task_setup(task)` finishes every task, `train_setup` train's)."""
    strategy = params.split.strategy
    study = study_params(params, strategy)
    train = train_trainjob if params.pipeline.train_mode == "trainjob" else train_in_pod
    params_default = json.dumps(params.to_dict(), sort_keys=True)
    folds = list(study.cv.folds)

    @dsl.pipeline(name=CV_PIPELINE_NAME, description=f"Cross-validation ({strategy}): every fold trained, pooled.")
    def cv_pipeline(
        params_json: str = params_default,
        data_source: str = params.pipeline.data_source,
        data_location: str = params.pipeline.data_location,
        data_revision: str = params.pipeline.data_revision,
        epochs: int = study.train.epochs,
        learning_rate: float = params.train.lr,
    ):
        ing = ingest(
            params_json=params_json, data_source=data_source, data_location=data_location, data_revision=data_revision
        )
        checks = validate(
            params_json=params_json, raw_data=ing.outputs["raw_data"], ingest_dir=ing.outputs["ingest_dir"]
        )
        pre = preprocess(
            params_json=params_json, raw_data=ing.outputs["raw_data"], ingest_dir=ing.outputs["ingest_dir"]
        )
        pre.after(checks)
        tasks = [ing, checks, pre]
        with dsl.ParallelFor(items=folds, parallelism=params.pipeline.max_parallel_folds) as fold:
            spl = split_fold(
                params_json=params_json, strategy=strategy, fold=fold, ingest_dir=ing.outputs["ingest_dir"]
            )
            spl.after(checks)  # never split data that failed a blocking expectation
            trn = train(
                params_json=spl.outputs["Output"],
                epochs=epochs,
                learning_rate=learning_rate,
                data_revision=data_revision,
                ingest_dir=ing.outputs["ingest_dir"],
                splits=spl.outputs["splits"],
                cache=pre.outputs["cache"],
            )
            ev = evaluate(
                params_json=spl.outputs["Output"],
                data_revision=data_revision,
                model=trn.outputs["model"],
                ingest_dir=ing.outputs["ingest_dir"],
                splits=spl.outputs["splits"],
                cache=pre.outputs["cache"],
            )
            train_setup(trn)
            tasks += [spl, ev]
        pooled = pool(params_json=params_json, eval_dirs=dsl.Collected(ev.outputs["eval_dir"]))
        for task in [*tasks, pooled]:
            task_setup(task)

    return cv_pipeline
