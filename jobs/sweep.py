"""``launch.py sweep``: expand a grid, create the sweep directory, submit training and evaluation.

Layout of a sweep directory::

    <root>/<name>-<timestamp>/
        sweep.json              # id, code version, grid file, overrides, experiments, job ids
        <experiment>/config.yaml, checkpoints/, tb/, results.jsonl, train_state.json
        submitit/<job id>/      # scheduler logs
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from clickseg.config import Config, ExecutorConfig, save_config
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


def executor_groups(experiments: list[Experiment]) -> list[tuple[ExecutorConfig, list[int]]]:
    """Each distinct ``executor`` section of the experiments with the indices of those using it,
    in order of first appearance (one group when the grid varies no ``executor.*`` key)."""
    groups: dict[str, tuple[ExecutorConfig, list[int]]] = {}
    for i, exp in enumerate(experiments):
        key = json.dumps(dataclasses.asdict(exp.config.executor), sort_keys=True)
        groups.setdefault(key, (exp.config.executor, []))[1].append(i)
    return list(groups.values())


def eval_executor(cfg: ExecutorConfig) -> ExecutorConfig:
    """The evaluation jobs' resources: those of the training on one node with at most one GPU."""
    return dataclasses.replace(cfg, gpus_per_node=min(1, cfg.gpus_per_node), nodes=1)


def submit_slurm(sweep_dir: Path, experiments: list[Experiment]) -> dict[str, Any]:
    """One training job array per distinct executor setting (one array for a grid that varies no
    ``executor.*`` key), each with an evaluation array of the same experiments.

    Returns the ``jobs`` of sweep.json: ``train`` and ``eval`` job ids in experiment order,
    ``<experiment>: {train, eval}`` and ``arrays`` (per group: experiments, executor, array ids).
    If a submission fails, the arrays already submitted are cancelled.
    """
    n = len(experiments)
    train_ids: list[str] = [""] * n
    eval_ids: list[str] = [""] * n
    arrays: list[dict[str, Any]] = []
    groups = executor_groups(experiments)
    logs = sweep_dir / "submitit"
    try:
        for g, (ex_cfg, members) in enumerate(groups):
            suffix = f"-{g}" if len(groups) > 1 else ""
            runs = [experiments[i].config.run_dir for i in members]
            train_ex = make_executor(ex_cfg, logs, name=f"train-{sweep_dir.name}{suffix}")
            with train_ex.batch():  # one sbatch array of Checkpointable jobs: requeued on Slurm's USR2
                train_jobs = [train_ex.submit(TrainJob(run)) for run in runs]
            arrays.append({"experiments": [experiments[i].name for i in members],
                           "executor": dataclasses.asdict(ex_cfg),
                           "train": train_jobs[0].job_id.split("_")[0], "eval": None})
            eval_ex = make_executor(eval_executor(ex_cfg), logs, name=f"eval-{sweep_dir.name}{suffix}")
            with eval_ex.batch():
                eval_jobs = [eval_ex.submit(EvalJob(run)) for run in runs]
            arrays[-1]["eval"] = eval_jobs[0].job_id.split("_")[0]
            for i, tj, ej in zip(members, train_jobs, eval_jobs):
                train_ids[i], eval_ids[i] = tj.job_id, ej.job_id
    except BaseException:
        submitted = [a[k] for a in arrays for k in ("train", "eval") if a[k]]
        if submitted:
            try:
                subprocess.run(["scancel", *submitted], capture_output=True, timeout=60)
                print(f"[sweep] submission failed: cancelled job(s) {' '.join(submitted)}", flush=True)
            except (OSError, subprocess.TimeoutExpired) as e:
                print(f"[sweep] submission failed; cancel job(s) {' '.join(submitted)} by hand ({e})", flush=True)
        raise
    jobs: dict[str, Any] = {"train": train_ids, "eval": eval_ids}
    jobs.update({e.name: {"train": t, "eval": v} for e, t, v in zip(experiments, train_ids, eval_ids)})
    jobs["arrays"] = arrays
    return jobs


def training_cost(cfg: Config) -> float:
    """Rough relative cost of a training: samples x input pixels x the click mode's extra passes.

    A gradient-free decode costs about a quarter of a training step (measured on CPU with the
    tiny models): ``multi`` runs 0 to ``max_correction_clicks`` of them per batch (half that
    many on average), ``single_any`` one. Only the order of these numbers is used.
    """
    extra = {"multi": cfg.clicks.max_correction_clicks / 2, "single_any": 1.0}.get(cfg.clicks.mode, 0.0)
    return cfg.train.epochs * cfg.train.samples_per_epoch * cfg.model.input_size ** 2 * (1 + 0.25 * extra)


def run_local(sweep_dir: Path, experiments: list[Experiment], poll_s: float = 2.0) -> list[str]:
    """Run the sweep with submitit's local executor.

    Each experiment's jobs run with its own ``executor`` settings (one local executor per
    distinct setting, see :func:`executor_groups`), and its training starts only while fewer
    than its ``executor.array_parallelism`` trainings run. Its evaluation job starts with
    its training and evaluates checkpoints as they appear. The costliest trainings start
    first (longest-first scheduling, see :func:`training_cost`), so the parallel slots end
    at about the same time instead of one long training running alone at the end. Returns
    the errors of failed jobs.
    """
    executors: dict[str, Any] = {}
    for ex_cfg, members in executor_groups(experiments):
        executor = make_executor(ex_cfg, sweep_dir / "submitit")
        executors.update({experiments[i].name: executor for i in members})
    pending = sorted(experiments, key=lambda e: -training_cost(e.config))
    running: list[tuple[str, Any]] = []
    errors: list[str] = []
    index = read_index(sweep_dir)
    try:
        while pending or running:
            n_train = sum(1 for kind, _ in running if kind.startswith("train"))
            while True:
                exp = next((e for e in pending if n_train < e.config.executor.array_parallelism), None)
                if exp is None:
                    break
                pending.remove(exp)
                for kind, job_args in (("train", (TrainJob(exp.config.run_dir),)),
                                       ("eval", (EvalJob(exp.config.run_dir),))):
                    job = executors[exp.name].submit(*job_args)
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
