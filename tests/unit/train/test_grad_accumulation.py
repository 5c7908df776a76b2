"""`train.effective_batch_size`: the same optimizer step on 1 process with accumulation as on 2 DDP processes.

The two runs are real processes (torch.multiprocessing, gloo on loopback) going through `build_session` and
`train_one_epoch` on a tiny cache: 64 train images at 32 per step, so one epoch is two optimizer steps. 1 process x
batch 16 x accumulation 2 and 2 processes x batch 16 x accumulation 1 must take as many steps, see the same first
gradient (recorded by an optimizer pre-step hook) and reach the same weights. Augmentation stays on (its seeds are
per sample); dropout and stochastic depth are off, as their masks come from each process's own RNG.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from fracture.base.errors import ConfigError
from fracture.config import parse_params
from fracture.train.optim import grad_accumulation
from tests.unit.train.test_train import TINY, write_tiny_dataset


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _first_step(rank: int, world_size: int, port: int, params_dict: dict, data: dict, out: Path) -> None:
    """One rank: join the group, train one epoch, rank 0 saves each step's gradient and the weights."""
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    import torch.distributed as dist

    from fracture.train.epoch import train_one_epoch
    from fracture.train.loader import load_training_data
    from fracture.train.loop import build_session
    from fracture.train.runtime import setup_runtime

    params = parse_params(params_dict, "test-params")
    rt = setup_runtime(params.train)
    images, rows = load_training_data(params, data["manifest"], data["splits"], data["cache"])
    s = build_session(params, rt, images, rows, out)
    before = {k: v.clone() for k, v in s.model.state_dict().items()}
    grads: list[dict[str, torch.Tensor]] = []
    named = [(n, p) for n, p in s.model.named_parameters() if p.requires_grad]
    stepped: list[dict[str, torch.Tensor]] = []
    s.opt.optimizer.register_step_pre_hook(lambda *_: grads.append({n: p.grad.clone() for n, p in named}))
    s.opt.optimizer.register_step_post_hook(lambda *_: stepped.append({n: p.detach().clone() for n, p in named}))
    s.train_dl.sampler.set_epoch(0)
    train_one_epoch(s.net, s.train_dl, s.opt, rt, params.train, s.train_dl.dataset.prep)
    if rt.is_main:
        torch.save({"before": before, "stepped": stepped, "grads": grads}, out / "step.pt")
    if rt.distributed:
        dist.destroy_process_group()


def _run(world_size: int, params_dict: dict, data: dict, out: Path) -> dict:
    out.mkdir()
    mp.spawn(_first_step, args=(world_size, _free_port(), params_dict, data, out), nprocs=world_size, join=True)
    return torch.load(out / "step.pt", weights_only=True)


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory, demo_params_dict) -> tuple[dict, dict]:
    from tests.conftest import _merge

    root = tmp_path_factory.mktemp("accum")
    data = write_tiny_dataset(root / "data", n={"train": 64, "val": 8, "test": 4})
    data = {k: data[k] for k in ("manifest", "splits", "cache")}
    train = {
        "epochs": 1,
        "batch_size": 16,
        "effective_batch_size": 32,
        "grad_clip": 0.0,
        "warmup_epochs": 0.0,
    }
    overrides = {
        **TINY,
        "train": {**TINY["train"], **train, "augment": {"enabled": True}},
        "model": {"dropout": 0.0, "backbone_kwargs": {"drop_path_rate": 0.0}},
    }
    params_dict = _merge(demo_params_dict, overrides)
    return _run(1, params_dict, data, root / "one"), _run(2, params_dict, data, root / "two")


def test_one_process_with_accumulation_takes_the_step_of_two_processes(one_and_two):
    one, two = one_and_two
    assert len(one["grads"]) == len(two["grads"]) == 2, "64 images at 32 per step are two steps"
    g1, g2 = one["grads"][0], two["grads"][0]
    for name in g1:
        torch.testing.assert_close(
            g2[name], g1[name], rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"gradient of {n}: {m}"
        )
    # AdamW's first update is about lr x sign(gradient): an element whose gradient is ~1e-9 (near Adam's eps) moves
    # a visible fraction of lr on float noise, so the update is compared as a whole, the gradient element by element.
    for name, w in one["stepped"][0].items():
        du1, du2 = w - one["before"][name], two["stepped"][0][name] - two["before"][name]
        assert (du2 - du1).norm() <= 1e-3 * du1.norm(), f"update of {name} differs"


def test_the_step_moved_the_weights(one_and_two):
    one, _ = one_and_two
    after = one["stepped"][0]
    moved = [k for k, w in after.items() if not torch.equal(w, one["before"][k])]
    assert len(moved) == len(after), f"parameters the first step left unchanged: {sorted(set(after) - set(moved))}"


@pytest.mark.parametrize(
    ("batch", "effective", "world", "expected"), [(16, 32, 1, 2), (16, 32, 2, 1), (16, 64, 4, 1), (8, 64, 2, 4)]
)
def test_accumulation_fills_the_effective_batch(make_params, batch, effective, world, expected):
    params = make_params({"train": {"batch_size": batch, "effective_batch_size": effective}})
    assert grad_accumulation(params.train, world) == expected


def test_an_effective_batch_that_does_not_split_over_the_processes_is_refused(make_params):
    params = make_params({"train": {"batch_size": 16, "effective_batch_size": 32}})
    with pytest.raises(ConfigError, match=r"train\.effective_batch_size: 32 .* 4 process\(es\) x train\.batch_size 16"):
        grad_accumulation(params.train, 4)


def test_an_effective_batch_that_is_not_a_multiple_of_the_batch_is_refused_at_load(make_params):
    with pytest.raises(ConfigError, match=r"train\.effective_batch_size: 40 is not a multiple of train\.batch_size 16"):
        make_params({"train": {"batch_size": 16, "effective_batch_size": 40}})
