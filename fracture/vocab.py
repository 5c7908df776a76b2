"""What the command line shows in its help (value sets, examples): no third-party imports, so `--help` stays fast."""

from __future__ import annotations

# `fracture predict --part`: the body parts a wrist radiograph (or a hospital crop of one) may be recorded as.
BODY_PARTS = ("wrist", "radius", "scaphoid", "styloid", "ulna", "distal_forearm")


# `--help` examples, one tuple per command (tests/unit/test_cli_usage.py parses each against its command).
EXAMPLES: dict[str, tuple[str, ...]] = {
    "synth": (
        "fracture synth --out data/raw/demo",
        "fracture synth --out /tmp/synth --n-per-source 40 --seed 7",
    ),
    "ingest": (
        (
            "fracture ingest --kaggle data/raw/demo/GRAZPEDWRI-DX --mura data/raw/demo/MURA-v1.1"
            " --hospital data/raw/demo/hospital --out data/interim/ingest"
        ),
        "fracture ingest --mura MURA-v1.1 --out data/interim/ingest --data-root /mnt/datasets",
    ),
    "validate": ("fracture validate --manifest data/interim/ingest/manifest.parquet --out reports/validation",),
    "split": (
        "fracture split --manifest data/interim/ingest/manifest.parquet --out data/interim/split/splits.parquet",
        (
            "fracture split --manifest data/interim/ingest/manifest.parquet --out /tmp/fold2/splits.parquet"
            " --strategy kfold --fold 2"
        ),
    ),
    "preprocess": ("fracture preprocess --manifest data/interim/ingest/manifest.parquet --out data/processed/cache",),
    "train": (
        (
            "fracture train --manifest data/interim/ingest/manifest.parquet"
            " --splits data/interim/split/splits.parquet --cache data/processed/cache --out models/demo"
        ),
        (
            "fracture train -v --resume --manifest data/interim/ingest/manifest.parquet"
            " --splits data/interim/split/splits.parquet --cache data/processed/cache --out models/demo"
        ),
    ),
    "evaluate": (
        (
            "fracture evaluate --model models/demo --manifest data/interim/ingest/manifest.parquet"
            " --splits data/interim/split/splits.parquet --cache data/processed/cache --out reports/eval"
        ),
    ),
    "explain": (
        "fracture explain --model models/demo --eval reports/eval --cache data/processed/cache --out reports/explain",
    ),
    "report": (
        "fracture report",
        "fracture report --out /tmp/report.html --model models/demo --eval reports/eval",
        "fracture report --cv reports/cv/pool",
    ),
    "register": (
        "fracture register --model models/demo --eval reports/eval --report reports/report.html",
        "fracture register --model models/demo --eval reports/eval --out reports/registration.json --gate-failure-ok",
        "fracture register --model models/demo --eval reports/eval --cv reports/cv/pool",
    ),
    "promote": (
        "fracture promote --alias challenger --dry-run",
        "fracture promote --name fracture-swin --alias challenger",
        'fracture promote --allow-different-test-set --reason "new test site"',
    ),
    "rollback": ("fracture rollback --name fracture-swin",),
    "infravalidate": (
        "fracture infravalidate --model models/demo --eval reports/eval --out reports/infravalidation.json",
    ),
    "serve": (
        "fracture serve --model-uri models:/fracture-swin@champion --port 5001",
        "fracture serve --model-uri models:/fracture-swin/3 --port 5002",
    ),
    "deploy": (
        "fracture deploy --alias champion --namespace fracture --dry-run",
        "fracture deploy --version 3 --no-canary",
    ),
    "predict": (
        "fracture predict --img wrist.png --part radius --weight models/demo",
        "fracture predict --img study.dcm --weight models:/fracture-swin@champion --out results/",
        "fracture predict --img /data/new_images/ --weight models/demo --out results/batch",
    ),
    "registry_setup_roles": (
        "fracture registry setup-roles --pipeline-user kfp-pipeline --reviewer alice --reviewer bob",
    ),
    "registry_fetch": ("fracture registry fetch --model models:/fracture-swin@champion --out /tmp/champion",),
    "pipeline_compile": ("fracture pipeline compile --out training_pipeline.yaml",),
    "pipeline_run_local": ("fracture pipeline run-local --out data/kfp-local",),
    "pipeline_submit": ("fracture pipeline submit --host https://kfp.example.org --experiment fracture",),
    "review_serve": (
        "fracture review serve --model models/demo --eval reports/eval --users review-users.yaml",
        (
            "fracture review serve --model models:/fracture-swin@challenger --eval reports/eval --explain"
            " reports/explain --cache data/processed/cache --manifest data/interim/ingest/manifest.parquet"
            " --users review-users.yaml --port 8765"
        ),
    ),
    "review_summary": (
        "fracture review summary --model models:/fracture-swin@challenger --eval reports/eval",
        "fracture review summary --model models:/fracture-swin/3 --eval reports/eval --out reports/review.json",
    ),
    "review_add_user": ("fracture review add-user --users review-users.yaml --username alice --name 'Dr A. Example'",),
    "tune": (
        (
            "fracture tune --space configs/search_space.yaml --trials 8 --out models/tune"
            " --manifest data/interim/ingest/manifest.parquet --splits data/interim/split/splits.parquet"
            " --cache data/processed/cache"
        ),
        (
            "fracture tune --resume --space configs/search_space.yaml --trials 8 --out models/tune"
            " --manifest data/interim/ingest/manifest.parquet --splits data/interim/split/splits.parquet"
            " --cache data/processed/cache"
        ),
    ),
    "cv_split": ("fracture cv-split --manifest data/interim/ingest/manifest.parquet --out reports/cv/folds",),
    "pool": (
        "fracture pool --eval-dirs reports/cv/eval/fold-0 --eval-dirs reports/cv/eval/fold-1 --out reports/cv/pool",
    ),
    "relock": (
        'fracture relock --model models/demo --reason "protocol v2: specificity co-primary" --no-seen-test',
        'fracture relock --model models/demo --reason "reader study asked for 0.8" --seen-test --params params.yaml',
    ),
}


def examples(command: str) -> str:
    """The epilog of `fracture <command> --help`: its examples, one per paragraph (rich keeps them apart)."""
    return "[b]Examples[/b]\n\n" + "\n\n".join(f"  $ {line}" for line in EXAMPLES[command])
