"""The run directory: one training per directory, crash states, torn result rows, file modes,
full disks, data checked before anything is created."""
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import shards
from builtin_data import tiny_overrides
from clickseg import checkpoint, rundir
from clickseg.config import ConfigError, load_config
from clickseg.eval.evaluate import evaluate_run
from clickseg.rundir import RunLockedError, Status
from clickseg.train import train

REPO = Path(__file__).resolve().parents[1]

HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from clickseg.rundir import TrainingLock
    lock = TrainingLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
""")


def _hold_lock(run_dir: Path, seconds: float = 120, **env) -> subprocess.Popen:
    """Another process holding the run's training lock, as a running training does."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir), str(seconds)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO), **env})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_training_on_a_locked_run_is_refused_naming_the_holder(builtin_dirs, tmp_path):
    run_dir = tmp_path / "run"
    holder = _hold_lock(run_dir, SLURM_JOB_ID="4242")
    try:
        with pytest.raises(RunLockedError) as err:
            train(load_config(None, tiny_overrides(builtin_dirs, run_dir)))
        message = str(err.value)
        assert f"pid {holder.pid} on {os.uname().nodename}" in message and "Slurm job 4242" in message
        assert str(run_dir) in message
        # Nothing of the running training was touched: no config, state or checkpoint written.
        assert sorted(p.name for p in run_dir.iterdir()) == [rundir.TRAIN_LOCK]
        assert rundir.training_lock_holder(run_dir)["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = _hold_lock(tmp_path)
    with pytest.raises(RunLockedError):
        rundir.TrainingLock(tmp_path).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert rundir.training_lock_holder(tmp_path) is None
    lock = rundir.TrainingLock(tmp_path).acquire()
    assert rundir.training_lock_holder(tmp_path)["pid"] == os.getpid()
    lock.release()
    assert rundir.training_lock_holder(tmp_path) is None


def test_a_requeued_job_of_the_same_slurm_job_takes_over(tmp_path, monkeypatch):
    """The previous run of the same array task is still exiting: wait for it; another job is refused."""
    holder = _hold_lock(tmp_path, seconds=2, SLURM_ARRAY_JOB_ID="77", SLURM_ARRAY_TASK_ID="3")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")
    with pytest.raises(RunLockedError, match="Slurm job 77_3"):
        rundir.TrainingLock(tmp_path).acquire()
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    t0 = time.monotonic()
    lock = rundir.TrainingLock(tmp_path, takeover_s=30).acquire()
    assert holder.poll() is not None and time.monotonic() - t0 < 30
    holder.wait()
    lock.release()


def test_missing_training_data_is_refused_before_anything_is_created(builtin_dirs, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"data\.train=/nonexistent: no manifest\.json"):
        train(load_config(None, tiny_overrides(builtin_dirs, run_dir, **{"data.train": "/nonexistent"})))
    with pytest.raises(ConfigError, match=r"data\.eval\.davis=.*/nope: no manifest\.json"):
        train(load_config(None, tiny_overrides(builtin_dirs, run_dir) + [f"data.eval.davis={tmp_path}/nope"]))
    assert not run_dir.exists()


def test_an_error_in_training_is_recorded_as_failed(builtin_dirs, tmp_path, monkeypatch):
    import clickseg.train

    calls = []

    def broken_loss(logits, gt):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("loss exploded at the third step")
        return logits.float().mean() * 0

    monkeypatch.setattr(clickseg.train, "normalized_focal_loss", broken_loss)
    run_dir = tmp_path / "run"
    cfg = load_config(None, tiny_overrides(builtin_dirs, run_dir, **{"train.epochs": 2, "train.samples_per_epoch": 8,
                                                                     "train.batch_size": 2}))
    with pytest.raises(RuntimeError, match="third step"):
        train(cfg)
    state = rundir.read_state(run_dir)
    assert state.status is Status.FAILED and state.status.ended
    assert state.error.startswith(f"rank 0 on {os.uname().nodename}: Traceback")
    assert "RuntimeError: loss exploded at the third step" in state.error
    assert state.pid == os.getpid()
    assert rundir.training_lock_holder(run_dir) is None  # released on the way out
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL  # and the stop handler removed
    from jobs.status import RECORDED_STATES
    assert RECORDED_STATES[state.status] == "FAILED"


def test_a_torn_last_result_line_is_ignored_once_and_recomputed(builtin_dirs, tmp_path, caplog):
    from test_eval import _fake_run

    run_dir = tmp_path / "run"
    _fake_run(builtin_dirs, run_dir)
    rows = evaluate_run(run_dir)
    assert len(rows) == 2
    path = run_dir / rundir.RESULTS_FILE
    text = path.read_text()
    first_end = text.index("\n") + 1
    path.write_text(text[:first_end + 200])  # the second row cut after 200 bytes by a crash
    with caplog.at_level(logging.WARNING, logger="clickseg.rundir"):
        assert [r["epoch"] for r in rundir.read_results(run_dir)] == [1]
        assert [r["epoch"] for r in rundir.read_results(run_dir)] == [1]
    warnings = [r.getMessage() for r in caplog.records if "incomplete last line" in r.getMessage()]
    assert len(warnings) == 1 and str(path) in warnings[0] and "200 bytes" in warnings[0]
    again = evaluate_run(run_dir)
    assert [r["epoch"] for r in again] == [2]
    assert again[0]["metrics"] == rows[1]["metrics"]
    lines = path.read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]  # the torn bytes are gone


def test_a_damaged_complete_line_is_an_error_naming_it(tmp_path):
    rundir.append_result(tmp_path, {"a": 1})
    with open(tmp_path / rundir.RESULTS_FILE, "a") as f:
        f.write("{not json\n")
    rundir.append_result(tmp_path, {"a": 2})
    with pytest.raises(ValueError, match=r"results\.jsonl, line 2: not valid JSON"):
        rundir.read_results(tmp_path)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_checkpoints_and_state_get_the_umask_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        checkpoint.atomic_save({"w": torch.ones(2)}, tmp_path / "checkpoints" / "epoch_0001.pt")
        rundir.write_state(tmp_path, Status.RUNNING, 1)
    finally:
        os.umask(old)
    assert (tmp_path / "checkpoints" / "epoch_0001.pt").stat().st_mode & 0o777 == mode
    assert (tmp_path / rundir.STATE_FILE).stat().st_mode & 0o777 == mode


FULL_DISK = textwrap.dedent("""
    import subprocess, sys, torch
    from clickseg import checkpoint
    folder = sys.argv[1]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", folder], check=True)
    checkpoint.atomic_save({"w": torch.ones(1000)}, folder + "/epoch_0001.pt")
    try:
        checkpoint.atomic_save({"w": torch.ones(1_000_000)}, folder + "/epoch_0002.pt")
    except OSError as e:
        print("ERROR", e)
    import os
    print("FILES", sorted(os.listdir(folder)))
    print("FIRST", float(checkpoint.load(folder + "/epoch_0001.pt")["w"].sum()))
""")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare for a private 1 MiB tmpfs")
def test_a_full_disk_names_the_file_and_the_free_space(tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", FULL_DISK,
                          str(folder)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert lines["ERROR"].startswith(f"could not write {folder}/epoch_0002.pt: ")
    assert "MiB free on that file system" in lines["ERROR"]
    assert lines["FILES"] == "['epoch_0001.pt']"  # no temporary file left, the previous checkpoint intact
    assert lines["FIRST"] == "1000.0"


HOLD_EVAL = textwrap.dedent("""
    import sys, time
    from clickseg.rundir import evaluation_lock
    with evaluation_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(2)
""")


def test_a_second_evaluation_waits_for_the_first(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD_EVAL, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "locked"
    t0 = time.monotonic()
    with rundir.evaluation_lock(tmp_path):
        waited = time.monotonic() - t0  # entered only once the other evaluation had finished (2 s)
    proc.wait()
    assert 1.5 < waited < 30


def test_a_run_with_checkpoints_is_resumed_only_with_its_own_config(builtin_dirs, tmp_path):
    run_dir = tmp_path / "run"
    short = {"train.epochs": 1, "train.samples_per_epoch": 8, "train.batch_size": 4}
    train(load_config(None, tiny_overrides(builtin_dirs, run_dir, **short)))
    saved = (run_dir / rundir.CONFIG_FILE).read_text()
    with pytest.raises(ConfigError, match=r"another config \(train\.lr: 0\.001 there, 0\.002 now\)"):
        train(load_config(None, tiny_overrides(builtin_dirs, run_dir, **short, **{"train.lr": 0.002})))
    assert (run_dir / rundir.CONFIG_FILE).read_text() == saved  # the first run's config untouched
    assert rundir.read_state(run_dir).status is Status.DONE
    train(load_config(None, tiny_overrides(builtin_dirs, run_dir, **{**short, "train.epochs": 2, "eval.n_clicks": 2})))  # training longer is a resume
    assert [e for e, _ in rundir.list_checkpoints(run_dir)] == [1, 2]


@pytest.mark.parametrize("damage", ["truncated", "altered", "missing"])
def test_a_damaged_training_shard_is_refused_before_any_step(builtin_dirs, tmp_path, damage):
    data = tmp_path / "train"
    shutil.copytree(builtin_dirs["cocolvis-train"], data)
    name = json.loads((data / "manifest.json").read_text())["shards"][-1]["name"]
    shard = data / name
    raw = shard.read_bytes()
    if damage == "truncated":
        shard.write_bytes(raw[:len(raw) // 2])
    elif damage == "altered":
        middle = len(raw) // 2
        shard.write_bytes(raw[:middle] + bytes(b ^ 0xFF for b in raw[middle:middle + 16]) + raw[middle + 16:])
    else:
        shard.unlink()
    run_dir = tmp_path / "run"
    with pytest.raises(shards.ManifestMismatchError, match=re.escape(str(shard))) as err:
        train(load_config(None, tiny_overrides(builtin_dirs, run_dir, **{"data.train": data})))
    assert {"truncated": "size", "altered": "sha256", "missing": "missing"}[damage] in str(err.value)
    assert not (run_dir / rundir.CONFIG_FILE).exists() and not rundir.list_checkpoints(run_dir)
    state = rundir.read_state(run_dir)  # status shows why the run did not start
    assert state.status is Status.FAILED and "ManifestMismatchError" in state.error and name in state.error
