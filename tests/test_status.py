"""``launch.py status`` (and ``--watch``) and ``cancel`` on sweep directories made of plain files:
the one sweep.json shape and the previous ones, the states of local jobs, the watch view."""
import io
import json
import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path


import launch
from clickseg import rundir
from clickseg.rundir import Status
from jobs.status import cancel_sweep, local_job_alive, sweep_rows
from jobs.sweep import process_start, read_index
from jobs.watch import View, format_line, watch

REPO = Path(__file__).resolve().parents[1]
CONFIG = "train: {epochs: 4, samples_per_epoch: 800, batch_size: 8}\nexecutor: {type: local}\n"


def _sweep(tmp_path: Path, names=("a",), executor="local", jobs=None, launcher=True, **extra) -> Path:
    sweep = tmp_path / "demo-20240101-000000"
    exps = []
    for name in names:
        run = sweep / name
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(CONFIG)
        exps.append({"name": name, "run_dir": str(run), "point": {}})
    index = {"id": sweep.name, "experiments": exps, "executor": executor, "jobs": jobs or {}, "arrays": [], **extra}
    if launcher:
        index["launcher"] = {"host": socket.gethostname(), "pid": os.getpid(), "start": process_start(os.getpid())}
    (sweep / "sweep.json").write_text(json.dumps(index))
    return sweep


def _result(sweep: Path, job_id: str, outcome: str = "success", value=0) -> None:
    folder = sweep / "submitit" / job_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{job_id}_0_result.pkl").write_bytes(pickle.dumps((outcome, value)))


def _job_process(sweep: Path) -> subprocess.Popen:
    """A process whose command line is that of one of the sweep's local submitit jobs."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m", "submitit.local._local",
                             f"{sweep}/submitit/%j"])
    deadline = time.time() + 30  # a loaded machine: wait until /proc shows its command line
    while not local_job_alive(sweep, str(proc.pid)) and time.time() < deadline:
        time.sleep(0.05)
    return proc


def _row(sweep: Path, name: str = "a") -> dict:
    return next(r for r in sweep_rows(sweep) if r["experiment"] == name)


def test_line_of_a_running_experiment_from_its_run_directory(tmp_path):
    job = None
    try:
        sweep = _sweep(tmp_path, ("a", "b"))
        job = _job_process(sweep)
        index = json.loads((sweep / "sweep.json").read_text())
        index["jobs"] = {"a": {"train": "7", "eval": str(job.pid)}}
        (sweep / "sweep.json").write_text(json.dumps(index))
        run = sweep / "a"
        with rundir.TrainingLock(run):
            rundir.write_state(run, Status.RUNNING, 2, 250, total_steps=400, steps_per_s=0.5)
            for epoch, miou in ((1, 0.5), (2, 0.61)):
                rundir.append_result(run, {"experiment": "a", "epoch": epoch, "dataset": "davis",
                                           "protocol": "center", "metrics": {"mIoU@1": miou}})
            rundir.append_result(run, {"experiment": "a", "epoch": 2, "dataset": "davis", "protocol": "random",
                                       "metrics": {"mIoU@1": 0.1}})
            rows = sweep_rows(sweep)
        # In epoch 3 of 4, step 250 of 400 at 0.5 steps/s of 8 samples: 300 s left.
        assert format_line(rows[0]) == ("a  RUNNING    ep 3/4  step 250/400  4 samples/s  ETA 5m00s  eval RUNNING  "
                                        "mIoU@1 davis 0.6100 (ep 2)")
        assert format_line(rows[1]) == "b  PENDING"
        job.kill()
        job.wait()
        assert _row(sweep)["eval_state"] == "ENDED?"  # gone without a result: killed
        _result(sweep, str(job.pid))
        row = _row(sweep)
        assert (row["state"], row["eval_state"]) == ("ENDED?", "COMPLETED")  # the lock is released
        assert format_line(row) == "a  ENDED?     ep 2/4  step 250/400  eval COMPLETED  mIoU@1 davis 0.6100 (ep 2)"
        rundir.write_state(run, Status.DONE, 4, 400, total_steps=400)
        _result(sweep, "7")
        assert format_line(_row(sweep)).startswith("a  COMPLETED  ep 4/4  step 400/400  eval COMPLETED")
    finally:
        if job is not None and job.poll() is None:
            job.kill()


def test_local_job_states_from_the_process_and_the_result_file(tmp_path):
    sweep = _sweep(tmp_path, ("a", "b", "c"),
                   jobs={"a": {"train": "11", "eval": "12"}, "b": {"train": "13", "eval": "14"}})
    job = _job_process(sweep)
    try:
        index = json.loads((sweep / "sweep.json").read_text())
        index["jobs"]["a"]["train"] = str(job.pid)
        (sweep / "sweep.json").write_text(json.dumps(index))
        _result(sweep, "12")
        _result(sweep, "13", "error", "Traceback ...\nRunLockedError: in use")
        rows = {r["experiment"]: r for r in sweep_rows(sweep)}
        assert (rows["a"]["state"], rows["a"]["eval_state"]) == ("STARTING", "COMPLETED")  # nothing recorded yet
        assert (rows["b"]["state"], rows["b"]["eval_state"]) == ("FAILED", "ENDED?")
        assert (rows["c"]["state"], rows["c"]["eval_state"]) == ("PENDING", "-")
    finally:
        job.kill()
        job.wait()
    index["launcher"]["start"] = -1  # the process that ran the sweep is gone
    (sweep / "sweep.json").write_text(json.dumps(index))
    assert _row(sweep, "c")["state"] == "NOT RUN"
    index["launcher"]["host"] = "elsewhere"
    (sweep / "sweep.json").write_text(json.dumps(index))
    assert _row(sweep, "a")["eval_state"] == "COMPLETED" and _row(sweep, "b")["eval_state"] == "?"


def _fake_squeue(tmp_path: Path, monkeypatch, listing: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text(f"#!/bin/sh\nprintf '{listing}'\n")
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def test_sweep_json_of_the_previous_shapes_is_read(tmp_path, monkeypatch):
    _fake_squeue(tmp_path, monkeypatch, "101_1 RUNNING\\n102_1 PENDING\\n")
    old_slurm = {"train": ["101_0", "101_1"], "eval": ["102_0", "102_1"],
                 "arrays": [{"experiments": ["a", "b"], "train": "101", "eval": "102"}]}
    sweep = _sweep(tmp_path, ("a", "b"), launcher=False)
    index = json.loads((sweep / "sweep.json").read_text())
    del index["executor"], index["arrays"]
    index["jobs"] = old_slurm
    (sweep / "sweep.json").write_text(json.dumps(index))
    new = read_index(sweep)
    assert new["executor"] == "slurm" and new["arrays"] == old_slurm["arrays"]
    assert new["jobs"] == {"a": {"train": "101_0", "eval": "102_0"}, "b": {"train": "101_1", "eval": "102_1"}}
    rundir.write_state(sweep / "a", Status.DONE, 4, 400)
    _result(sweep, "102_0")
    rows = sweep_rows(sweep)
    assert [(r["train_job"], r["state"], r["eval_job"], r["eval_state"]) for r in rows] == [
        ("101_0", "COMPLETED", "102_0", "COMPLETED"), ("101_1", "RUNNING", "102_1", "PENDING")]

    # the previous local shape: per experiment {train, eval}, no executor recorded (the configs say local)
    index["jobs"] = {"a": {"train": "5", "eval": "6"}}
    (sweep / "sweep.json").write_text(json.dumps(index))
    new = read_index(sweep)
    assert (new["executor"], new["jobs"], new["arrays"]) == ("local", {"a": {"train": "5", "eval": "6"}}, [])


def test_the_view_off_a_terminal_prints_changes_and_every_period(tmp_path):
    now = [1000.0]
    out = io.StringIO()
    view = View(out, every_s=30, tty=False, clock=lambda: now[0], title="sweep s")
    row = {"experiment": "a", "state": "RUNNING", "eval_state": "RUNNING", "epoch": 0, "epochs": 2, "step": 5,
           "total_steps": 20, "steps_per_s": 1.0, "samples_per_s": 8.0, "eta_s": 15.0, "mIoU@1": {}, "eval_epoch": {}}
    pending = {**row, "experiment": "b", "state": "PENDING", "eval_state": "-", "step": 0, "steps_per_s": 0.0,
               "samples_per_s": None, "eta_s": None}

    def lines():
        text = out.getvalue()
        out.seek(0)
        out.truncate()
        return [line.split(" ", 1)[1] for line in text.splitlines()]

    view.update([row, pending])
    assert lines() == ["sweep s: 1 RUNNING, 1 PENDING",
                       "a  RUNNING    ep 1/2  step 5/20  8 samples/s  ETA 15s  eval RUNNING",
                       "b  PENDING"]
    now[0] += 10
    view.update([{**row, "step": 9}, pending])
    assert lines() == []  # a poll with no change prints nothing
    now[0] += 10
    done = {**row, "epoch": 1, "step": 10, "mIoU@1": {"davis": 0.5}, "eval_epoch": {"davis": 1}}
    view.update([done, pending])
    assert lines() == ["a  RUNNING    ep 2/2  step 10/20  8 samples/s  ETA 15s  eval RUNNING  "
                       "mIoU@1 davis 0.5000 (ep 1)"]
    now[0] += 15
    view.update([{**done, "step": 15}, pending])  # 35 s since the last summary: experiments under way
    assert lines() == ["sweep s: 1 RUNNING, 1 PENDING",
                       "a  RUNNING    ep 2/2  step 15/20  8 samples/s  ETA 15s  eval RUNNING  "
                       "mIoU@1 davis 0.5000 (ep 1)"]
    view.message("[sweep] note")
    view.close("sweep s done")
    assert out.getvalue() == "[sweep] note\nsweep s done\n"


def test_the_view_on_a_terminal_redraws_its_block_in_place():
    out = io.StringIO()
    view = View(out, tty=True, title="sweep s")
    row = {"experiment": "a", "state": "PENDING", "eval_state": "-", "epoch": 0, "epochs": 2, "step": 0,
           "total_steps": 0, "steps_per_s": 0.0, "samples_per_s": None, "eta_s": None, "mIoU@1": {}, "eval_epoch": {}}
    view.update([row, {**row, "experiment": "b"}])
    first = out.getvalue()
    assert first.count("\n") == 3 and "\x1b[3A" not in first
    view.update([{**row, "state": "STARTING"}, {**row, "experiment": "b"}])
    second = out.getvalue()[len(first):]
    assert second.startswith("\x1b[3A\r")  # back to the block's first line, then 3 lines redrawn
    assert second.count("\x1b[2K") == 3 and "a  STARTING" in second


def test_status_watch_of_an_ended_sweep_prints_once_and_exits_0(tmp_path, capsys):
    sweep = _sweep(tmp_path, ("a", "b"), jobs={"a": {"train": "21", "eval": "22"}, "b": {"train": "23", "eval": "24"}})
    for name in ("a", "b"):
        rundir.write_state(sweep / name, Status.DONE, 4, 400, total_steps=400)
        rundir.append_result(sweep / name, {"experiment": name, "epoch": 4, "dataset": "davis", "protocol": "center",
                                            "metrics": {"mIoU@1": 0.7}})
    for job in ("21", "22", "23", "24"):
        _result(sweep, job)
    assert launch.main(["status", str(sweep), "--watch", "--interval", "0.1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4, lines  # summary, one line per experiment, the final line
    assert lines[1].split(" ", 1)[1] == "a  COMPLETED  ep 4/4  step 400/400  eval COMPLETED  mIoU@1 davis 0.7000 (ep 4)"
    assert lines[-1] == f"sweep {sweep.name} done: 2 COMPLETED"


def test_status_watch_follows_a_sweep_until_it_ends(tmp_path, monkeypatch):
    sweep = _sweep(tmp_path, ("a",), jobs={"a": {"train": "31", "eval": "32"}})
    rundir.write_state(sweep / "a", Status.RUNNING, 1, 100, total_steps=400)
    lock = rundir.TrainingLock(sweep / "a").acquire()
    out = io.StringIO()

    def finish(_):
        rundir.write_state(sweep / "a", Status.DONE, 4, 400, total_steps=400)
        lock.release()
        _result(sweep, "31")
        _result(sweep, "32", "error", "Traceback")

    sleeps = []
    monkeypatch.setattr("jobs.watch.time.sleep", lambda s: (sleeps.append(s), finish(s)))
    assert watch(sweep, interval_s=5, stream=out) == 1  # the evaluation failed
    lines = out.getvalue().splitlines()
    assert sleeps == [5] and "a  RUNNING    ep 2/4  step 100/400  eval ENDED?" in lines[1]
    assert "a  COMPLETED  ep 4/4  step 400/400  eval FAILED" in lines[2]
    assert lines[-1] == f"sweep {sweep.name} done: 1 COMPLETED"


def test_cancel_of_a_local_sweep_stops_the_process_running_it(tmp_path):
    launcher = subprocess.Popen([sys.executable, "-c", "import time\ntry:\n    time.sleep(60)\n"
                                 "except KeyboardInterrupt:\n    print('stopped')"], stdout=subprocess.PIPE, text=True)
    sweep = _sweep(tmp_path, ("a",), launcher=False)
    job = _job_process(sweep)
    try:
        time.sleep(0.5)  # both started
        index = json.loads((sweep / "sweep.json").read_text())
        index["jobs"] = {"a": {"train": str(job.pid), "eval": "99999999"}}
        index["launcher"] = {"host": socket.gethostname(), "pid": launcher.pid, "start": process_start(launcher.pid)}
        (sweep / "sweep.json").write_text(json.dumps(index))
        assert cancel_sweep(sweep) == [str(job.pid)]
        assert launcher.communicate(timeout=30)[0].strip() == "stopped"
        assert job.poll() is None  # the process running the sweep stops its own jobs
        assert cancel_sweep(sweep) == [str(job.pid)]  # without it: the job processes themselves
        assert job.wait(timeout=30) != 0  # interrupted
    finally:
        for p in (launcher, job):
            if p.poll() is None:
                p.kill()


def test_status_and_report_do_not_import_torch(tmp_path):
    sweep = _sweep(tmp_path, ("a", "b"), jobs={"a": {"train": "41", "eval": "42"}})
    for name in ("a", "b"):
        rundir.write_state(sweep / name, Status.DONE, 2, 200, total_steps=200)
        for epoch in (1, 2):
            rundir.append_result(sweep / name, {
                "experiment": name, "epoch": epoch, "dataset": "davis", "protocol": "center", "instances": 2,
                "n_clicks": 2, "metrics": {"mIoU@1": 0.5, "mIoU@2": 0.6, "NoC@90": 2.0},
                "instance_names": ["x#1", "y#1"], "ious": [[0.4, 0.5], [0.6, 0.7]]})
    for job in ("41", "42"):
        _result(sweep, job)
    code = ("import launch, sys\n"
            f"assert launch.main(['status', {str(sweep)!r}]) == 0\n"
            f"assert launch.main(['status', {str(sweep)!r}, '--watch']) == 0\n"
            f"assert launch.main(['report', {str(sweep)!r}]) == 0\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'accelerate'))\n"
            "assert not heavy, heavy\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert (sweep / "miou.png").exists() and "| a | 2 | davis |" in out.stdout
