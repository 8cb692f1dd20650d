"""Multi-node training on a real 2-node Slurm cluster (``jobs/cluster/local_slurm.sh up --nodes 2``):
distinct hosts with their own addresses, one ``accelerate launch`` per node, gloo between them.

The cluster is started by the fixture (root needed; the tests skip, saying why, where it cannot
run). Every wait is bounded.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from builtin_data import tiny_overrides
from clickseg import checkpoint, rundir
from clickseg.rundir import Status
from multinode_cluster import slurm_2node  # noqa: F401  (fixture)
from test_slurm import _wait

REPO = Path(__file__).resolve().parents[1]
NODES = ["clickseg-node1", "clickseg-node2"]
TWO_NODES = ["executor.type=slurm", "executor.partition=debug", "executor.nodes=2", "executor.cpus_per_task=1",
             "executor.gpus_per_node=0", "executor.mem_gb=0", "executor.time_min=20", "train.num_processes=1"]


def _run(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "launch.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, **env})


def _queue(env: dict) -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **env})
    return set(out.stdout.split())


def _sweep(tmp_path: Path, builtin_dirs, env: dict, **extra) -> tuple[Path, dict]:
    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    data["grid"] = {"model.input_size": [224]}
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(data))
    base = {"clicks.mode": "multi", "train.epochs": 3, "train.samples_per_epoch": 96, **extra}
    overrides = [o for o in tiny_overrides(builtin_dirs, tmp_path / "unused", **base)
                 if not o.startswith(("run_dir=", "name=", "model.input_size="))]
    out = _run(env, "sweep", str(grid), *overrides, *TWO_NODES, "--root", str(tmp_path / "sweeps"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    index = json.loads((sweep_dir / "sweep.json").read_text())
    return sweep_dir, index


def _jobs(index: dict) -> tuple[str, str, Path]:
    (exp,) = index["experiments"]
    jobs = index["jobs"][exp["name"]]
    return jobs["train"], jobs["eval"], Path(exp["run_dir"])


def _node_pids(job_id: str, node: int, needle: str = "-m clickseg.train") -> list[int]:
    """Processes of a Slurm job on one node (no PID namespace here: all are visible)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in cmdline and "accelerate" not in cmdline and f"SLURM_JOB_ID={job_id}".encode() in environ \
                and f"SLURM_NODEID={node}".encode() in environ:
            pids.append(int(entry))
    return pids


def _reference(run_dir: Path, ref_dir: Path) -> dict:
    """The same training once more, uninterrupted, as 2 processes on one node outside Slurm."""
    from jobs.tasks import train_task

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["run_dir"] = str(ref_dir)
    cfg["train"]["num_processes"] = 2
    cfg["executor"].update(nodes=1, cpus_per_task=2)  # one thread per process, as on each node
    ref_dir.mkdir()
    (ref_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    train_task(str(ref_dir))
    return checkpoint.load(rundir.list_checkpoints(ref_dir)[-1][1])


def test_two_node_training_is_preempted_requeued_and_ends_as_if_uninterrupted(slurm_2node, builtin_dirs, tmp_path):
    env = slurm_2node
    sweep_dir, index = _sweep(tmp_path, builtin_dirs, env)
    job_id, eval_id, run_dir = _jobs(index)
    _wait(lambda: rundir.list_checkpoints(run_dir), 300, "the first epoch checkpoint", poll_s=0.2, env=env)
    status = _run(env, "status", str(sweep_dir))
    assert "RUNNING" in status.stdout and "clickseg-node[1-2]" in status.stdout, status.stdout
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=60, env={**os.environ, **env})
    state = _wait(lambda: (rundir.read_state(run_dir) if job_id not in _queue(env) and eval_id not in _queue(env)
                           else None), 600, "the requeued job and its evaluation to end", env=env)

    assert state.status is Status.DONE, state
    assert state.hosts == NODES  # world size 2: rank 0 on the first node, rank 1 on the second
    assert len(state.rank_param_checksums) == 2 and len(set(state.rank_param_checksums)) == 1, state
    logs = [(run_dir / f"train_node{k}.log").read_text() for k in (0, 1)]
    for k, log in enumerate(logs):
        assert log.count("$ ") == 2, "each node ran once, was requeued, and ran again"
        assert f"--machine_rank {k} --main_process_ip clickseg-node1" in log
    stops = [set(re.findall(rf"\[rank {k} on {NODES[k]}\] stop requested: stopping after step (\d+)", log))
             for k, log in enumerate(logs)]
    assert len(stops[0]) == 1 and stops[0] == stops[1], stops  # both nodes stopped at the same step
    reads = [re.search(rf"\[rank {k} of 2 on {NODES[k]}\] reads \d+ of (\d+) shards: (.*)", log)
             for k, log in enumerate(logs)]
    shards_0, shards_1 = (set(m.group(2).split()) for m in reads)
    assert not shards_0 & shards_1 and len(shards_0 | shards_1) == int(reads[0].group(1))  # disjoint, all read
    interrupt_step = int(next(iter(stops[0])))
    assert f"batch {interrupt_step % 12}, step {interrupt_step}" in logs[0]  # resumed where both stopped

    results = rundir.read_results(run_dir)
    assert sorted(r["epoch"] for r in results if r["protocol"] == "center") == [1, 2, 3]  # the eval job followed
    status = _run(env, "status", str(sweep_dir))
    assert status.returncode == 0 and status.stdout.count("COMPLETED") == 2, status.stdout
    assert "clickseg-node1,clickseg-node2" in status.stdout, status.stdout

    resumed = checkpoint.load(rundir.list_checkpoints(run_dir)[-1][1])
    reference = _reference(run_dir, tmp_path / "reference")
    assert resumed["step"] == reference["step"] == 3 * 12
    for key, value in reference["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0, msg=key)


def test_a_lost_node_fails_the_job_cleanly_and_a_resubmission_resumes(slurm_2node, builtin_dirs, tmp_path):
    env = slurm_2node
    sweep_dir, index = _sweep(tmp_path, builtin_dirs, env, **{"train.epochs": 4})
    job_id, eval_id, run_dir = _jobs(index)
    _wait(lambda: rundir.list_checkpoints(run_dir), 300, "the first epoch checkpoint", poll_s=0.2, env=env)
    lost = _wait(lambda: _node_pids(job_id, node=1), 60, "the training process on the second node", 0.1, env)
    t0 = time.time()
    for pid in lost:
        os.kill(pid, signal.SIGKILL)
    state = _wait(lambda: (rundir.read_state(run_dir) if job_id not in _queue(env) and eval_id not in _queue(env)
                           else None), 180, "the job to fail and its evaluation to end", env=env)
    assert time.time() - t0 < 180  # nothing hangs
    assert state.status is Status.FAILED, state
    assert "node 1 (clickseg-node2): the training exited with code" in state.error, state.error
    done = [e for e, _ in rundir.list_checkpoints(run_dir)]
    assert done and done[-1] < 4

    status = _run(env, "status", str(sweep_dir))
    assert "FAILED" in status.stdout and "node 1 (clickseg-node2)" in status.stdout, status.stdout
    again = _run(env, "resubmit", str(sweep_dir))
    assert again.returncode == 0 and "1 experiment(s) resubmitted" in again.stdout, again.stdout + again.stderr
    index = json.loads((sweep_dir / "sweep.json").read_text())
    new_job, new_eval, _ = _jobs(index)
    assert new_job != job_id
    state = _wait(lambda: (rundir.read_state(run_dir) if new_job not in _queue(env) and new_eval not in _queue(env)
                           else None), 600, "the resubmitted job to end", env=env)
    assert state.status is Status.DONE, state
    log = (run_dir / "train_node0.log").read_text()
    assert f"from epoch_{done[-1]:04d}.pt: epoch {done[-1]}, batch 0" in log, log[-3000:]
    assert [e for e, _ in rundir.list_checkpoints(run_dir)] == [1, 2, 3, 4]
