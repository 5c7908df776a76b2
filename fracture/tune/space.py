"""The search-space file (`configs/search_space.yaml`): what to search over, how ASHA prunes, what a trial needs.

Keys of `space` are dotted params.yaml keys of the training recipe (`train.lr`, `model.dropout`, ...), each with
one sampling rule. A sampled configuration is applied to the base params and validated like any params file, so
the best one is written out as a complete params file. Nothing here imports Ray: the rules are plain data until
`ray_param_space` turns them into Ray Tune's sampling objects.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fracture.base.errors import ConfigError
from fracture.config import Params, parse_params

# Sections a trial may change: the recipe. Data, split and evaluation settings stay those of the base params,
# so every trial trains on the same rows and is selected on the same val split.
TUNABLE_SECTIONS = ("train", "model")
# ASHA's budget is train.epochs; the loop's own settings are not part of the recipe.
FIXED_KEYS = ("train.epochs", "train.experiment", "train.devices", "train.num_workers")
RULES = ("uniform", "loguniform", "randint", "choice", "grid")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SchedulerSpec(_Strict):
    """ASHA (asynchronous successive halving) on val AUROC after each epoch; its max_t is train.epochs."""

    grace_period: int = Field(ge=1, description="Epochs every trial trains before ASHA may stop it.")
    reduction_factor: float = Field(gt=1, description="Keep the best 1/reduction_factor of trials at each rung.")


class TrialResources(_Strict):
    """What one trial reserves on the Ray cluster."""

    cpu: float = Field(gt=0)
    gpu: Literal["auto"] | float = Field(description="`auto`: 1 when the Ray cluster has GPUs, else 0.")


class SearchSpace(_Strict):
    """The whole search-space file."""

    scheduler: SchedulerSpec
    max_concurrent_trials: int = Field(ge=0, description="Trials running at once; 0: as many as resources allow.")
    resources_per_trial: TrialResources
    space: dict[str, dict[str, list[Any]]] = Field(min_length=1)

    @model_validator(mode="after")
    def _rules_are_known(self) -> SearchSpace:
        for key, rule in self.space.items():
            if len(rule) != 1 or next(iter(rule)) not in RULES:
                raise ValueError(f"space.{key}: needs exactly one of {', '.join(RULES)}, got {sorted(rule)}")
            name, args = next(iter(rule.items()))
            if name in ("uniform", "loguniform", "randint") and len(args) != 2:
                raise ValueError(f"space.{key}: {name} takes [low, high], got {args}")
            if not args:
                raise ValueError(f"space.{key}: {name} needs at least one value")
        return self


def _leaf(data: dict, dotted: str) -> bool:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return not isinstance(node, dict)


def check_space(space: SearchSpace, base: Params, source: str) -> None:
    """Every searched key is a leaf of the recipe sections, and ASHA's grace period fits in train.epochs.

    Raises:
        ConfigError: naming the file and the key.
    """
    data = base.to_dict()
    for key in space.space:
        if key.split(".")[0] not in TUNABLE_SECTIONS or key in FIXED_KEYS:
            raise ConfigError(
                f"{source}: space.{key}: only the training recipe is searched ({', '.join(TUNABLE_SECTIONS)} "
                f"sections, not {', '.join(FIXED_KEYS)})"
            )
        if not _leaf(data, key):
            raise ConfigError(f"{source}: space.{key}: not a key of params.yaml")
    if space.scheduler.grace_period > base.train.epochs:
        raise ConfigError(
            f"{source}: scheduler.grace_period {space.scheduler.grace_period} exceeds train.epochs {base.train.epochs}"
        )


def load_space(path: str | Path, base: Params) -> SearchSpace:
    """Read and check a search-space file against the base params.

    Raises:
        ConfigError: missing or unreadable file, unknown or badly typed keys.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the search space ({err})") from None
    try:
        space = SearchSpace.model_validate(data)
    except ValidationError as err:
        lines = [f"{path}: {'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in err.errors()]
        raise ConfigError("\n".join(lines)) from None
    check_space(space, base, str(path))
    return space


def ray_param_space(space: SearchSpace) -> dict[str, Any]:
    """The rules as Ray Tune sampling objects, keyed by the dotted params key (Ray's config is flat here)."""
    from ray import tune

    makers = {
        "uniform": lambda a: tune.uniform(*a),
        "loguniform": lambda a: tune.loguniform(*a),
        "randint": lambda a: tune.randint(a[0], a[1] + 1),  # inclusive high, like the file says
        "choice": tune.choice,
        "grid": tune.grid_search,
    }
    return {key: makers[name](args) for key, rule in space.space.items() for name, args in rule.items()}


def apply_config(base: dict, config: dict[str, Any]) -> dict:
    """A copy of the base params mapping with each dotted key of `config` set (lists stay lists)."""
    out = copy.deepcopy(base)
    for key, value in config.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node[part]
        node[leaf] = value
    return out


def trial_params(base: dict, config: dict[str, Any], source: str) -> Params:
    """The validated params of one trial (ConfigError names the trial and the offending key)."""
    return parse_params(apply_config(base, config), source)


def dvc_overrides(config: dict[str, Any]) -> list[str]:
    """`dvc exp run -S` arguments that set `config` on top of a params.yaml (`-S train.lr=0.001`)."""
    return [f"{key}={json.dumps(value)}" for key, value in sorted(config.items())]
