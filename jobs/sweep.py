"""``launch.py sweep``: expand a grid, create the sweep directory, submit training and evaluation.

Layout of a sweep directory::

    <root>/<name>-<timestamp>/
        sweep.json              # the index below
        <experiment>/config.yaml, checkpoints/, tb/, results.jsonl, train_state.json
        submitit/<job id>/      # scheduler logs and submitit's result files

``sweep.json`` (the same shape for local and Slurm sweeps)::

    id, created, grid_file, overrides, code: {commit, dirty}
    experiments: [{name, run_dir, point}]          # in grid order
    executor:    "local" | "slurm"
    jobs:        {<experiment>: {train: <job id>, eval: <job id>}}   # filled in as jobs are submitted
    arrays:      [{experiments, executor, train, eval}]   # Slurm: one per executor setting (array ids)
    resubmitted: [{time, previous: {<experiment>: {train, eval}}}]   # launch.py resubmit
    launcher:    {host, pid, start}                # local: the process that runs the jobs

A Slurm job id is ``<array>_<task>``; a local job id is the pid of submitit's job process on
``launcher.host``. :func:`read_index` also reads the shape written before (Slurm: ``jobs``
holding ``train`` and ``eval`` lists in experiment order and ``arrays``) and returns it in this one.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

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
                             for e in experiments],
             "executor": experiments[0].config.executor.type, "jobs": {}, "arrays": []}
    write_index(sweep_dir, index)
    return sweep_dir, experiments


def write_index(sweep_dir: Path, index: dict) -> None:
    tmp = sweep_dir / ".sweep.json.tmp"
    tmp.write_text(json.dumps(index, indent=1))
    tmp.replace(sweep_dir / "sweep.json")


def read_index(sweep_dir: str | Path) -> dict:
    """``sweep.json`` in the shape of this module's docstring (an index of the previous shape is
    converted)."""
    path = Path(sweep_dir) / "sweep.json"
    if not path.exists():
        raise FileNotFoundError(f"{sweep_dir} is not a sweep directory (no sweep.json)")
    index = json.loads(path.read_text())
    jobs = index.get("jobs") or {}
    if isinstance(jobs.get("train"), list):  # previous Slurm shape: id lists in experiment order
        per_exp = {}
        for i, exp in enumerate(index["experiments"]):
            own = jobs.get(exp["name"]) if isinstance(jobs.get(exp["name"]), dict) else {}
            per_exp[exp["name"]] = {kind: own.get(kind) or (ids[i] if i < len(ids) else None)
                                    for kind, ids in (("train", jobs["train"]), ("eval", jobs.get("eval", [])))}
        index.update(executor="slurm", jobs=per_exp, arrays=jobs.get("arrays", []))
    index.setdefault("jobs", {})
    index.setdefault("arrays", [])
    if "executor" not in index:  # previous local shape (no executor recorded): the runs' config says
        index["executor"] = _configured_executor(index)
    return index


def _configured_executor(index: dict) -> str:
    for exp in index["experiments"]:
        try:
            cfg = yaml.safe_load((Path(exp["run_dir"]) / "config.yaml").read_text()) or {}
            return str(cfg["executor"]["type"])
        except (OSError, KeyError, TypeError, yaml.YAMLError):
            continue
    return "local"


def process_start(pid: int) -> int | None:
    """Start time of process ``pid`` (clock ticks since boot, from /proc), None if there is none:
    with the pid it names one process, whatever pids are reused later."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def launcher_alive(index: dict) -> bool | None:
    """Whether the process running a local sweep is alive; None when that cannot be told here
    (another host, or not recorded)."""
    launcher = index.get("launcher")
    if not launcher or launcher.get("host") != socket.gethostname():
        return None
    return process_start(launcher["pid"]) == launcher.get("start")


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


def submit_slurm(sweep_dir: Path, experiments: list[Experiment]) -> tuple[dict[str, dict], list[dict]]:
    """One training job array per distinct executor setting (one array for a grid that varies no
    ``executor.*`` key), each with an evaluation array of the same experiments.

    Returns the ``jobs`` and ``arrays`` of sweep.json. If a submission fails, the arrays already
    submitted are cancelled.
    """
    jobs: dict[str, dict] = {}
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
                jobs[experiments[i].name] = {"train": tj.job_id, "eval": ej.job_id}
    except BaseException:
        submitted = [a[k] for a in arrays for k in ("train", "eval") if a[k]]
        if submitted:
            try:
                subprocess.run(["scancel", *submitted], capture_output=True, timeout=60)
                print(f"[sweep] submission failed: cancelled job(s) {' '.join(submitted)}", flush=True)
            except (OSError, subprocess.TimeoutExpired) as e:
                print(f"[sweep] submission failed; cancel job(s) {' '.join(submitted)} by hand ({e})", flush=True)
        raise
    return {e.name: jobs[e.name] for e in experiments}, arrays


def resubmit(sweep_dir: str | Path, names: list[str] | None = None) -> list[str]:
    """Submit again (Slurm) the experiments whose jobs have all ended without their training
    completing (failed, cancelled, a node lost, out of requeues), or only ``names``. Each
    training resumes from its last checkpoint; its run directory's lock refuses a second
    training should one still run. The new job ids replace the old ones in ``jobs``; the old
    ones are kept in ``resubmitted``. Returns the names resubmitted."""
    from clickseg.config import load_config
    from jobs.status import ended, sweep_rows

    sweep = Path(sweep_dir)
    index = read_index(sweep)
    if index["executor"] != "slurm":
        raise ValueError(f"{sweep} is a local sweep: run its grid again (resubmit submits to Slurm)")
    rows = {r["experiment"]: r for r in sweep_rows(sweep)}
    known = [e["name"] for e in index["experiments"]]
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
        raise ValueError(f"no experiment {unknown} in {sweep} (it has {known})")
    chosen = []
    for exp in index["experiments"]:
        row = rows[exp["name"]]
        if names and exp["name"] not in names:
            continue
        if not ended(row) and row["train_job"]:
            if names:
                raise ValueError(f"{exp['name']}: its jobs have not ended (training {row['state']}, "
                                 f"evaluation {row['eval_state']})")
            continue
        if row["state"] == "COMPLETED" and not names:
            continue
        cfg = load_config(Path(exp["run_dir"]) / "config.yaml")
        chosen.append(Experiment(exp["name"], exp.get("point", {}), cfg))
    if not chosen:
        return []
    jobs, arrays = submit_slurm(sweep, chosen)
    index.setdefault("resubmitted", []).append({
        "time": datetime.now().isoformat(timespec="seconds"),
        "previous": {e.name: index["jobs"].get(e.name, {}) for e in chosen}})
    index["jobs"].update(jobs)
    index["arrays"] += arrays
    write_index(sweep, index)
    return [e.name for e in chosen]


def training_cost(cfg: Config) -> float:
    """Rough relative cost of a training: samples x input pixels x the click mode's extra passes.

    A gradient-free decode costs about a quarter of a training step (measured on CPU with the
    tiny models): ``multi`` runs 0 to ``max_correction_clicks`` of them per batch (half that
    many on average), ``single_any`` one. Only the order of these numbers is used.
    """
    extra = {"multi": cfg.clicks.max_correction_clicks / 2, "single_any": 1.0}.get(cfg.clicks.mode, 0.0)
    return cfg.train.epochs * cfg.train.samples_per_epoch * cfg.model.input_size ** 2 * (1 + 0.25 * extra)


def run_local(sweep_dir: Path, experiments: list[Experiment], poll_s: float = 2.0,
              out: TextIO | None = None, every_s: float = 30.0) -> list[str]:
    """Run the sweep with submitit's local executor.

    Each experiment's jobs run with its own ``executor`` settings (one local executor per
    distinct setting, see :func:`executor_groups`), and its training starts only while fewer
    than its ``executor.array_parallelism`` trainings run. Its evaluation job starts with
    its training and evaluates checkpoints as they appear. The costliest trainings start
    first (longest-first scheduling, see :func:`training_cost`), so the parallel slots end
    at about the same time instead of one long training running alone at the end. Progress
    goes to ``out`` (default stdout) as the view of :mod:`jobs.watch` (plain lines at each
    change and every ``every_s`` when ``out`` is not a terminal). Returns the errors of
    failed jobs.
    """
    from jobs.status import sweep_rows
    from jobs.watch import View, final_line

    view = View(out or sys.stdout, every_s=every_s, title=f"sweep {sweep_dir.name}")
    executors: dict[str, Any] = {}
    for ex_cfg, members in executor_groups(experiments):
        executor = make_executor(ex_cfg, sweep_dir / "submitit")
        executors.update({experiments[i].name: executor for i in members})
    pending = sorted(experiments, key=lambda e: -training_cost(e.config))
    running: list[tuple[str, Any]] = []
    errors: list[str] = []
    index = read_index(sweep_dir)
    index["jobs"] = {e.name: index["jobs"].get(e.name, {}) for e in experiments}  # in grid order
    index["launcher"] = {"host": socket.gethostname(), "pid": os.getpid(), "start": process_start(os.getpid())}
    write_index(sweep_dir, index)
    start = time.time()
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
            view.update(sweep_rows(sweep_dir))
            time.sleep(poll_s)
            still = []
            for label, job in running:
                if not job.done():
                    still.append((label, job))
                    continue
                exc = job.exception()
                if exc is not None:
                    errors.append(f"{label} (job {job.job_id}): {str(exc).strip().splitlines()[-1][:300]}")
                    view.message(f"[sweep] {label} FAILED: see {job.paths.stderr}")
            running = still
    except KeyboardInterrupt:  # Ctrl-C: stop every job of the sweep, not just this loop
        for label, job in running:
            job.cancel()  # SIGINT to the job, which ends its training (jobs.tasks.train_task)
        view.message(f"[sweep] cancelled {len(running)} running job(s)")
        raise
    rows = sweep_rows(sweep_dir)
    view.update(rows)
    view.close(final_line(sweep_dir.name, rows, time.time() - start))
    return errors
