"""The sweep path end to end through submitit's local executor and accelerate."""
import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import launch
from builtin_data import tiny_overrides
from clickseg.config import ConfigError, load_config
from clickseg.report import click_curves, collect
from jobs.grid import expand
from jobs.sweep import create_sweep, training_cost

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
    # The watch view, not on a terminal: lines at each change, with state and epoch; the last says done.
    watched = [line.split(" ", 1)[1] for line in out.stdout.splitlines() if re.match(r"\d\d:\d\d:\d\d ", line)]
    for name in ("mode-single_pos", "mode-single_any"):
        own = [line for line in watched if line.startswith(name + " ")]
        assert any(re.match(rf"{name} +RUNNING +ep [12]/2 +step \d+/\d+", line) for line in own), watched
        assert re.match(rf"{name} +COMPLETED +ep 2/2 +step (\d+)/\1 +eval COMPLETED +mIoU@1 davis 0\.\d{{4}} \(ep 2\)$",
                        own[-1]), own
    done_line = next(line for line in out.stdout.splitlines() if line.startswith(f"sweep {sweep_dir.name} done in "))
    assert done_line.endswith(": 2 COMPLETED"), done_line
    assert out.stdout.index(done_line) < out.stdout.index("| experiment | epoch | dataset |")
    status = subprocess.run([sys.executable, str(REPO / "launch.py"), "status", str(sweep_dir), "--watch"],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.splitlines()[-1] == f"sweep {sweep_dir.name} done: 2 COMPLETED", status.stdout
    assert status.stdout.count("eval COMPLETED") == 2 and len(status.stdout.splitlines()) == 4, status.stdout
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


# --------------------------------------------------------------------------- overrides and executor groups

def _demo_grid(tmp_path: Path, grid: dict, **sections) -> Path:
    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    data["grid"] = grid
    for section, values in sections.items():
        data[section].update(values)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _fake_slurm(tmp_path: Path, monkeypatch, fail_at: int = 0) -> Path:
    """``sbatch`` (numbered job ids from 101, each script kept; job ``fail_at`` is refused), an empty
    ``squeue`` and a ``scancel`` that records its arguments, first on PATH."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "sbatch-calls"
    bin_dir.mkdir()
    calls.mkdir()
    (bin_dir / "sbatch").write_text(
        "#!/bin/sh\n"
        f'n=$(( $(cat "{calls}/count" 2>/dev/null || echo 100) + 1 ))\n'
        f'echo $n > "{calls}/count"\n'
        f'if [ $n = {fail_at} ]; then echo "sbatch: error: invalid partition" >&2; exit 1; fi\n'
        f'cp "$1" "{calls}/$n.sh"\necho "Submitted batch job $n"\n')
    (bin_dir / "squeue").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "scancel").write_text(f'#!/bin/sh\necho "$@" >> "{calls}/scancel"\n')
    for tool in ("sbatch", "squeue", "scancel"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return calls


def test_override_of_a_grid_key_is_refused_naming_it_before_anything_is_created(tmp_path, monkeypatch, capsys):
    calls = _fake_slurm(tmp_path, monkeypatch)
    grid_file = _demo_grid(tmp_path, {"model.input_size": [40, 64], "clicks.mode": ["multi"]},
                           executor={"type": "slurm"})
    root = tmp_path / "sweeps"
    assert launch.main(["sweep", str(grid_file), "model.input_size=50", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert ("model.input_size=50 collides with the grid key model.input_size (values [40, 64]); "
            "remove it from the command line or the grid") in err, err
    assert not root.exists() and not list(calls.iterdir())  # no directory, no submission
    for override, key in (("model={arch: tiny}", "model.input_size"), ("clicks.mode=multi", "clicks.mode")):
        with pytest.raises(ConfigError, match=re.escape(f"collides with the grid key {key} (values")):
            create_sweep(str(grid_file), [override], str(root))
    assert not root.exists()


def test_command_line_overrides_are_applied_to_every_point(tmp_path):
    grid_file = _demo_grid(tmp_path, {"clicks.mode": ["multi", "single_pos"], "executor.cpus_per_task": [1, 2]})
    overrides = ["model.input_size=48", "train.lr=2e-3", "data.eval={a: /x, b: /y}", "executor.time_min=30"]
    sweep_dir, experiments = create_sweep(str(grid_file), overrides, str(tmp_path / "sweeps"))
    assert len(experiments) == 4
    index = json.loads((sweep_dir / "sweep.json").read_text())
    assert index["overrides"] == overrides
    for exp in index["experiments"]:
        cfg = yaml.safe_load((Path(exp["run_dir"]) / "config.yaml").read_text())
        assert cfg["model"]["input_size"] == 48 and cfg["train"]["lr"] == 2e-3
        assert cfg["data"]["eval"] == {"a": "/x", "b": "/y"} and cfg["executor"]["time_min"] == 30
        assert cfg["clicks"]["mode"] == exp["point"]["clicks.mode"]
        assert cfg["executor"]["cpus_per_task"] == exp["point"]["executor.cpus_per_task"]
        assert cfg["model"]["arch"] == "nano_p8" and cfg["name"] == exp["name"]


@pytest.mark.parametrize("overrides,message", [
    (["model.input_size=50"], "'model.input_size': 50 must be a positive multiple of nano_p8's patch size 8 "
                              "(set on the command line: model.input_size=50)"),
    (["train.lr=[0.1"], "override 'train.lr=[0.1': the value of 'train.lr' is not valid YAML"),
    (["train.epochs=2", "train.epochs=3"], "override key 'train.epochs' is given more than once"),
    (["run_dir=/tmp/x"], "override run_dir=/tmp/x is not applied"),
    (["train.lrr=0.1"], "unknown config key 'train.lrr'"),
    (["train.lr"], "override 'train.lr' is not of the form key=value"),
])
def test_invalid_override_is_refused_before_anything_is_created(tmp_path, overrides, message):
    grid_file = _demo_grid(tmp_path, {"clicks.mode": ["multi", "single_pos"]})
    with pytest.raises(ConfigError, match=re.escape(message)):
        create_sweep(str(grid_file), overrides, str(tmp_path / "sweeps"))
    assert not (tmp_path / "sweeps").exists()


def test_each_distinct_executor_setting_of_the_grid_is_one_job_array(tmp_path, monkeypatch, capsys):
    """Points 0, 2 (time 10, 1 CPU) and 1, 3 (time 20, 2 CPUs): two training and two evaluation
    arrays, each with its own sbatch options; sweep.json and status map every experiment to its jobs."""
    calls = _fake_slurm(tmp_path, monkeypatch)
    grid = {"clicks.mode": ["multi", "single_pos"], "executor.time_min": [10, 20]}
    grid_file = _demo_grid(tmp_path, grid, executor={"type": "slurm", "partition": "debug", "array_parallelism": 1})
    root = tmp_path / "sweeps"
    assert launch.main(["sweep", str(grid_file), "executor.cpus_per_task=1", "--root", str(root)]) == 0
    (sweep_dir,) = root.iterdir()
    index = json.loads((sweep_dir / "sweep.json").read_text())
    names = [e["name"] for e in index["experiments"]]
    assert names == ["mode-multi_time_min-10", "mode-multi_time_min-20",
                     "mode-single_pos_time_min-10", "mode-single_pos_time_min-20"]
    scripts = {int(p.stem): p.read_text() for p in calls.glob("*.sh")}
    assert sorted(scripts) == [101, 102, 103, 104]  # train 10 min, eval 10 min, train 20 min, eval 20 min
    for job, minutes in ((101, 10), (102, 10), (103, 20), (104, 20)):
        assert f"#SBATCH --time={minutes}\n" in scripts[job] and "#SBATCH --array=0-1%1\n" in scripts[job]
        assert "#SBATCH --partition=debug\n" in scripts[job] and "#SBATCH --cpus-per-task=1\n" in scripts[job]
    assert "train-" in scripts[101] and "eval-" in scripts[102]
    assert index["executor"] == "slurm"
    ids = [("101_0", "102_0"), ("103_0", "104_0"), ("101_1", "102_1"), ("103_1", "104_1")]
    assert index["jobs"] == {n: {"train": t, "eval": e} for n, (t, e) in zip(names, ids)}
    assert [(a["train"], a["eval"], a["experiments"], a["executor"]["time_min"]) for a in index["arrays"]] == [
        ("101", "102", names[0::2], 10), ("103", "104", names[1::2], 20)]
    out = capsys.readouterr().out
    assert "array 101 (eval 102): 2 training(s), partition debug, 10 min" in out, out
    from jobs.status import cancel_sweep, sweep_rows

    rows = sweep_rows(sweep_dir)
    assert [(r["experiment"], r["train_job"], r["eval_job"]) for r in rows] == [
        (n, index["jobs"][n]["train"], index["jobs"][n]["eval"]) for n in names]
    assert [(r["state"], r["eval_state"]) for r in rows] == [("ENDED?", "ENDED?")] * 4  # the fake squeue lists none
    assert sorted(cancel_sweep(sweep_dir)) == sorted(j for n in names for j in index["jobs"][n].values())
    assert (calls / "scancel").read_text().split() == ["101", "102", "103", "104"]


def test_a_failed_submission_cancels_the_arrays_already_submitted(tmp_path, monkeypatch):
    import jobs.sweep as sweep

    calls = _fake_slurm(tmp_path, monkeypatch, fail_at=103)
    grid_file = _demo_grid(tmp_path, {"executor.partition": ["a", "b"]}, executor={"type": "slurm"})
    sweep_dir, experiments = create_sweep(str(grid_file), [], str(tmp_path / "sweeps"))
    with pytest.raises(Exception, match="invalid partition"):
        sweep.submit_slurm(sweep_dir, experiments)
    assert (calls / "scancel").read_text().split() == ["101", "102"]


def test_executor_type_must_not_vary_across_the_grid(tmp_path):
    grid_file = _demo_grid(tmp_path, {"executor.type": ["local", "slurm"]})
    with pytest.raises(ConfigError, match="'executor.type' must be the same for every grid point"):
        create_sweep(str(grid_file), [], str(tmp_path / "sweeps"))
    assert not (tmp_path / "sweeps").exists()


class _DoneJob:
    def __init__(self, job_id: str):
        self.job_id, self.paths = job_id, None

    def done(self) -> bool:
        return True

    def exception(self):
        return None


def test_local_sweep_runs_each_point_with_its_own_executor_settings(tmp_path, monkeypatch):
    """One local executor per distinct setting (its time limit), and a training starts only while
    fewer than its own executor.array_parallelism trainings run."""
    import jobs.sweep as sweep

    built, submitted = [], []

    class Executor:
        def __init__(self, cfg):
            self.cfg = cfg

        def submit(self, job):
            submitted.append((type(job).__name__, Path(job.run_dir).name, self.cfg.time_min))
            return _DoneJob(str(len(submitted)))

    def make_executor(cfg, folder, **kwargs):
        built.append(cfg)
        return Executor(cfg)

    monkeypatch.setattr(sweep, "make_executor", make_executor)
    grid_file = _demo_grid(tmp_path, {"executor.time_min": [5, 7]})
    sweep_dir, experiments = create_sweep(str(grid_file), ["executor.array_parallelism=1"], str(tmp_path / "sweeps"))
    assert sweep.run_local(sweep_dir, experiments, poll_s=0, out=io.StringIO()) == []
    assert [c.time_min for c in built] == [5, 7]
    assert sorted((name, minutes) for _, name, minutes in submitted) == [
        ("time_min-5", 5), ("time_min-5", 5), ("time_min-7", 7), ("time_min-7", 7)]
    index = json.loads((sweep_dir / "sweep.json").read_text())
    assert index["executor"] == "local" and index["arrays"] == [] and index["launcher"]["pid"] == os.getpid()
    assert sorted(index["jobs"]) == ["time_min-5", "time_min-7"]
    assert sorted(index["jobs"]["time_min-5"]) == ["eval", "train"]
