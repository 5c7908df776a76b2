"""Hyperparameter search on Ray Tune: `fracture tune` (README, "Hyperparameter search").

`space` (the search-space file, no Ray), `trial` (one trial: the training loop with a per-epoch report), `runs`
(MLflow parent and child runs, from the driver), `run` (`run_tune`: Ray, ASHA, resume, the best params file),
`command` (the CLI options). Importing the package does not import Ray; `fracture tune` does.
"""
