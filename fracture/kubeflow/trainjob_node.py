"""What each TrainJob node runs: fetch the staged inputs, `fracture train` under torchrun, hand the model back.

`python -m fracture.kubeflow.trainjob_node <root>`. torchrun takes the node count, processes per node, node rank
and rendezvous address from the `PET_*` variables the Kubeflow Trainer torch runtime sets. On a shared volume the
nodes train in place (`<root>/model`, checkpoints there too, so a restarted job resumes: `--resume` is always
passed); with S3 each node copies the inputs to local disk and node 0 uploads the model dir after success.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from fracture.kubeflow.trainjob_stage import INPUTS, MODEL, get_dir, input_paths, is_local, put_dir

log = logging.getLogger(__name__)


def train_command(inputs_dir: Path, model_dir: Path, python: str = sys.executable) -> list[str]:
    """Torchrun over `fracture train` on the staged inputs (torchrun reads PET_NNODES, PET_NODE_RANK, ...)."""
    paths = input_paths(inputs_dir)
    return [
        python, "-m", "torch.distributed.run", "-m", "fracture.cli", "train",
        "--manifest", str(paths["manifest"]), "--splits", str(paths["splits"]), "--cache", str(paths["cache"]),
        "--out", str(model_dir), "--params", str(paths["params"]), "--resume",
    ]  # fmt: skip


def run_node(root: str, env: Mapping[str, str], workdir: Path) -> int:
    """Train this node's share; returns torchrun's exit code (node 0 uploads the model dir when it is 0)."""
    local = is_local(root)
    if local:
        inputs, model = Path(root) / INPUTS, Path(root) / MODEL
    else:
        inputs, model = workdir / INPUTS, workdir / MODEL
        get_dir(root, INPUTS, inputs)
    code = subprocess.run(train_command(inputs, model), check=False).returncode
    if code == 0 and not local and env.get("PET_NODE_RANK", "0") == "0":
        put_dir(model, root, MODEL)
        log.info("uploaded the model dir to %s/%s", root, MODEL)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m fracture.kubeflow.trainjob_node <staging root>`."""
    from fracture.base.logs import setup_logging

    setup_logging(verbose=False)
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        log.error("usage: python -m fracture.kubeflow.trainjob_node <staging root>")
        return 2
    with tempfile.TemporaryDirectory(prefix="fracture-node-") as tmp:
        return run_node(args[0], os.environ, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
