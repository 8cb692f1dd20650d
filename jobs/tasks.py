"""The functions that jobs run (pickled by submitit; they import only the library)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import submitit

from clickseg import rundir
from clickseg.config import load_config


def rendezvous_port() -> int:
    """The port of the first node's rendezvous: derived from the Slurm job id (the same on every
    node of the job, and different for two jobs sharing a node), else a free local port."""
    job = os.environ.get("SLURM_JOB_ID")
    if job and job.isdigit():
        return 20000 + int(job) % 20000
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The accelerate launcher of the training running in this job process, for checkpoint(): the
# TrainJob that submitit's signal handler calls may not be the instance that started it.
_launcher: subprocess.Popen | None = None


def accelerate_command(config_path: str, num_processes: int, num_machines: int = 1, machine_rank: int = 0,
                       main_ip: str = "127.0.0.1", use_cpu: bool = True, mixed_precision: str = "no") -> list[str]:
    """``accelerate launch`` for one node of a (possibly multi-node) training.

    On CPU, several processes need ``--multi_gpu`` plus ``ACCELERATE_USE_CPU=1``
    (``--cpu --num_processes 2`` silently starts one process).
    """
    total = num_processes * num_machines
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--num_processes", str(total), "--num_machines", str(num_machines),
           "--mixed_precision", mixed_precision, "--dynamo_backend", "no"]
    if total > 1:
        cmd += ["--multi_gpu"]
    elif use_cpu:
        cmd += ["--cpu"]
    if num_machines > 1:
        cmd += ["--machine_rank", str(machine_rank), "--main_process_ip", main_ip]
    if total > 1:  # never accelerate's fixed default: two jobs on one node would collide
        cmd += ["--main_process_port", str(rendezvous_port())]
    return cmd + ["-m", "clickseg.train", config_path]


class TrainJob(submitit.helpers.Checkpointable):
    """A requeueable training job: ``TrainJob(run_dir)()`` trains through accelerate.

    On Slurm's warning signal (USR2, before a time limit or on preemption)
    submitit calls :meth:`checkpoint`: the training processes are told to stop
    (they write an interrupt checkpoint at the current step and exit), and a
    fresh ``TrainJob`` for the same run is requeued; it resumes from that
    checkpoint. A training that fails with an error raises, so the job ends
    FAILED and is not requeued.
    """

    STOP_TIMEOUT_S = 60.0

    def __init__(self, run_dir: str) -> None:
        self.run_dir = str(run_dir)

    def __call__(self) -> str:
        return train_task(self.run_dir)

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        proc = _launcher
        deadline = time.monotonic() + self._stop_timeout()
        # The launcher ignores USR2; the training processes save and exit. They may sit in their
        # own sessions (torch's elastic agent starts each rank with one), so every descendant of
        # the launcher is signalled; one still starting up ignores it (inherited), so repeat.
        while proc is not None and not _exited(proc.pid) and time.monotonic() < deadline:
            _signal_all(_descendants(proc.pid), signal.SIGUSR2)
            time.sleep(0.5)
        return submitit.helpers.DelayedSubmission(TrainJob(self.run_dir))

    def _stop_timeout(self) -> float:
        """Wait at most until 10 s before Slurm's kill, so that submitit can still requeue."""
        try:
            delay = load_config(rundir.config_path(self.run_dir)).executor.signal_delay_s
        except Exception:  # an unreadable config must not break the requeue
            return self.STOP_TIMEOUT_S
        return max(1.0, min(self.STOP_TIMEOUT_S, delay - 10.0))


def _descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (from /proc), whatever their session or process group."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _exited(pid: int) -> bool:
    """Whether child ``pid`` has exited, without reaping it. (This runs in a signal handler while
    the main thread is inside ``Popen.wait``, which holds the lock ``Popen.poll`` needs.)"""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _ignore_usr2() -> None:
    """In the accelerate launcher: ignore USR2 (inherited by the training processes, which
    install their own handler), so Slurm's signal stops training cleanly instead of killing it."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def train_task(run_dir: str) -> str:
    """Train one experiment (resuming from its last checkpoint) through accelerate."""
    import torch

    run = Path(run_dir)
    cfg = load_config(rundir.config_path(run))
    holder = rundir.training_lock_holder(run)
    if holder and holder.get("slurm_job") != rundir.slurm_job_id():
        # Refused here, before the training is launched, so the running one's state is untouched.
        raise rundir.RunLockedError(f"{run} is in use by a training: pid {holder.get('pid')} on "
                                    f"{holder.get('host')}, Slurm job {holder.get('slurm_job') or '-'}")
    use_cpu = not torch.cuda.is_available()
    env = dict(os.environ)
    nodes, rank, main_ip = 1, 0, "127.0.0.1"
    try:
        import submitit
        job = submitit.JobEnvironment()
        nodes, rank, main_ip = job.num_nodes, job.node, job.hostnames[0]
    except RuntimeError:  # not inside a submitit job
        pass
    if use_cpu:
        env["ACCELERATE_USE_CPU"] = "1"
        # MKL's results otherwise depend on memory alignment: two identical CPU runs drifted apart
        # (loss 0.3051 vs 0.3089 after 160 steps); with this they are bitwise equal, at no cost seen.
        env.setdefault("MKL_CBWR", "AUTO,STRICT")
        cpus = int(env.get("SLURM_CPUS_PER_TASK", cfg.executor.cpus_per_task))
        env["OMP_NUM_THREADS"] = str(max(1, cpus // cfg.train.num_processes))
    cmd = accelerate_command(str(rundir.config_path(run)), cfg.train.num_processes, nodes, rank, main_ip,
                             use_cpu, cfg.train.mixed_precision)
    log_path = run / f"train_node{rank}.log"
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        global _launcher
        proc = _launcher = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd(),
                                            start_new_session=True, preexec_fn=_ignore_usr2)
        try:
            proc.wait()
        except submitit.core.utils.UncompletedJobError as e:  # raised by submitit's USR2 handler
            # The training has saved and stopped, but submitit will not requeue it (out of requeues).
            if rank == 0:
                rundir.mark_failed(run, f"stopped and not requeued: {e}")
            raise
        except KeyboardInterrupt:  # a cancelled local job (submitit sends SIGINT): end the training too
            _signal_all([*_descendants(proc.pid), proc.pid], signal.SIGKILL)  # it runs in its own session
            raise
        finally:
            _launcher = None
    if proc.returncode != 0:
        tail = log_path.read_text()[-4000:]
        if "RunLockedError" not in tail:  # a refused second start: the state belongs to the running one
            host = socket.gethostname()
            rundir.mark_failed(run, f"the training exited with code {proc.returncode}; {log_path}:\n{tail}",
                               source=f"node {rank} ({host})" if nodes > 1 else "")
        raise RuntimeError(f"training of {run} failed with exit code {proc.returncode}; see {log_path}:\n{tail}")
    return str(run)


def eval_task(run_dir: str) -> int:
    """Evaluate each checkpoint of an experiment as it appears, until its training has ended."""
    import torch

    from clickseg.eval.evaluate import follow_run

    return follow_run(run_dir, device="cuda" if torch.cuda.is_available() else "cpu")


class EvalJob(submitit.helpers.Checkpointable):
    """The evaluation job of one experiment, requeued like training on Slurm's warning signal
    (it outlives a training that is requeued); the requeued job skips what is already evaluated."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = str(run_dir)

    def __call__(self) -> int:
        return eval_task(self.run_dir)
