"""Sweep files: a base config plus a ``grid`` of dotted keys -> lists of values."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clickseg.config import Config, ConfigError, apply_overrides, from_dict, load_yaml, validate


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


def expand(path: str | Path, overrides: list[str] = ()) -> tuple[dict[str, Any], list[Experiment]]:
    """Every grid point's validated config (all are checked before anything is created or submitted)."""
    data = load_yaml(path)
    grid = data.pop("grid", None) or {}
    if not isinstance(grid, dict):
        raise ConfigError(f"'grid' in {path} must map dotted config keys to lists of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid key '{key}' in {path} must be a non-empty list")
    base = apply_overrides(data, list(overrides))
    keys = list(grid)
    experiments = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, combo))
        name = experiment_name(point)
        point_data = apply_overrides(_deepcopy(base), [f"{k}={_yaml_value(v)}" for k, v in point.items()])
        try:
            cfg = from_dict(point_data)
            cfg.name = name
            validate(cfg)
        except ConfigError as e:
            raise ConfigError(f"grid point {name}: {e}") from None
        experiments.append(Experiment(name, point, cfg))
    if len({e.name for e in experiments}) != len(experiments):
        raise ConfigError(f"grid in {path} has duplicate points")
    return base, experiments


def _yaml_value(v: Any) -> str:
    import yaml
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def _deepcopy(d: Any) -> Any:
    import copy
    return copy.deepcopy(d)
