"""The run directory: the files through which training, evaluation, the jobs and the reports
talk to each other. Torch-free, so that ``launch.py status`` and ``report`` stay light.

::

    <run_dir>/config.yaml          the run's full config (written once by training, atomically)
    <run_dir>/train_state.json     TrainState: status, epoch, step, error, who wrote it
    <run_dir>/results.jsonl        one JSON row per evaluated (epoch, dataset, protocol), appended
    <run_dir>/checkpoints/epoch_NNNN.pt, interrupt.pt
    <run_dir>/.train.lock          held by the training for its whole life (see TrainingLock)
    <run_dir>/.eval.lock           held while one evaluation appends rows

Every file except the append-only results is replaced atomically (temporary file in the same
directory, fsync, rename), so a crash leaves the previous version or the new one, never half.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from enum import Enum
from pathlib import Path
from typing import IO, Any, Callable, Iterator, TypedDict

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
STATE_FILE = "train_state.json"
RESULTS_FILE = "results.jsonl"
CHECKPOINT_DIR = "checkpoints"
TRAIN_LOCK = ".train.lock"
EVAL_LOCK = ".eval.lock"
_CHECKPOINT_NAME = re.compile(r"^epoch_(\d{4,})\.pt$")


# --- paths -------------------------------------------------------------------------------------

def config_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CONFIG_FILE


def checkpoint_path(run_dir: str | Path, epoch: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"epoch_{epoch:04d}.pt"


def interrupt_path(run_dir: str | Path) -> Path:
    """The mid-epoch checkpoint written when a job is told to stop (preemption, time limit)."""
    return Path(run_dir) / CHECKPOINT_DIR / "interrupt.pt"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every complete epoch checkpoint of a run, by epoch."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT_NAME.match(p.name))]
    return sorted(found)


# --- atomic files ------------------------------------------------------------------------------

class DiskWriteError(OSError):
    """A file of the run could not be written; names the file and the free space left."""


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _free_space(folder: Path) -> str:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "free space unknown"
    return f"{free / 2**20:.1f} MiB free on that file system"


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary file next to ``path``, then rename it over ``path``:
    either the complete new file is there or the previous one is untouched. The file gets the
    mode a plain ``open`` would (0644 under umask 022). A failed write (a full disk, a quota)
    is raised as :class:`DiskWriteError` naming ``path`` and the free space."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError)) and not isinstance(e, DiskWriteError):
            # torch.save reports a short write as a RuntimeError ("unexpected pos ...").
            reason = "no space left on device" if getattr(e, "errno", None) == errno.ENOSPC else str(e)
            raise DiskWriteError(f"could not write {path}: {reason} ({_free_space(path.parent)})") from e
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


# --- training state ----------------------------------------------------------------------------

class Status(str, Enum):
    RUNNING = "running"
    INTERRUPTED = "interrupted"  # stopped on request at a checkpoint; a requeue resumes it
    DONE = "done"
    FAILED = "failed"

    @property
    def ended(self) -> bool:
        """No more checkpoints will come without a new start."""
        return self in (Status.DONE, Status.FAILED)


def _holder() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job": slurm_job_id()}


@dataclass
class TrainState:
    """``train_state.json``: what the training says about itself."""

    status: Status
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps done
    total_steps: int = 0  # steps of the whole training (epochs x steps per epoch)
    steps_per_s: float = 0.0  # recent training speed
    error: str = ""
    host: str = ""
    pid: int = 0
    slurm_job: str = ""
    time: float = 0.0
    hosts: list[str] | None = None  # the host of every rank, by rank
    node_errors: dict[str, str] | None = None  # failed: the error of each node that reported one
    rank_param_checksums: list[float] | None = None

    def eta_s(self) -> float | None:
        """Seconds left at the recorded speed (None before a speed is known)."""
        if self.status is not Status.RUNNING or self.steps_per_s <= 0 or not self.total_steps:
            return None
        return max(0, self.total_steps - self.step) / self.steps_per_s

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainState":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["status"] = Status(values.get("status", Status.RUNNING))
        return cls(**values)


def read_state(run_dir: str | Path) -> TrainState | None:
    """The recorded state, or None before the training has written one."""
    path = Path(run_dir) / STATE_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return TrainState.from_dict(json.loads(text))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: not a training state ({e})") from None


def write_state(run_dir: str | Path, status: Status, epoch: int, step: int = 0, **extra: Any) -> TrainState:
    """Record ``status`` (with this process's host, pid and Slurm job) atomically."""
    state = TrainState(Status(status), epoch, step, time=time.time(), **_holder(), **extra)
    data = asdict(state)
    data["status"] = state.status.value
    atomic_write_text(Path(run_dir) / STATE_FILE, json.dumps(data))
    return state


def mark_failed(run_dir: str | Path, error: str, source: str = "") -> None:
    """Record a failure with its error, keeping the epoch, step and hosts reached. ``source``
    (e.g. ``node 1 (host)``) names where it happened: failures of several sources of the same
    run (the nodes of one job) are all kept, in ``node_errors`` and joined in ``error``. Never
    raises: it runs while another error is being reported."""
    try:
        with _state_lock(run_dir):
            try:
                previous = read_state(run_dir)
            except ValueError:
                previous = None
            errors = dict(previous.node_errors or {}) if previous and previous.status is Status.FAILED else {}
            if source:
                errors[source] = error[-4000:]
            text = "\n".join(f"{k}: {v}" for k, v in errors.items()) if errors else error
            keep = {"hosts": previous.hosts, "total_steps": previous.total_steps} if previous else {}
            write_state(run_dir, Status.FAILED, previous.epoch if previous else 0, previous.step if previous else 0,
                        error=text[-8000:], node_errors=errors or None, **keep)
    except OSError as e:
        log.error("could not record the failure of %s: %s", run_dir, e)


@contextmanager
def _state_lock(run_dir: str | Path) -> Iterator[None]:
    """Serialises read-modify-write of the state file (the nodes of one job report at once)."""
    path = Path(run_dir) / ".state.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)


# --- results -----------------------------------------------------------------------------------

class ResultRow(TypedDict, total=False):
    """One line of ``results.jsonl``: an evaluated (experiment, epoch, dataset, protocol)."""

    experiment: str
    epoch: int  # 0 for a checkpoint evaluated on its own (launch.py eval --checkpoint)
    dataset: str
    protocol: str  # the label of every option that changes the numbers, e.g. random-c5-fliph
    clicker: str
    options: dict[str, Any]
    scaling_curve: bool  # a point of the mIoU@1-vs-K curve
    threshold: float
    n_clicks: int
    draws: int
    seed: int
    max_instances: int
    instances: int
    skipped_empty: int
    checkpoint: str
    seconds: float
    seconds_per_image: float
    metrics: dict[str, float]  # mIoU@k, NoC@t, NoF@t, 5-mIoU
    ci: dict[str, list[float]]  # 95% bootstrap interval of each metric over instances
    instance_names: list[str]
    ious: list[list[float]]  # (instances, clicks), averaged over draws
    draw_ious: list[list[list[float]]]  # (instances, draws, clicks), with several draws


_torn_reported: set[tuple[str, int]] = set()


def read_results(run_dir: str | Path) -> list[ResultRow]:
    """Every row of ``results.jsonl``. A last line without its newline is a row whose append was
    cut by a crash: it is reported once and ignored (its evaluation runs again). Any other
    line that is not JSON is an error naming the line."""
    path = Path(run_dir) / RESULTS_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    torn = lines.pop()  # "" when the file ends with a newline
    if torn.strip():
        key = (str(path), len(text))
        if key not in _torn_reported:
            _torn_reported.add(key)
            log.warning("%s: ignoring an incomplete last line (%d bytes, cut by a crash while it was "
                        "written); that result will be computed again", path, len(torn.encode()))
    rows = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise ValueError(f"{path}, line {n}: not valid JSON") from None
    return rows


def append_result(run_dir: str | Path, row: ResultRow) -> None:
    """Append one row as a single write under an exclusive lock of the file. An incomplete last
    line left by a crash is cut off first, so every row stays on a line of its own."""
    path = Path(run_dir) / RESULTS_FILE
    data = (json.dumps(row) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size:
            tail = os.pread(fd, min(size, 1 << 20), max(0, size - (1 << 20)))
            if not tail.endswith(b"\n"):
                keep = size - len(tail) + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
                os.ftruncate(fd, keep)
        try:
            os.write(fd, data)
            os.fsync(fd)
        except OSError as e:
            raise DiskWriteError(f"could not append to {path}: {e.strerror or e} "
                                 f"({_free_space(path.parent)})") from e
    finally:
        os.close(fd)  # releases the lock


# --- locks -------------------------------------------------------------------------------------

class RunLockedError(RuntimeError):
    """Another process holds the run directory's training lock."""


def slurm_job_id() -> str:
    """This process's Slurm job (``<array job>_<task>`` for array tasks), or ""."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID", "")


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process (no holder recorded yet)"
    job = f", Slurm job {holder['slurm_job']}" if holder.get("slurm_job") else ""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"])) if "since" in holder else "?"
    return f"pid {holder.get('pid')} on {holder.get('host')}{job}, since {since}"


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except ValueError:
        return {}


class TrainingLock:
    """An exclusive OS lock (``flock``) on ``<run_dir>/.train.lock``, held for the life of a
    training. The kernel releases it when the holder dies in any way, so a killed run never
    leaves a stale lock. A second training on the same directory is refused, naming the holder
    (host, pid, Slurm job); a requeued Slurm job waits up to ``takeover_s`` for the previous
    run of the same job id to exit."""

    def __init__(self, run_dir: str | Path, takeover_s: float = 120.0) -> None:
        self.path = Path(run_dir) / TRAIN_LOCK
        self.takeover_s = takeover_s
        self._fd: int | None = None

    def acquire(self) -> "TrainingLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        deadline = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read_holder(fd)
                mine = slurm_job_id()
                if mine and holder.get("slurm_job") == mine:  # our own job's previous run, exiting
                    deadline = deadline or time.monotonic() + self.takeover_s
                    if time.monotonic() < deadline:
                        time.sleep(0.5)
                        continue
                os.close(fd)
                raise RunLockedError(f"{self.path.parent} is in use by a training: {_describe(holder)}. "
                                     f"Refusing to start a second training on the same run directory "
                                     f"(lock {self.path}).") from None
            except OSError as e:  # a file system without flock: warn, do not block training
                log.warning("cannot lock %s (%s); two trainings on this run directory would not be "
                            "detected", self.path, e)
                break
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({**_holder(), "since": time.time()}).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "TrainingLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def training_lock_holder(run_dir: str | Path) -> dict[str, Any] | None:
    """Who holds the run's training lock (host, pid, slurm_job, since), or None when no process
    does: a state "running" without a holder is a training that died."""
    path = Path(run_dir) / TRAIN_LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd) or {"host": "?", "pid": "?"}
        except OSError:
            return None
        return None
    finally:
        os.close(fd)


@contextmanager
def evaluation_lock(run_dir: str | Path) -> Iterator[None]:
    """Held while an evaluation decides what to evaluate and appends its rows, so that two
    evaluations of one run (the sweep's eval job and a manual ``launch.py eval``) never evaluate
    the same checkpoint twice or interleave rows; the second waits for the first."""
    path = Path(run_dir) / EVAL_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("%s: waiting for the evaluation by %s", run_dir, _describe(_read_holder(fd)))
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({**_holder(), "since": time.time()}).encode(), 0)
        yield
    finally:
        os.close(fd)
