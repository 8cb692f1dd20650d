"""Sweep files: a base config plus a ``grid`` of dotted keys -> lists of values."""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from clickseg.config import Config, ConfigError, from_dict, load_yaml, parse_overrides, set_dotted, validate

# Set per experiment by the sweep itself: neither a grid key nor a command-line override.
SWEEP_KEYS = ("name", "run_dir")


@dataclass
class Experiment:
    name: str
    overrides: dict[str, Any]
    config: Config


def _short(key: str) -> str:
    return key.split(".")[-1]


def experiment_name(point: dict[str, Any]) -> str:
    """A readable, path-safe name such as ``input_size-512_mode-single_pos``."""
    parts = [f"{_short(k)}-{v}" for k, v in point.items()]
    name = "_".join(parts) or "base"
    return "".join(c if c.isalnum() or c in "-_.=" else "-" for c in name)


def _overlaps(a: str, b: str) -> bool:
    """Whether setting dotted key ``a`` changes ``b`` or the other way round."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def expand(path: str | Path, overrides: list[str] = ()) -> tuple[dict[str, Any], list[Experiment]]:
    """Every grid point's validated config (all are checked before anything is created or submitted).

    Command-line ``overrides`` are applied to every point; one that sets a key the grid
    varies (or a section holding one) is refused, as are overrides and grid keys of
    ``name`` and ``run_dir``, which the sweep sets per experiment.
    """
    data = load_yaml(path)
    grid = data.pop("grid", None) or {}
    if not isinstance(grid, dict):
        raise ConfigError(f"'grid' in {path} must map dotted config keys to lists of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid key '{key}' in {path} must be a non-empty list")
        if key in SWEEP_KEYS:
            raise ConfigError(f"grid key '{key}' in {path}: the sweep sets it for every experiment")
    cli = parse_overrides(list(overrides))
    for key, value in cli.items():
        if key == "run_dir":
            raise ConfigError(f"override run_dir={value} is not applied: the sweep sets each experiment's "
                              f"run_dir (<root>/<sweep>/<experiment>); choose the root with --root")
        for gkey, gvalues in grid.items():
            if _overlaps(key, gkey):
                raise ConfigError(f"{key}={_yaml_value(value)} collides with the grid key {gkey} (values "
                                  f"{gvalues}); remove it from the command line or the grid")
    base = data
    for key, value in cli.items():
        set_dotted(base, key, value)
    name = base.get("name", "")
    if not isinstance(name, str) or "/" in name:
        raise ConfigError(f"config key 'name': {name!r} must be a sweep name without '/'")
    keys = list(grid)
    experiments = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, combo))
        name = experiment_name(point)
        point_data = copy.deepcopy(base)
        for key, value in point.items():
            set_dotted(point_data, key, copy.deepcopy(value))
        try:
            cfg = from_dict(point_data)
            cfg.name = name
            validate(cfg)
        except ConfigError as e:
            given = [f"{k}={_yaml_value(v)}" for k, v in cli.items()
                     if any(f"'{k}{end}" in str(e) for end in ("'", ".", "["))]
            hint = f" (set on the command line: {', '.join(given)})" if given else ""
            raise ConfigError(f"grid point {name}: {e}{hint}") from None
        experiments.append(Experiment(name, point, cfg))
    if len({e.name for e in experiments}) != len(experiments):
        raise ConfigError(f"grid in {path} has duplicate points")
    types = {e.config.executor.type for e in experiments}
    if len(types) > 1:
        raise ConfigError(f"config key 'executor.type' must be the same for every grid point (got {sorted(types)}): "
                          f"a sweep runs either locally or on Slurm")
    return base, experiments


def _yaml_value(v: Any) -> str:
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()
