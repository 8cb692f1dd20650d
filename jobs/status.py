"""``launch.py status`` and ``cancel``: the scheduler's view of a sweep's jobs, joined with the
state each training records itself in ``<run_dir>/train_state.json``.

Without Slurm accounting ``sacct`` does not work and submitit reports every
job as UNKNOWN, so the scheduler is asked once (``squeue`` for all the
sweep's job ids) and a job it no longer lists is described by its own record.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from clickseg import rundir
from clickseg.rundir import Status, read_results
from jobs.sweep import read_index


def scheduler_states(job_ids: list[str]) -> dict[str, str]:
    """Job id (``123_4`` for array tasks) -> state, for the jobs Slurm still lists (one squeue call)."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    parents = sorted({j.split("_")[0] for j in job_ids})
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(parents)],
                         capture_output=True, text=True, timeout=60)
    states = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


# The scheduler-style state shown for a job Slurm no longer lists, from the run's own record.
# "ENDED?": recorded as running, but no process holds the run's lock (killed without a trace).
RECORDED_STATES = {Status.DONE: "COMPLETED", Status.FAILED: "FAILED", Status.INTERRUPTED: "INTERRUPTED",
                   Status.RUNNING: "ENDED?"}


def sweep_rows(sweep_dir: str | Path) -> list[dict]:
    """One row per experiment: job ids, state, epoch, latest mIoU@1 per dataset, logs, error tail."""
    sweep = Path(sweep_dir)
    index = read_index(sweep)
    jobs = index.get("jobs", {})
    train_ids, eval_ids = list(jobs.get("train", [])), list(jobs.get("eval", []))
    states = scheduler_states(train_ids + eval_ids)
    rows = []
    for i, exp in enumerate(index["experiments"]):
        run = Path(exp["run_dir"])
        recorded = rundir.read_state(run)
        per_exp = jobs.get(exp["name"], {})
        train_id = train_ids[i] if i < len(train_ids) else per_exp.get("train")
        eval_id = eval_ids[i] if i < len(eval_ids) else per_exp.get("eval")
        state = states.get(str(train_id)) if train_id else None
        if state is None:  # not (or no longer) in the queue: the job's own record
            state = RECORDED_STATES[recorded.status] if recorded else "PENDING" if not train_id else "UNKNOWN"
            if recorded and recorded.status is Status.RUNNING and rundir.training_lock_holder(run):
                state = "RUNNING"  # a local training, or one Slurm no longer lists but still alive
        latest: dict[str, float] = {}
        for row in read_results(run):
            if row.get("protocol", "center") == "center" and "mIoU@1" in row.get("metrics", {}):
                latest[row["dataset"]] = row["metrics"]["mIoU@1"]
        log = None
        if train_id:
            log = sweep / "submitit" / str(train_id) / f"{train_id}_0_log.err"
        rows.append({"experiment": exp["name"], "train_job": train_id, "eval_job": eval_id, "state": state,
                     "eval_state": states.get(str(eval_id), "-") if eval_id else "-",
                     "epoch": recorded.epoch if recorded else 0, "mIoU@1": latest, "log": str(log) if log else "-",
                     "error": recorded.error if recorded and state == "FAILED" else ""})
    return rows


_ERROR = re.compile(r"^(?:\[rank\d+\]: )?([A-Za-z_][\w.]*(?:Error|Exception|Interrupt)): ")


def root_error(log_tail: str) -> str:
    """The error line of the training process itself, not of the launchers that re-raise it."""
    found = [line.strip() for line in log_tail.splitlines()
             if _ERROR.match(line.strip()) and "CalledProcessError" not in line]
    return found[-1] if found else ""


def format_status(sweep_dir: str | Path, rows: list[dict], error_lines: int = 5) -> str:
    lines = [f"sweep {sweep_dir}",
             f"{'experiment':40s} {'train job':>10s} {'state':11s} {'eval':9s} {'epoch':>5s}  mIoU@1  log"]
    for r in rows:
        scores = ", ".join(f"{d} {v:.4f}" for d, v in r["mIoU@1"].items()) or "-"
        lines.append(f"{r['experiment']:40s} {str(r['train_job'] or '-'):>10s} {r['state']:11s} "
                     f"{r['eval_state']:9s} {r['epoch']:>5}  {scores}  {r['log']}")
        if r["error"]:
            cause = root_error(r["error"])
            if cause:
                lines.append("    error: " + cause[:500])
            tail = [l for l in r["error"].strip().splitlines() if l.strip()][-error_lines:]
            lines += ["    | " + l for l in tail]
    return "\n".join(lines)


def cancel_sweep(sweep_dir: str | Path) -> list[str]:
    """``scancel`` every job of the sweep (one call); returns the ids."""
    jobs = read_index(sweep_dir).get("jobs", {})
    ids = [str(j) for j in list(jobs.get("train", [])) + list(jobs.get("eval", []))]
    if ids:
        subprocess.run(["scancel", *sorted({j.split("_")[0] for j in ids})], check=True, timeout=60)
    return ids
