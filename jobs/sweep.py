"""``launch.py sweep``: expand a grid, create the sweep directory, submit training and evaluation.

Layout of a sweep directory::

    <root>/<name>-<timestamp>/
        sweep.json              # id, code version, grid, experiments, job ids
        <experiment>/config.yaml, checkpoints/, tb/, results.jsonl, train_state.json
        submitit/<job id>/      # scheduler logs
"""
from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from clickseg.config import Config, save_config
from jobs.executor import make_executor
from jobs.grid import Experiment, expand
from jobs.tasks import EvalJob, TrainJob


def code_version() -> dict[str, Any]:
    """Git commit and dirtiness of the clickseg checkout the sweep was launched with."""
    repo = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {"commit": None, "dirty": None}


def create_sweep(grid_file: str, overrides: list[str], root: str = "runs/sweeps") -> tuple[Path, list[Experiment]]:
    """Validate every grid point, then write the sweep directory with one resolved config per experiment."""
    base, experiments = expand(grid_file, overrides)
    name = str(base.get("name", Path(grid_file).stem))
    sweep_dir = Path(root) / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    sweep_dir.mkdir(parents=True, exist_ok=False)
    for exp in experiments:
        exp.config.run_dir = str(sweep_dir / exp.name)
        save_config(exp.config, sweep_dir / exp.name / "config.yaml")
    index = {"id": sweep_dir.name, "created": datetime.now().isoformat(timespec="seconds"),
             "grid_file": str(grid_file), "overrides": list(overrides), "code": code_version(),
             "experiments": [{"name": e.name, "run_dir": e.config.run_dir, "point": e.overrides}
                             for e in experiments], "jobs": {}}
    write_index(sweep_dir, index)
    return sweep_dir, experiments


def write_index(sweep_dir: Path, index: dict) -> None:
    tmp = sweep_dir / ".sweep.json.tmp"
    tmp.write_text(json.dumps(index, indent=1))
    tmp.replace(sweep_dir / "sweep.json")


def read_index(sweep_dir: str | Path) -> dict:
    path = Path(sweep_dir) / "sweep.json"
    if not path.exists():
        raise FileNotFoundError(f"{sweep_dir} is not a sweep directory (no sweep.json)")
    return json.loads(path.read_text())


def submit_slurm(sweep_dir: Path, experiments: list[Experiment]) -> dict[str, Any]:
    """Training of all grid points as ONE job array, plus one evaluation job per experiment."""
    cfg = experiments[0].config
    runs = [e.config.run_dir for e in experiments]
    train_ex = make_executor(cfg.executor, sweep_dir / "submitit", name=f"train-{sweep_dir.name}")
    with train_ex.batch():  # one sbatch array of Checkpointable jobs: requeued on Slurm's USR2
        train_jobs = [train_ex.submit(TrainJob(run)) for run in runs]
    eval_cfg = cfg.executor.__class__(**{**cfg.executor.__dict__, "gpus_per_node": min(1, cfg.executor.gpus_per_node),
                                        "nodes": 1})
    eval_ex = make_executor(eval_cfg, sweep_dir / "submitit", name=f"eval-{sweep_dir.name}")
    with eval_ex.batch():
        eval_jobs = [eval_ex.submit(EvalJob(run)) for run in runs]
    return {"train": [j.job_id for j in train_jobs], "eval": [j.job_id for j in eval_jobs]}


def training_cost(cfg: Config) -> float:
    """Rough relative cost of a training: samples x input pixels x the click mode's extra passes.

    A gradient-free decode costs about a quarter of a training step (measured on CPU with the
    tiny models): ``multi`` runs 0 to ``max_correction_clicks`` of them per batch (half that
    many on average), ``single_any`` one. Only the order of these numbers is used.
    """
    extra = {"multi": cfg.clicks.max_correction_clicks / 2, "single_any": 1.0}.get(cfg.clicks.mode, 0.0)
    return cfg.train.epochs * cfg.train.samples_per_epoch * cfg.model.input_size ** 2 * (1 + 0.25 * extra)


def run_local(sweep_dir: Path, experiments: list[Experiment], poll_s: float = 2.0) -> list[str]:
    """Run the sweep with submitit's local executor, at most ``array_parallelism`` trainings at once.

    Each experiment's evaluation job starts with its training and evaluates
    checkpoints as they appear. The costliest trainings start first (longest-first
    scheduling, see :func:`training_cost`), so the parallel slots end at about the same
    time instead of one long training running alone at the end. Returns the errors of
    failed jobs.
    """
    cfg = experiments[0].config
    executor = make_executor(cfg.executor, sweep_dir / "submitit")
    pending = sorted(experiments, key=lambda e: -training_cost(e.config))
    running: list[tuple[str, Any]] = []
    errors: list[str] = []
    index = read_index(sweep_dir)
    try:
        while pending or running:
            n_train = sum(1 for kind, _ in running if kind.startswith("train"))
            while pending and n_train < max(1, cfg.executor.array_parallelism):
                exp = pending.pop(0)
                for kind, job_args in (("train", (TrainJob(exp.config.run_dir),)),
                                       ("eval", (EvalJob(exp.config.run_dir),))):
                    job = executor.submit(*job_args)
                    running.append((f"{kind}:{exp.name}", job))
                    index["jobs"].setdefault(exp.name, {})[kind] = job.job_id
                n_train += 1
                write_index(sweep_dir, index)
            time.sleep(poll_s)
            still = []
            for label, job in running:
                if not job.done():
                    still.append((label, job))
                    continue
                exc = job.exception()
                if exc is not None:
                    errors.append(f"{label} (job {job.job_id}): {str(exc).strip().splitlines()[-1][:300]}")
                    print(f"[sweep] {label} FAILED: see {job.paths.stderr}", flush=True)
                else:
                    print(f"[sweep] {label} finished", flush=True)
            running = still
    except KeyboardInterrupt:  # Ctrl-C: stop every job of the sweep, not just this loop
        for label, job in running:
            job.cancel()  # SIGINT to the job, which ends its training (jobs.tasks.train_task)
        print(f"[sweep] cancelled {len(running)} running job(s)", flush=True)
        raise
    return errors
