"""`fracture`: one command per pipeline step.

Each command loads params, calls the step's `run_<step>` function (the same function the DVC stage and the
Kubeflow component call) and maps errors to exit codes: 0 success, 1 a gate failed, 2 bad usage or input.
Step modules are imported inside the commands so that `fracture --help` stays fast.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from fracture.base.errors import FractureError, printable
from fracture.base.logs import setup_logging
from fracture.contracts.artifacts import SPLITS
from fracture.kubeflow import command as kfp_cli
from fracture.registry.relock import relock
from fracture.review.cli import review_add_user, review_serve, review_summary
from fracture.tune import command as tune_cli
from fracture.vocab import BODY_PARTS, examples

VERBOSE_FLAGS = ("-v", "--verbose")


def hide_flag_types(command: click.Command, ctx: click.Context) -> click.Command:
    """Drop the `<bool>` type that rich help prints beside on/off flags (they take no value)."""
    for param in command.get_params(ctx):  # includes the (cached) --help option
        if getattr(param, "is_flag", False):  # typer's options are its vendored click's, not `click.Option`
            param.metavar = ""
    return command


class FractureGroup(TyperGroup):
    """Help without `<bool>` beside flags, for the group's own options and every subcommand's."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The subcommand, its flags shown without a type."""
        command = super().get_command(ctx, cmd_name)
        return None if command is None else hide_flag_types(command, ctx)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The group's help, its own flags shown without a type."""
        hide_flag_types(self, ctx)
        super().format_help(ctx, formatter)


class VerboseAnywhere(FractureGroup):
    """`-v/--verbose` accepted after the subcommand too (`fracture train -v ...`): moved before it on parsing."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Move the verbose flags (before any `--`) to the front, where the group's own option reads them."""
        end = args.index("--") if "--" in args else len(args)
        head = args[:end]
        flags = [a for a in head if a in VERBOSE_FLAGS]
        return super().parse_args(ctx, flags[:1] + [a for a in head if a not in VERBOSE_FLAGS] + args[end:])


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"fracture {version('fracture-mlops')}")
        raise typer.Exit()


app = typer.Typer(
    cls=VerboseAnywhere,
    help="fracture-mlops: train, evaluate, explain and ship a wrist fracture classifier.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
pipeline_app = typer.Typer(
    cls=FractureGroup, help="Kubeflow Pipelines: compile, run locally, submit.", no_args_is_help=True
)
app.add_typer(pipeline_app, name="pipeline")
registry_app = typer.Typer(cls=FractureGroup, help="MLflow registry access: users and roles.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")
review_app = typer.Typer(cls=FractureGroup, help="Clinical review app: verdicts and sign-off.", no_args_is_help=True)
app.add_typer(review_app, name="review")

log = logging.getLogger("fracture")

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to use.", dir_okay=False)]
DEFAULT_PARAMS = Path("params.yaml")
DataRootOpt = Annotated[
    Path,
    typer.Option(
        "--data-root",
        help="Where relative source dirs (ingest) and the manifest's recorded source roots (later steps) resolve.",
        file_okay=False,
    ),
]
DEFAULT_DATA_ROOT = Path(".")
ManifestOpt = Annotated[
    Path,
    typer.Option(
        "--manifest",
        help="manifest.parquet the model was evaluated on (infra validation's image files).",
        dir_okay=False,
    ),
]
DEFAULT_MANIFEST = Path("data/interim/ingest/manifest.parquet")


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging (also after the command).")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """fracture-mlops command line."""
    setup_logging(verbose)


def step(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn FractureError into a one-line message and the contract's exit code (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FractureError as err:
            log.error("%s", printable(str(err)))  # one line: newlines in quoted values are escaped too
            raise typer.Exit(err.exit_code) from None
        except OSError as err:  # a full disk, a read-only or vanished dir the step did not name itself
            from fracture.base.outputs import os_error_message

            log.error("%s", printable(os_error_message(err)))
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            log.error("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def path_option(value: str, option: str) -> Path:
    """A path option that must not be empty (Path("") would silently mean the working directory)."""
    from fracture.base.outputs import path_option as checked

    return checked(value, option)


def _params(path: Path):  # noqa: ANN202 - Params, imported lazily
    from fracture.config import load_params

    return load_params(path)


@app.command(epilog=examples("synth"))
@step
def synth(
    out: Annotated[Path, typer.Option(help="Output root; gets GRAZPEDWRI-DX/, MURA-v1.1/, hospital/.")],
    n_per_source: Annotated[int | None, typer.Option(help="Images per source (default: params).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: params base.seed).")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Write deterministic synthetic radiographs in the three real on-disk layouts."""
    cfg = _params(params)
    from fracture.synth import run_synth

    run_synth(cfg, out, n_per_source=n_per_source, seed=seed)


@app.command(epilog=examples("ingest"))
@step
def ingest(
    out: Annotated[str, typer.Option(help="Output dir for manifest.parquet, quarantine.csv, summary.json.")],
    kaggle: Annotated[Path | None, typer.Option(help="GRAZPEDWRI-DX root (holds dataset.csv).")] = None,
    mura: Annotated[Path | None, typer.Option(help="The MURA-v1.1 folder (holds the four CSVs).")] = None,
    hospital: Annotated[Path | None, typer.Option(help="Hospital root (<part>/{positive,negative}/...).")] = None,
    kaggle_boxes: Annotated[Path | None, typer.Option(help="GRAZPEDWRI-DX YOLO labels dir (boxes.parquet).")] = None,
    data_root: DataRootOpt = DEFAULT_DATA_ROOT,
    label_corrections: Annotated[Path | None, typer.Option(help="Clinical review's label corrections (CSV).")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Harmonise the three datasets into one manifest; quarantine what cannot be used, with a reason."""
    cfg = _params(params)
    from fracture.ingest import run_ingest

    out_dir = path_option(out, "--out")
    run_ingest(cfg, out_dir, kaggle_dir=kaggle, mura_dir=mura, hospital_dir=hospital, data_root=data_root,
               label_corrections=label_corrections, boxes_dir=kaggle_boxes)  # fmt: skip


@app.command(epilog=examples("validate"))
@step
def validate(
    manifest: Annotated[Path, typer.Option(help="manifest.parquet from ingest.")],
    out: Annotated[Path, typer.Option(help="Output dir for validation.json, validation.html and data_docs/.")],
    data_root: DataRootOpt = DEFAULT_DATA_ROOT,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Great Expectations checks over the manifest; exit 1 when a blocking expectation fails."""
    cfg = _params(params)
    from fracture.validate.run import run_validate

    run_validate(cfg, manifest, out, data_root=data_root)


@app.command(epilog=examples("split"))
@step
def split(
    manifest: Annotated[Path, typer.Option(help="manifest.parquet from ingest.")],
    out: Annotated[Path, typer.Option(help="splits.parquet to write (summary beside it).")],
    strategy: Annotated[str | None, typer.Option(help="cross_domain | kfold | loso (default: params).")] = None,
    fold: Annotated[int | None, typer.Option(help="Fold index for kfold / source index for loso.")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Patient-grouped, label-stratified splits with the cohort policy applied."""
    cfg = _params(params)
    from fracture.split.run import run_split

    run_split(cfg, manifest, out, strategy=strategy, fold=fold)


@app.command("cv-split", epilog=examples("cv_split"))
@step
def cv_split(
    manifest: Annotated[Path, typer.Option(help="manifest.parquet from ingest.")],
    out: Annotated[Path, typer.Option(help="Study dir: fold-<K>/ (splits.parquet, params.yaml) per cv.folds.")],
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Cross-validation: one split and one resolved params file per fold of the `cv` section."""
    from fracture.cv.folds import run_cv_split

    run_cv_split(_params(params), manifest, out)


@app.command(epilog=examples("preprocess"))
@step
def preprocess(
    manifest: Annotated[Path, typer.Option(help="manifest.parquet from ingest.")],
    out: Annotated[str, typer.Option(help="Cache dir (memory-mappable uint8 array + index).")],
    data_root: DataRootOpt = DEFAULT_DATA_ROOT,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Decode, window and resize every image into the training cache."""
    cfg = _params(params)
    from fracture.preprocess.run import run_preprocess

    run_preprocess(cfg, manifest, path_option(out, "--out"), data_root=data_root)


@app.command(epilog=examples("train"))
@step
def train(
    manifest: Annotated[Path, typer.Option(help="manifest.parquet from ingest.")],
    splits: Annotated[Path, typer.Option(help="splits.parquet from split.")],
    cache: Annotated[Path, typer.Option(help="Preprocess cache dir.")],
    out: Annotated[Path, typer.Option(help="Model dir to write.")],
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in --out.")] = False,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Train the Swin fracture classifier (val-only model selection), tracked in MLflow; torchrun on several GPUs."""
    cfg = _params(params)
    from fracture.train.launch import maybe_relaunch

    code = maybe_relaunch(cfg.train.devices)
    if code is not None:  # trained by torchrun's processes
        raise typer.Exit(code)
    from fracture.train import run_train

    run_train(cfg, manifest, splits, cache, out, resume=resume)


@app.command(epilog=examples("evaluate"))
@step
def evaluate(
    model: Annotated[Path, typer.Option(help="Model dir from train.")],
    manifest: Annotated[Path, typer.Option(help="manifest.parquet from ingest.")],
    splits: Annotated[Path, typer.Option(help="splits.parquet from split.")],
    cache: Annotated[Path, typer.Option(help="Preprocess cache dir.")],
    out: Annotated[Path, typer.Option(help="Eval dir to write.")],
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Metrics with CIs at operating points frozen on val, subgroups, calibration, and the gate."""
    cfg = _params(params)
    from fracture.evaluate import run_evaluate

    run_evaluate(cfg, model, manifest, splits, cache, out)


@app.command(epilog=examples("pool"))
@step
def pool(
    out: Annotated[Path, typer.Option(help="Pool dir: folds.csv, oof_predictions.parquet, pooled.json.")],
    eval_dirs: Annotated[list[Path] | None, typer.Option("--eval-dirs", help="A fold's eval dir (repeat).")] = None,
    eval_root: Annotated[Path | None, typer.Option(help="Holds fold-<K>/ eval dirs: pools those of cv.folds.")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Pool a cross-validation study out of fold: each fold's held-out images at that fold's frozen threshold."""
    from fracture.cv.pool import run_pool, study_eval_dirs

    cfg = _params(params)
    run_pool(cfg, study_eval_dirs(cfg, eval_dirs or [], eval_root), out)


@app.command(epilog=examples("explain"))
@step
def explain(
    model: Annotated[Path, typer.Option(help="Model dir from train.")],
    eval: Annotated[Path, typer.Option("--eval", help="Eval dir from evaluate.")],
    cache: Annotated[Path, typer.Option(help="Preprocess cache dir.")],
    out: Annotated[Path, typer.Option(help="Output dir for Grad-CAM overlays and index.json.")],
    boxes: Annotated[Path | None, typer.Option(help="boxes.parquet from ingest: localization figures.")] = None,
    localization: Annotated[Path | None, typer.Option(help="localization.json (default: in --out).")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Grad-CAM overlays for TP / FN / FP / TN examples chosen by a fixed rule; with --boxes, checked against boxes."""
    cfg = _params(params)
    from fracture.explain import run_explain

    run_explain(cfg, model, eval, cache, out, boxes, localization)


@app.command(epilog=examples("report"))
@step
def report(
    out: Annotated[Path | None, typer.Option(help="report.html to write (default: params paths.report).")] = None,
    ingest_dir: Annotated[Path | None, typer.Option(help="Ingest output dir (default: paths.ingest).")] = None,
    validation: Annotated[Path | None, typer.Option(help="Validate output dir (default: paths.validation).")] = None,
    splits: Annotated[Path | None, typer.Option(help="splits.parquet (default: in paths.split).")] = None,
    model: Annotated[Path | None, typer.Option(help="Model dir (default: paths.model).")] = None,
    eval: Annotated[Path | None, typer.Option("--eval", help="Eval dir (default: paths.eval).")] = None,
    explain_dir: Annotated[Path | None, typer.Option("--explain", help="Explain dir (default: paths.explain).")] = None,
    localization: Annotated[Path | None, typer.Option(help="localization.json (default: paths.localization).")] = None,
    cv: Annotated[list[Path] | None, typer.Option(help="A CV study's pool dir: adds its section (repeat).")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Render the self-contained HTML evaluation report and model card."""
    cfg = _params(params)
    from fracture.report import run_report

    p = cfg.paths
    run_report(
        cfg,
        out or Path(p.report),
        ingest_dir=ingest_dir or Path(p.ingest),
        validation_dir=validation or Path(p.validation),
        splits_path=splits or Path(p.split) / SPLITS,
        model_dir=model or Path(p.model),
        eval_dir=eval or Path(p.eval),
        explain_dir=explain_dir or Path(p.explain),
        localization_path=localization or Path(p.localization),
        cv_dirs=cv,
    )


@app.command(epilog=examples("register"))
@step
def register(
    model: Annotated[Path, typer.Option(help="Model dir from train.")],
    eval: Annotated[Path, typer.Option("--eval", help="Eval dir from evaluate.")],
    name: Annotated[str | None, typer.Option(help="Registered model name (default: params).")] = None,
    report_path: Annotated[Path | None, typer.Option("--report", help="report.html to attach.")] = None,
    validation: Annotated[
        Path | None,
        typer.Option(help="Validate's output dir: validation.html and data_docs/ are logged beside the report."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Register although the gate failed (needs --reason).")] = False,
    reason: Annotated[str | None, typer.Option(help="Why --force is justified (recorded).")] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write the outcome (JSON: name, fingerprint, registered or why not; no version) here."),
    ] = None,
    cv: Annotated[Path | None, typer.Option(help="A CV study's pool dir: evidence when of the same recipe.")] = None,
    gate_failure_ok: Annotated[
        bool,
        typer.Option(
            "--gate-failure-ok",
            help="A failed gate is a result: record 'not registered' in --out and exit 0 (the DVC stage uses it).",
        ),
    ] = False,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Register the model in MLflow with its lineage and evidence; alias `challenger`.

    Exits 1 when the evaluation gate failed, unless --gate-failure-ok (then the record says why, and exit is 0).
    """
    cfg = _params(params)
    from fracture.base.errors import GateError
    from fracture.registry.register import not_registered_record, run_register

    try:
        record = run_register(
            cfg,
            model,
            eval,
            name=name,
            report_path=report_path,
            force=force,
            reason=reason,
            validation_dir=validation,
            cv_dir=cv,
        )
    except GateError:
        if not gate_failure_ok:
            raise
        record = not_registered_record(eval)
        log.warning("not registered: gate failed (%s)", "; ".join(record["reasons"]))
    if out is not None:
        from fracture.base.io import write_json
        from fracture.registry.register import outcome_record

        write_json(out, outcome_record(record))


@app.command(epilog=examples("promote"))
@step
def promote(
    name: Annotated[str | None, typer.Option(help="Registered model name (default: params).")] = None,
    version: Annotated[int | None, typer.Option(help="Version to promote.")] = None,
    alias: Annotated[str, typer.Option(help="Alias of the version to promote.")] = "challenger",
    dry_run: Annotated[bool, typer.Option(help="Compare and print; change nothing.")] = False,
    force: Annotated[bool, typer.Option(help="Promote although the gate failed (needs --reason).")] = False,
    reason: Annotated[str | None, typer.Option(help="Why (recorded on the version).")] = None,
    allow_different_test_set: Annotated[
        bool, typer.Option(help="Compare with a champion evaluated on another test set, unpaired (needs --reason).")
    ] = False,
    manifest: ManifestOpt = DEFAULT_MANIFEST,
    data_root: DataRootOpt = DEFAULT_DATA_ROOT,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Move `champion` to the candidate when it passes the paired comparison and infra validation (served, replayed)."""
    cfg = _params(params)
    from fracture.infravalidate.version import InfraData
    from fracture.registry.aliases import run_promote

    run_promote(
        cfg,
        name,
        version=version,
        alias=alias,
        dry_run=dry_run,
        force=force,
        reason=reason,
        infra=InfraData(manifest, data_root),
        allow_different_test_set=allow_different_test_set,
    )


@app.command(epilog=examples("rollback"))
@step
def rollback(
    name: Annotated[str | None, typer.Option(help="Registered model name (default: params).")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Restore the previous champion."""
    cfg = _params(params)
    from fracture.registry.aliases import run_rollback

    run_rollback(cfg, name)


@app.command(epilog=examples("infravalidate"))
@step
def infravalidate(
    model: Annotated[Path, typer.Option(help="Model dir from train.")],
    eval: Annotated[Path, typer.Option("--eval", help="Eval dir from evaluate (predictions.parquet).")],
    manifest: ManifestOpt = DEFAULT_MANIFEST,
    data_root: DataRootOpt = DEFAULT_DATA_ROOT,
    out: Annotated[Path | None, typer.Option(help="Write the result (JSON) here.")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Serve the model with `mlflow models serve` on loopback and replay its evaluation; exit 1 when it fails."""
    cfg = _params(params)
    from fracture.infravalidate.run import run_infravalidate

    run_infravalidate(cfg, model, eval, manifest, data_root, out)


@app.command(epilog=examples("serve"))
@step
def serve(
    model_uri: Annotated[
        str | None,
        typer.Option(help="models:/NAME@ALIAS, models:/NAME/VERSION or a pyfunc dir (default: the champion)."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Interface (default: params serve.host, loopback).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default: params serve.port).")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Serve a registered model with `mlflow models serve` (this environment's uvicorn); Ctrl-C stops it."""
    cfg = _params(params)
    from fracture.serving.server import run_serve

    run_serve(cfg, model_uri, host=host, port=port)


@app.command(epilog=examples("deploy"))
@step
def deploy(
    alias: Annotated[str, typer.Option(help="Registry alias of the version to deploy.")] = "champion",
    version: Annotated[int | None, typer.Option(help="Version to deploy (instead of --alias).")] = None,
    name: Annotated[str | None, typer.Option(help="Registered model name (default: params).")] = None,
    namespace: Annotated[str | None, typer.Option(help="Kubernetes namespace (default: deploy.namespace).")] = None,
    canary: Annotated[
        bool, typer.Option(help="Roll out as a canary (deploy.canary_traffic_percent of traffic).")
    ] = True,
    dry_run: Annotated[bool, typer.Option(help="Print the InferenceService manifest; apply nothing.")] = False,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Render (and apply, unless --dry-run) the KServe InferenceService serving a registry version."""
    cfg = _params(params)
    from fracture.serving.deploy import run_deploy

    manifest = run_deploy(cfg, name, alias=alias, version=version, namespace=namespace, canary=canary, dry_run=dry_run)
    if dry_run:
        typer.echo(manifest, nl=False)


@app.command(epilog=examples("predict"))
@step
def predict(
    img: Annotated[str, typer.Option(help="Image (PNG 8/16-bit, JPEG, TIFF, DICOM), a directory, or a CSV of paths.")],
    weight: Annotated[str, typer.Option(help="Model dir, model.pt, or models:/NAME@ALIAS.")],
    part: Annotated[
        str | None, typer.Option(help=f"Body part, recorded with the result: {' | '.join(BODY_PARTS)}.")
    ] = None,
    out: Annotated[str, typer.Option(help="Output dir for JSON/CSV results and overlays.")] = "results",
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Single-image or batch inference with the frozen threshold and a Grad-CAM overlay."""
    cfg = _params(params)
    from fracture.serving.predict import run_predict

    img_path, out_dir = path_option(img, "--img"), path_option(out, "--out")
    run_predict(cfg, img_path, weight, part=part, out_dir=out_dir)


@registry_app.command("setup-roles", epilog=examples("registry_setup_roles"))
@step
def registry_setup_roles(
    pipeline_user: Annotated[list[str], typer.Option(help="MLflow user the pipeline runs as (repeatable).")],
    reviewer: Annotated[list[str], typer.Option(help="MLflow user who may promote and roll back (repeatable).")],
    name: Annotated[str | None, typer.Option(help="Registered model name (default: params).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the roles and resulting permissions (JSON) here.")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Create the pipeline and reviewer roles on the MLflow server (as its admin) and assign the users."""
    cfg = _params(params)
    from fracture.access.roles import run_setup_roles

    record = run_setup_roles(cfg, name, pipeline_user, reviewer)
    if out is not None:
        from fracture.base.io import write_json

        write_json(out, record)


@registry_app.command("fetch", epilog=examples("registry_fetch"))
@step
def registry_fetch(
    model: Annotated[str, typer.Option(help="models:/NAME@ALIAS or models:/NAME/VERSION.")],
    out: Annotated[Path, typer.Option(help="New directory for the verified MLflow model.")],
) -> None:
    """Download a registered model for serving, verified: no pickle, this package's model code, registered weights."""
    from fracture.registry.download import fetch_model

    fetch_model(model, out)


pipeline_app.command("compile", epilog=examples("pipeline_compile"))(step(kfp_cli.pipeline_compile))
pipeline_app.command("run-local", epilog=examples("pipeline_run_local"))(step(kfp_cli.pipeline_run_local))
pipeline_app.command("submit", epilog=examples("pipeline_submit"))(step(kfp_cli.pipeline_submit))
review_app.command("serve", epilog=examples("review_serve"))(step(review_serve))
review_app.command("add-user", epilog=examples("review_add_user"))(step(review_add_user))
review_app.command("summary", epilog=examples("review_summary"))(step(review_summary))
app.command("relock", epilog=examples("relock"))(step(relock))  # body in fracture/registry/relock.py


app.command("tune", epilog=examples("tune"))(step(tune_cli.tune))  # its options and body: fracture/tune/
if __name__ == "__main__":
    app()
