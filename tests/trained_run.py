"""Small evaluated runs of the demo's model (configs/demo.yaml: nano_p8 at 64 px) on the small
built-in data, shared by the demo-app and gallery tests (made once per test session).

The checkpoints hold seeded initial weights, not trained ones: what these tests check (the page
shows exactly what ``Predictor`` computes, the gallery shows the stored results) does not depend
on the weights, and training on 2 CPU cores would cost minutes. The seeds are ones whose
probabilities straddle the 0.49 threshold, so masks are neither empty nor the whole image.
"""
from __future__ import annotations

from pathlib import Path

import torch

from builtin_data import tiny_overrides
from clickseg import rundir
from clickseg.checkpoint import atomic_save
from clickseg.config import load_config, save_config, to_dict
from clickseg.model import build_segnext

REPO = Path(__file__).resolve().parents[1]


def write_checkpoint(cfg, path: Path, seed: int) -> None:
    """A clickseg checkpoint of ``cfg``'s model with seeded initial weights."""
    torch.manual_seed(seed)
    model = build_segnext(cfg.model.arch, cfg.model.input_size)
    atomic_save({"format": "clickseg", "model": model.state_dict(), "config": to_dict(cfg), "epoch": 0}, path)


def make_run(dirs: dict[str, Path], run_dir: Path, seeds: list[int], **extra) -> Path:
    """A run directory (config.yaml, one checkpoint per seed as epochs 1, 2, ...) evaluated with
    the center protocol (3 clicks)."""
    from clickseg.eval.evaluate import evaluate_run

    overrides = {"model.arch": "nano_p8", "model.input_size": 64, **extra}
    cfg = load_config(REPO / "configs" / "demo.yaml", tiny_overrides(dirs, run_dir, **overrides))
    run_dir.mkdir(parents=True)
    save_config(cfg, rundir.config_path(run_dir))
    for epoch, seed in enumerate(seeds, 1):
        rundir.checkpoint_path(run_dir, epoch).parent.mkdir(exist_ok=True)
        write_checkpoint(cfg, rundir.checkpoint_path(run_dir, epoch), seed)
    evaluate_run(run_dir)
    return run_dir


def demo_runs(dirs: dict[str, Path], root: Path) -> dict[str, Path]:
    """``run`` (epochs 1 and 2) and ``other`` (epoch 2 with other weights): a baseline pair whose
    instances gain and lose; ``checkpoint``: the last checkpoint of ``run``."""
    run = make_run(dirs, root / "demo-run", [5, 8])
    other = make_run(dirs, root / "demo-other", [3, 6])
    return {"run": run, "other": other, "checkpoint": rundir.checkpoint_path(run, 2)}
