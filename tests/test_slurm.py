"""Orchestration against a real single-node Slurm (``jobs/cluster/local_slurm.sh``).

The cluster is installed and started by the fixture (root and apt-get needed;
the tests skip, saying why, only where that is impossible). Every wait is
bounded: without accounting a submitit result can block forever.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from builtin_data import tiny_overrides
from clickseg import checkpoint, rundir
from shards.cli import main as shards_main
from jobs.status import sweep_rows

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "jobs" / "cluster" / "local_slurm.sh"
SLURM = ["executor.type=slurm", "executor.partition=debug", "executor.time_min=20", "executor.cpus_per_task=1",
         "executor.gpus_per_node=0", "executor.mem_gb=0", "executor.array_parallelism=2"]


@pytest.fixture(scope="module")
def slurm():
    if os.geteuid() != 0:
        pytest.skip("the local Slurm cluster needs root to install and start its daemons")
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        pytest.skip("Slurm is not installed and apt-get is not available to install it")
    out = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        pytest.skip(f"the local Slurm cluster could not be started: {out.stderr[-1500:]}")
    yield


def _grid(tmp_path: Path, builtin_dirs, grid: dict, **extra) -> Path:
    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    data["grid"] = grid
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _sweep(tmp_path, builtin_dirs, grid, *extra) -> tuple[Path, float, str]:
    grid_file = _grid(tmp_path, builtin_dirs, grid)
    set_here = {o.split("=")[0] for o in extra}  # the grid and the test's own keys replace the defaults
    overrides = [o for o in tiny_overrides(builtin_dirs, tmp_path / "unused")
                 if not o.startswith(("run_dir", "name")) and o.split("=")[0] not in {*grid, *set_here}]
    slurm = [o for o in SLURM if o.split("=")[0] not in {*grid, *set_here}]
    cmd = [sys.executable, str(REPO / "launch.py"), "sweep", str(grid_file), *overrides, *slurm, *extra,
           "--root", str(tmp_path / "sweeps")]
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    elapsed = time.time() - t0
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    return sweep_dir, elapsed, out.stdout


def _wait(predicate, timeout_s: float, what: str, poll_s: float = 2.0, env: dict | None = None):
    """``predicate()``'s first true value within ``timeout_s``; else an error with the queue
    (of the cluster that ``env``'s SLURM_CONF names, if given)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    queue = subprocess.run(["squeue"], capture_output=True, text=True, env={**os.environ, **(env or {})}).stdout
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; squeue:\n{queue}")


def _queue_ids() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=60)
    return set(out.stdout.split())


def _all_ended(sweep_dir: Path):
    rows = sweep_rows(sweep_dir)
    ids = {str(r["train_job"]) for r in rows} | {str(r["eval_job"]) for r in rows}
    return rows if not ids & _queue_ids() else None


def test_grid_is_one_job_array_that_trains_and_evaluates_every_epoch(slurm, builtin_dirs, tmp_path):
    sweep_dir, _, stdout = _sweep(tmp_path, builtin_dirs, {"clicks.mode": ["single_pos", "single_any"]})
    index = json.loads((sweep_dir / "sweep.json").read_text())
    train_ids = [j["train"] for j in index["jobs"].values()]
    assert len(train_ids) == 2 and len({j.split("_")[0] for j in train_ids}) == 1, train_ids  # ONE array
    assert sorted(j.split("_")[1] for j in train_ids) == ["0", "1"]
    assert "launch.py status" in stdout
    assert set(train_ids) <= _queue_ids(), train_ids  # returned at once: the training is still in the queue
    rows = _wait(lambda: _all_ended(sweep_dir), 600, "the sweep's jobs to end")
    assert [(r["state"], r["eval_state"]) for r in rows] == [("COMPLETED", "COMPLETED")] * 2, rows
    for exp in index["experiments"]:
        results = [json.loads(l) for l in (Path(exp["run_dir"]) / "results.jsonl").read_text().splitlines()]
        assert sorted(r["epoch"] for r in results if r["protocol"] == "center") == [1, 2]
    status = subprocess.run([sys.executable, str(REPO / "launch.py"), "status", str(sweep_dir)],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert status.returncode == 0 and status.stdout.count("COMPLETED") == 4, status.stdout  # training and eval
    watch = subprocess.run([sys.executable, str(REPO / "launch.py"), "status", str(sweep_dir), "--watch"],
                           capture_output=True, text=True, timeout=120, cwd=REPO)
    assert watch.returncode == 0 and watch.stdout.count("eval COMPLETED") == 2, watch.stdout
    assert watch.stdout.splitlines()[-1] == f"sweep {sweep_dir.name} done: 2 COMPLETED", watch.stdout


def test_preempted_two_process_training_is_requeued_and_ends_as_if_uninterrupted(slurm, builtin_dirs, tmp_path):
    extra = ["train.num_processes=2", "executor.cpus_per_task=2", "train.epochs=2", "train.samples_per_epoch=96",
             "clicks.mode=multi"]
    sweep_dir, _, _ = _sweep(tmp_path, builtin_dirs, {"model.input_size": [224]}, *extra)
    index = json.loads((sweep_dir / "sweep.json").read_text())
    ((job_id, eval_id),) = [(j["train"], j["eval"]) for j in index["jobs"].values()]
    run_dir = Path(index["experiments"][0]["run_dir"])
    subprocess.run(["scancel", eval_id], check=True, timeout=60)  # training only, here
    _wait(lambda: rundir.list_checkpoints(run_dir), 300, "the first epoch checkpoint", poll_s=0.2)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=60)  # what preemption sends
    _wait(lambda: rundir.interrupt_path(run_dir).exists() or not _queue_ids() & {job_id}, 120,
          "the interrupt checkpoint", poll_s=0.2)
    state = _wait(lambda: (json.loads((run_dir / "train_state.json").read_text())
                           if job_id not in _queue_ids() else None), 600, "the requeued job to end")
    assert state["status"] == "done", state
    assert len(set(state["rank_param_checksums"])) == 1, state  # 2 ranks, identical parameters
    log = (run_dir / "train_node0.log").read_text()
    assert log.count("--num_processes 2") == 2, "the job ran once, was requeued, and ran again"
    assert "stop requested: interrupt checkpoint" in log and "from interrupt.pt" in log, log[-3000:]
    submitit_log = (sweep_dir / "submitit" / job_id / f"{job_id}_0_log.err").read_text()
    assert "DUE TO JOB REQUEUE" in submitit_log, submitit_log

    _assert_same_as_uninterrupted(run_dir, tmp_path / "reference")


def test_training_past_its_time_limit_is_requeued_and_resumes_at_the_step_it_stopped(slurm, builtin_dirs, tmp_path):
    """A 2-minute time limit with the warning 60 s before it. Slurm checks time limits on a ~30 s
    cycle, so its USR2 arrives 30 to 60 s after every (re)start; a training of 2000 steps (8000
    samples: over 85 s at 90 samples/s on one fast core, 190 s at 42) is therefore stopped at least
    once; each run stops at a step, is requeued and resumes at that exact step, no epoch is lost,
    and the final weights equal those of the same training run once without interruption. Epochs
    are short because a mid-epoch resume replays the epoch's data up to the step."""
    extra = ["executor.max_requeues=20", "train.epochs=20", "train.samples_per_epoch=400", "train.batch_size=4",
             "model.arch=tiny_global", "clicks.mode=single_pos", "executor.time_min=2", "executor.signal_delay_s=60"]
    sweep_dir, _, _ = _sweep(tmp_path, builtin_dirs, {"model.input_size": [96]}, *extra)
    index = json.loads((sweep_dir / "sweep.json").read_text())
    ((job_id, eval_id),) = [(j["train"], j["eval"]) for j in index["jobs"].values()]
    run_dir = Path(index["experiments"][0]["run_dir"])
    subprocess.run(["scancel", eval_id], check=True, timeout=60)  # training only, here
    state = _wait(lambda: (json.loads((run_dir / "train_state.json").read_text())
                           if job_id not in _queue_ids() and (run_dir / "train_state.json").exists() else None),
                  600, "the time-limited job to end")
    assert (state["status"], state["epoch"], state["step"]) == ("done", 20, 2000), state
    log = (run_dir / "train_node0.log").read_text()
    stopped = re.findall(r"stop requested: interrupt checkpoint at epoch (\d+), batch (\d+), step (\d+)", log)
    resumed = re.findall(r"from interrupt\.pt: epoch (\d+), batch (\d+), step (\d+)", log)
    assert stopped and resumed == stopped, log[-3000:]  # every stop resumed at exactly that position
    assert all(int(step) == int(epoch) * 100 + int(batch) for epoch, batch, step in stopped)
    submitit_log = (sweep_dir / "submitit" / job_id / f"{job_id}_0_log.err").read_text()
    assert submitit_log.count("timed-out") >= len(stopped) and "DUE TO TIME LIMIT" not in submitit_log
    assert [e for e, _ in rundir.list_checkpoints(run_dir)] == list(range(1, 21))  # no epoch lost
    assert not rundir.interrupt_path(run_dir).exists()
    _assert_same_as_uninterrupted(run_dir, tmp_path / "reference")


def _assert_same_as_uninterrupted(run_dir: Path, ref_dir: Path) -> None:
    """The same training (accelerate launch of the run's config) once more, uninterrupted and
    outside Slurm, ends with bitwise the same weights."""
    from jobs.tasks import train_task

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["run_dir"] = str(ref_dir)
    ref_dir.mkdir()
    (ref_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    train_task(str(ref_dir))
    resumed = checkpoint.load(rundir.list_checkpoints(run_dir)[-1][1])
    reference = checkpoint.load(rundir.list_checkpoints(ref_dir)[-1][1])
    assert resumed["step"] == reference["step"]
    for key, value in reference["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0, msg=key)


def test_shard_conversion_runs_as_a_job_array_and_matches_a_local_conversion(slurm, builtin_dirs, tmp_path):
    source = builtin_dirs["cocolvis-train"].parent.parent / "source" / "cocolvis"
    conversion = ["cocolvis", "--root", str(source), "--samples-per-shard", "25"]
    cmd = [sys.executable, str(REPO / "launch.py"), "shard", *conversion, "--out", str(tmp_path / "array"),
           "--submit", *SLURM]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    jobs = json.loads((tmp_path / "array" / ".submitit" / "jobs.json").read_text())
    assert jobs["shards"] == 5 and f"as array {jobs['array']}" in out.stdout  # 120 images / 25
    _wait(lambda: (tmp_path / "array" / "manifest.json").exists() and not _queue_ids() & {jobs["manifest_job"]},
          300, "the manifest job")
    assert shards_main([*conversion, "--out", str(tmp_path / "local"), "--workers", "0"]) == 0
    array, local = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("array", "local"))
    assert [(s["name"], s["sha256"]) for s in array["shards"]] == [(s["name"], s["sha256"]) for s in local["shards"]]
    assert array["totals"] == local["totals"] and len(array["shards"]) == 5

    bad = subprocess.run([sys.executable, str(REPO / "launch.py"), "shard", *conversion, "--out", str(tmp_path / "x"),
                          "--submit", "train.lr=1"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert bad.returncode == 1 and "only executor.* overrides" in bad.stderr and not (tmp_path / "x").exists()


def test_failing_job_shows_as_failed_with_its_error(slurm, builtin_dirs, tmp_path):
    sweep_dir, _, _ = _sweep(tmp_path, builtin_dirs, {"model.input_size": [224]},
                             f"data.train={tmp_path / 'no-such-shards'}")
    rows = _wait(lambda: _all_ended(sweep_dir), 300, "the failing job to end")
    assert rows[0]["state"] == "FAILED", rows
    status = subprocess.run([sys.executable, str(REPO / "launch.py"), "status", str(sweep_dir)],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert status.returncode == 1 and "FAILED" in status.stdout
    assert "no-such-shards" in status.stdout, status.stdout  # the tail of the error names the problem


def test_invalid_grid_is_refused_before_any_submission(slurm, tmp_path):
    before = _queue_ids()
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text("model: {arch: tiny}\nexecutor: {type: slurm}\ngrid:\n  model.input_size: [224, 230]\n")
    out = subprocess.run([sys.executable, str(REPO / "launch.py"), "sweep", str(grid_file),
                          "--root", str(tmp_path / "sweeps")], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 2 and "model.input_size" in out.stderr, out.stderr
    assert not (tmp_path / "sweeps").exists()
    assert _queue_ids() == before
