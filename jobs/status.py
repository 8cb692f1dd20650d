"""``launch.py status`` and ``cancel``: the state of a sweep's jobs, joined with the state each
training records itself in ``<run_dir>/train_state.json`` and the rows of ``results.jsonl``.

Slurm jobs: without Slurm accounting ``sacct`` does not work and submitit reports every job as
UNKNOWN, so the scheduler is asked once (``squeue`` for all the sweep's job ids); a job it no
longer lists is described by its own record: the training's ``train_state.json``, and for any
job submitit's result file (``submitit/<id>/<id>_0_result.pkl``: COMPLETED or FAILED).

Local jobs (a job id is the pid of submitit's job process on the sweep's host): the result file
when the job has ended, RUNNING while the process lives, ``ENDED?`` when it is gone without a
result (killed), ``?`` when the sweep runs on another host.
"""
from __future__ import annotations

import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from clickseg import rundir
from clickseg.rundir import Status, read_results
from jobs.sweep import launcher_alive, read_index


def scheduler_states(job_ids: list[str]) -> dict[str, tuple[str, str]] | None:
    """Job id (``123_4`` for array tasks) -> (state, node list), for the jobs Slurm still lists
    (one squeue call); None when squeue cannot be asked."""
    if shutil.which("squeue") is None:
        return None
    if not job_ids:
        return {}
    parents = sorted({j.split("_")[0] for j in job_ids})
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T %N", "-j", ",".join(parents)],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    states = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            states[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return states


# The scheduler-style state shown for a job Slurm no longer lists, from the run's own record.
# "ENDED?": recorded as running, but no process holds the run's lock (killed without a trace).
RECORDED_STATES = {Status.DONE: "COMPLETED", Status.FAILED: "FAILED", Status.INTERRUPTED: "INTERRUPTED",
                   Status.RUNNING: "ENDED?"}

# States after which a job does nothing more (Slurm's final states and this module's own).
# "NOT RUN": a local sweep's experiment never started and the process running the sweep is gone.
ENDED_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                          "BOOT_FAIL", "DEADLINE", "PREEMPTED", "INTERRUPTED", "ENDED?", "NOT RUN", "?", "-"})


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name} is not loaded from a result file")


def result_state(sweep_dir: Path, job_id: str) -> str | None:
    """COMPLETED or FAILED from submitit's result file of the job, None while there is none."""
    path = sweep_dir / "submitit" / job_id / f"{job_id}_0_result.pkl"
    try:
        with open(path, "rb") as f:
            outcome = _NoGlobals(f).load()[0]
    except FileNotFoundError:
        return None
    except Exception:  # unreadable, or a result that is not plain data
        return "?"
    return "COMPLETED" if outcome == "success" else "FAILED"


def local_job_alive(sweep_dir: Path, job_id: str) -> bool:
    """Whether submitit's job process ``job_id`` (a pid on this host) of this sweep is alive."""
    try:
        cmdline = Path(f"/proc/{int(job_id)}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False
    return b"submitit" in cmdline and f"{sweep_dir.name}/submitit".encode() in cmdline


def job_state(sweep_dir: Path, job_id: str | None, executor: str, queue: dict[str, tuple[str, str]] | None,
              here: bool) -> str | None:
    """The job's state from the scheduler, its process or its result file; None when not submitted."""
    if not job_id:
        return None
    job_id = str(job_id)
    if executor == "slurm":
        if queue is not None and job_id in queue:
            return queue[job_id][0]
        return result_state(sweep_dir, job_id) or ("ENDED?" if queue is not None else "?")
    done = result_state(sweep_dir, job_id)
    if done:
        return done
    if not here:
        return "?"
    return "RUNNING" if local_job_alive(sweep_dir, job_id) else "ENDED?"


def _run_config(run: Path) -> dict:
    try:
        return yaml.safe_load(rundir.config_path(run).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


_latest_cache: dict[Path, tuple[tuple[int, int], tuple[dict, dict]]] = {}


def latest_miou(run: Path) -> tuple[dict[str, float], dict[str, int]]:
    """The mIoU@1 of the latest evaluated epoch per dataset (main protocol), and that epoch.
    Kept per run while ``results.jsonl`` is unchanged (a watch reads it at every refresh)."""
    try:
        st = (run / rundir.RESULTS_FILE).stat()
        stamp = (st.st_size, st.st_mtime_ns)
    except FileNotFoundError:
        return {}, {}
    cached = _latest_cache.get(run)
    if cached and cached[0] == stamp:
        return cached[1]
    latest: dict[str, float] = {}
    latest_epoch: dict[str, int] = {}
    for row in read_results(run):
        if (row.get("protocol", "center") == "center" and "mIoU@1" in row.get("metrics", {})
                and not row.get("scaling_curve") and row.get("epoch", 0) >= latest_epoch.get(row["dataset"], 0)):
            latest[row["dataset"]] = row["metrics"]["mIoU@1"]
            latest_epoch[row["dataset"]] = row.get("epoch", 0)
    _latest_cache[run] = (stamp, (latest, latest_epoch))
    return latest, latest_epoch


def sweep_rows(sweep_dir: str | Path) -> list[dict]:
    """One row per experiment: job ids, training and evaluation state, progress (epoch, step,
    speed, ETA), latest mIoU@1 per dataset and its epoch, log, error tail."""
    sweep = Path(sweep_dir)
    index = read_index(sweep)
    executor, jobs = index["executor"], index["jobs"]
    ids = [str(j[k]) for j in jobs.values() for k in ("train", "eval") if j.get(k)]
    queue = scheduler_states(ids) if executor == "slurm" else None
    launcher = index.get("launcher")
    here = not launcher or launcher.get("host") == socket.gethostname()
    alive = launcher_alive(index) if executor == "local" else None
    now = time.time()
    rows = []
    for exp in index["experiments"]:
        run = Path(exp["run_dir"])
        recorded = rundir.read_state(run)
        train_id, eval_id = jobs.get(exp["name"], {}).get("train"), jobs.get(exp["name"], {}).get("eval")
        job = job_state(sweep, train_id, executor, queue, here)
        if executor == "slurm" and queue and str(train_id) in queue:
            state = queue[str(train_id)][0]
        elif recorded:
            state = RECORDED_STATES[recorded.status]
            if recorded.status is Status.RUNNING and rundir.training_lock_holder(run):
                state = "RUNNING"  # a local training, or one Slurm no longer lists but still alive
        elif job:  # submitted, nothing recorded yet
            state = "STARTING" if job == "RUNNING" else job
        else:
            state = "NOT RUN" if alive is False else "PENDING"
        cfg = _run_config(run)
        train_cfg = cfg.get("train") or {}
        epochs = train_cfg.get("epochs")
        per_step = None
        if train_cfg.get("batch_size"):
            per_step = (train_cfg["batch_size"] * train_cfg.get("num_processes", 1)
                        * (cfg.get("executor") or {}).get("nodes", 1))
        total_steps = recorded.total_steps if recorded else 0
        if not total_steps and epochs and per_step and train_cfg.get("samples_per_epoch"):
            total_steps = epochs * (train_cfg["samples_per_epoch"] // per_step)
        speed = recorded.steps_per_s if recorded and state == "RUNNING" else 0.0
        eta = None
        if speed > 0 and total_steps:
            eta = max(0.0, (total_steps - recorded.step) / speed - max(0.0, now - recorded.time))
        latest, latest_epoch = latest_miou(run)
        log = sweep / "submitit" / str(train_id) / f"{train_id}_0_log.err" if train_id else None
        nodes = queue[str(train_id)][1] if queue and str(train_id) in queue else ""
        if not nodes and recorded and recorded.hosts:
            nodes = ",".join(dict.fromkeys(recorded.hosts))  # the training's own record, rank order
        rows.append({"experiment": exp["name"], "train_job": train_id, "eval_job": eval_id, "state": state,
                     "eval_state": job_state(sweep, eval_id, executor, queue, here) or "-",
                     "epoch": recorded.epoch if recorded else 0, "epochs": epochs,
                     "step": recorded.step if recorded else 0, "total_steps": total_steps,
                     "steps_per_s": speed, "samples_per_s": speed * per_step if per_step else None,
                     "eta_s": eta, "mIoU@1": latest, "eval_epoch": latest_epoch,
                     "log": str(log) if log else "-", "nodes": nodes or "-",
                     "error": recorded.error if recorded and state == "FAILED" else "",
                     "node_errors": (recorded.node_errors or {}) if recorded and state == "FAILED" else {}})
    return rows


def ended(row: dict) -> bool:
    """Whether neither job of the experiment will do anything more."""
    return row["state"] in ENDED_STATES and row["eval_state"] in ENDED_STATES


_ERROR = re.compile(r"^(?:\[rank\d+\]: )?([A-Za-z_][\w.]*(?:Error|Exception|Interrupt)): ")


def root_error(log_tail: str) -> str:
    """The error line of the training process itself, not of the launchers that re-raise it."""
    found = [line.strip() for line in log_tail.splitlines()
             if _ERROR.match(line.strip()) and "CalledProcessError" not in line]
    return found[-1] if found else ""


def format_status(sweep_dir: str | Path, rows: list[dict], error_lines: int = 5) -> str:
    lines = [f"sweep {sweep_dir}",
             f"{'experiment':40s} {'train job':>10s} {'state':11s} {'eval':9s} {'epoch':>5s}  nodes  mIoU@1  log"]
    for r in rows:
        scores = ", ".join(f"{d} {v:.4f}" for d, v in r["mIoU@1"].items()) or "-"
        lines.append(f"{r['experiment']:40s} {str(r['train_job'] or '-'):>10s} {r['state']:11s} "
                     f"{r['eval_state']:9s} {r['epoch']:>5}  {r.get('nodes', '-')}  {scores}  {r['log']}")
        for source, text in r.get("node_errors", {}).items():  # a multi-node job: each node's own cause
            lines.append(f"    {source}: " + (root_error(text) or text.strip().splitlines()[0])[:500])
        if r["error"]:
            cause = root_error(r["error"])
            if cause:
                lines.append("    error: " + cause[:500])
            tail = [l for l in r["error"].strip().splitlines() if l.strip()][-error_lines:]
            lines += ["    | " + l for l in tail]
    return "\n".join(lines)


def cancel_sweep(sweep_dir: str | Path) -> list[str]:
    """Stop every job of the sweep; returns the ids. Slurm: one ``scancel``. Local (on the
    sweep's host): SIGINT to the process running the sweep, which stops its jobs and starts no
    more; when that process is gone, SIGINT to each job process still alive (what submitit's
    ``LocalJob.cancel`` sends)."""
    sweep = Path(sweep_dir)
    index = read_index(sweep)
    ids = [str(j[k]) for j in index["jobs"].values() for k in ("train", "eval") if j.get(k)]
    if index["executor"] == "slurm":
        if ids:
            subprocess.run(["scancel", *sorted({j.split("_")[0] for j in ids})], check=True, timeout=60)
        return ids
    launcher = index.get("launcher") or {}
    if launcher and launcher.get("host") != socket.gethostname():
        raise RuntimeError(f"{sweep} runs on {launcher['host']}: cancel it there")
    live = [j for j in ids if local_job_alive(sweep, j)]
    if launcher_alive(index):
        os.kill(launcher["pid"], signal.SIGINT)
        return live
    for job_id in live:
        try:
            os.kill(int(job_id), signal.SIGINT)
        except ProcessLookupError:
            pass
    return live
