"""The multi-GPU launch decision, without GPUs: how many processes, and when to re-run under torchrun."""

import sys

import pytest

from fracture.base.errors import ConfigError
from fracture.train.launch import plan_launch, processes_wanted

ARGV = ["train", "--manifest", "m.parquet", "--splits", "s.parquet", "--cache", "c", "--out", "models/x"]


@pytest.mark.parametrize(
    ("devices", "gpus", "expected"),
    [("auto", 0, 1), ("auto", 1, 1), ("auto", 4, 4), (1, 8, 1), (2, 8, 2), (1, 0, 1)],
)
def test_processes_wanted(devices, gpus, expected):
    assert processes_wanted(devices, gpus) == expected


def test_more_processes_than_gpus_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"train\.devices: 4 .* only 2 GPU"):
        processes_wanted(4, 2)


def test_several_gpus_relaunch_the_same_command_under_torchrun():
    cmd = plan_launch("auto", 4, {}, ARGV)
    assert cmd[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert cmd[5:] == ["-m", "fracture.cli", *ARGV]


@pytest.mark.parametrize(("devices", "gpus"), [("auto", 0), ("auto", 1), (1, 4)])
def test_one_process_trains_in_place(devices, gpus):
    assert plan_launch(devices, gpus, {}, ARGV) is None


def test_a_torchrun_rank_never_relaunches():
    env = {"WORLD_SIZE": "4", "RANK": "1", "LOCAL_RANK": "1"}
    assert plan_launch("auto", 4, env, ARGV) is None


def test_devices_key_is_validated(make_params):
    with pytest.raises(ConfigError, match=r"train\.devices"):
        make_params({"train": {"devices": 0}})
    with pytest.raises(ConfigError, match=r"train\.devices"):
        make_params({"train": {"devices": "all"}})
    assert make_params({"train": {"devices": 2}}).train.devices == 2
