"""The sweep path end to end through submitit's local executor and accelerate."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import yaml

from builtin_data import tiny_overrides
from clickseg.config import load_config
from clickseg.report import click_curves, collect
from jobs.grid import expand
from jobs.sweep import training_cost

REPO = Path(__file__).resolve().parents[1]


def test_local_sweep_trains_evaluates_every_epoch_and_reports(builtin_dirs, tmp_path):
    grid = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    grid["grid"] = {"clicks.mode": ["single_pos", "single_any"]}
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(grid))
    overrides = [o for o in tiny_overrides(builtin_dirs, tmp_path / "unused") if not o.startswith(("run_dir", "name"))]
    cmd = [sys.executable, str(REPO / "launch.py"), "sweep", str(grid_file), *overrides, "--root", str(tmp_path / "sweeps")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    index = json.loads((sweep_dir / "sweep.json").read_text())
    assert [e["name"] for e in index["experiments"]] == ["mode-single_pos", "mode-single_any"]
    assert set(index["code"]) == {"commit", "dirty"}
    with open(sweep_dir / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["experiment"], r["epoch"], r["dataset"]) for r in rows) == sorted(
        (e, str(ep), "davis") for e in ("mode-single_pos", "mode-single_any") for ep in (1, 2))
    assert all(0.0 <= float(r["mIoU@1"]) <= 1.0 for r in rows)
    assert (sweep_dir / "miou.png").stat().st_size > 1000
    assert (sweep_dir / "iou_vs_clicks.png").stat().st_size > 1000
    curves = click_curves(collect([e["run_dir"] for e in index["experiments"]]))
    final = {(r["experiment"], r["dataset"]): r for r in rows if r["epoch"] == "2"}
    assert sorted(curves["davis"]) == sorted(f"{e} (center, epoch 2)" for e in ("mode-single_pos", "mode-single_any"))
    for label, (ks, values) in curves["davis"].items():  # the last epoch's mIoU@k for k = 1..n_clicks
        assert ks == [1, 2, 3] and abs(values[0] - float(final[(label.split(" ")[0], "davis")]["mIoU@1"])) < 1e-4
    assert "| experiment | epoch | dataset |" in out.stdout
    for e in index["experiments"]:
        cfg = yaml.safe_load((Path(e["run_dir"]) / "config.yaml").read_text())
        assert cfg["name"] == e["name"] and cfg["clicks"]["mode"] == e["point"]["clicks.mode"]


def test_sweep_rejects_a_bad_grid_before_creating_anything(tmp_path):
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text("model: {arch: tiny}\ngrid:\n  clicks.mode: [multi, triple]\n")
    cmd = [sys.executable, str(REPO / "launch.py"), "sweep", str(grid_file), "--root", str(tmp_path / "sweeps")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 2
    assert "'clicks.mode'" in out.stderr and "triple" in out.stderr
    assert not (tmp_path / "sweeps").exists()


def test_local_sweep_starts_the_costliest_trainings_first(tmp_path):
    """Longest-first order: inputs by pixels, then multi > single_any > single_pos (gradient-free
    passes), and more samples cost more."""
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text("model: {arch: tiny_p8}\n"
                         "grid:\n  model.input_size: [40, 64]\n  clicks.mode: [single_pos, multi, single_any]\n")
    _, experiments = expand(grid_file)
    order = [e.name for e in sorted(experiments, key=lambda e: -training_cost(e.config))]
    assert order == [f"input_size-{s}_mode-{m}" for s in (64, 40) for m in ("multi", "single_any", "single_pos")]
    base = load_config(None, ["clicks.mode=single_pos"])
    more = load_config(None, ["clicks.mode=single_pos", "train.samples_per_epoch=30001"])
    assert training_cost(more) > training_cost(base)
