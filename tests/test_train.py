"""Training: resume after a kill, atomic checkpoints, 2-process DDP on CPU, bad samples."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from builtin_data import corrupt_copy, tiny_overrides
from clickseg import checkpoint, rundir
from clickseg.config import load_config
from clickseg.rundir import Status
from clickseg.train import train
from jobs.tasks import accelerate_command

REPO = Path(__file__).resolve().parents[1]


def _env(threads: int = 1) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), ACCELERATE_USE_CPU="1", PYTHONPATH=str(REPO))
    return env


def _final_state(run_dir: Path) -> dict:
    epoch, path = rundir.list_checkpoints(run_dir)[-1]
    return checkpoint.load(path)


def test_killed_training_resumes_and_matches_uninterrupted_run(builtin_dirs, tmp_path, monkeypatch):
    extra = {"train.epochs": 3, "train.samples_per_epoch": 48, "clicks.mode": "multi"}
    ref_dir = tmp_path / "ref"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same thread count as the subprocess: same float sums
    threads = torch.get_num_threads()
    try:
        train(load_config(REPO / "configs" / "demo.yaml", tiny_overrides(builtin_dirs, ref_dir, **extra)))
    finally:
        torch.set_num_threads(threads)

    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "clickseg.train", str(REPO / "configs" / "demo.yaml")]
    cmd += tiny_overrides(builtin_dirs, run_dir, **extra)
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = rundir.checkpoint_path(run_dir, 1)
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = [e for e, _ in rundir.list_checkpoints(run_dir)]
    assert done and done[-1] < 3, f"kill came too late (checkpoints {done})"
    for _, path in rundir.list_checkpoints(run_dir):
        checkpoint.load(path)  # every visible checkpoint is complete

    out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"resuming {run_dir} from epoch_{done[-1]:04d}.pt: epoch {done[-1]}, batch 0" in out.stdout + out.stderr
    resumed, reference = _final_state(run_dir), _final_state(ref_dir)
    assert resumed["epoch"] == reference["epoch"] == 3 and resumed["step"] == reference["step"]
    for key, value in reference["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0, msg=key)


def test_stop_signal_mid_epoch_writes_interrupt_checkpoint_and_resumes_exactly(builtin_dirs, tmp_path, monkeypatch):
    """SIGUSR2 (Slurm's warning before preemption or the time limit) in the middle of an epoch:
    training stops after that step with an interrupt checkpoint and resumes at the same batch,
    ending with weights identical to an uninterrupted run."""
    import clickseg.train as train_module

    extra = {"train.epochs": 2, "train.samples_per_epoch": 48, "clicks.mode": "multi"}
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    try:
        train(load_config(REPO / "configs" / "demo.yaml", tiny_overrides(builtin_dirs, ref_dir, **extra)))
        real, calls = train_module.ClickSimulation, []

        def signal_at_step_15(*args, **kwargs):  # 12 steps per epoch: step 15 is batch 3 of epoch 2
            calls.append(1)
            if len(calls) == 15:
                os.kill(os.getpid(), signal.SIGUSR2)
            return real(*args, **kwargs)

        cfg = load_config(REPO / "configs" / "demo.yaml", tiny_overrides(builtin_dirs, run_dir, **extra))
        monkeypatch.setattr(train_module, "ClickSimulation", signal_at_step_15)
        train(cfg)
        interrupt = checkpoint.load(rundir.interrupt_path(run_dir))
        assert (interrupt["epoch"], interrupt["batch_in_epoch"], interrupt["step"]) == (1, 3, 15)
        assert json.loads((run_dir / "train_state.json").read_text())["status"] == "interrupted"
        assert [e for e, _ in rundir.list_checkpoints(run_dir)] == [1]
        assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL  # the handler is removed again

        monkeypatch.setattr(train_module, "ClickSimulation", real)
        train(cfg)
    finally:
        torch.set_num_threads(threads)
    assert not rundir.interrupt_path(run_dir).exists()
    resumed, reference = _final_state(run_dir), _final_state(ref_dir)
    assert resumed["step"] == reference["step"] == 24
    for key, value in reference["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0, msg=key)


def test_stop_signal_on_the_last_batch_of_an_epoch_stops_after_its_checkpoint(builtin_dirs, tmp_path, monkeypatch):
    import clickseg.train as train_module

    extra = {"train.epochs": 3, "train.samples_per_epoch": 16, "clicks.mode": "single_pos"}
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    real, calls = train_module.ClickSimulation, []

    def signal_at_step_4(*args, **kwargs):  # 4 steps per epoch: the last batch of epoch 1
        calls.append(1)
        if len(calls) == 4:
            os.kill(os.getpid(), signal.SIGUSR2)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "ClickSimulation", signal_at_step_4)
    threads = torch.get_num_threads()
    try:
        train(load_config(REPO / "configs" / "demo.yaml", tiny_overrides(builtin_dirs, tmp_path / "run", **extra)))
    finally:
        torch.set_num_threads(threads)
    assert [e for e, _ in rundir.list_checkpoints(tmp_path / "run")] == [1]
    assert not rundir.interrupt_path(tmp_path / "run").exists()
    state = json.loads((tmp_path / "run" / "train_state.json").read_text())
    assert (state["status"], state["epoch"], state["step"]) == ("interrupted", 1, 4)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "epoch_0002.pt"
    checkpoint.atomic_save({"w": torch.ones(3)}, path)

    def broken_save(obj, f, *a, **k):
        f.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.atomic_save({"w": torch.zeros(3)}, path)
    with pytest.raises(OSError):
        checkpoint.atomic_save({"w": torch.zeros(3)}, tmp_path / "checkpoints" / "epoch_0003.pt")
    assert sorted(p.name for p in path.parent.iterdir()) == ["epoch_0002.pt"]
    assert torch.equal(checkpoint.load(path)["w"], torch.ones(3))
    assert [e for e, _ in rundir.list_checkpoints(tmp_path)] == [2]


def test_rendezvous_port_is_shared_by_the_nodes_of_a_job_and_differs_between_jobs(monkeypatch):
    def port(job_id: str, machine_rank: int) -> str:
        monkeypatch.setenv("SLURM_JOB_ID", job_id)
        cmd = accelerate_command("c.yaml", num_processes=4, num_machines=2, machine_rank=machine_rank,
                                 main_ip="node1", use_cpu=False)
        return cmd[cmd.index("--main_process_port") + 1]

    assert port("4711", 0) == port("4711", 1) != port("4712", 0)
    monkeypatch.setenv("SLURM_JOB_ID", "4711")
    single = accelerate_command("c.yaml", num_processes=2)  # one node, 2 processes: its own port too
    assert single[single.index("--main_process_port") + 1] == port("4711", 0)
    assert "--main_process_port" not in accelerate_command("c.yaml", num_processes=1)


def test_two_cpu_processes_stay_in_sync(builtin_dirs, tmp_path):
    run_dir = tmp_path / "ddp"
    cmd = accelerate_command(str(REPO / "configs" / "demo.yaml"), num_processes=2)
    cmd += tiny_overrides(builtin_dirs, run_dir, **{"train.samples_per_epoch": 16, "train.epochs": 1})
    out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    state = json.loads((run_dir / "train_state.json").read_text())
    sums = state["rank_param_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]
    assert state["step"] == 16 // (4 * 2)


def test_corrupt_samples_are_skipped_counted_and_training_goes_on(builtin_dirs, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    bad = tmp_path / "bad-shards"
    corrupt_copy(builtin_dirs["cocolvis-train"], bad)
    run_dir = tmp_path / "run"
    cfg = load_config(None, tiny_overrides(builtin_dirs, run_dir, **{"data.train": str(bad),
                                                                    "train.samples_per_epoch": 40,
                                                                    "train.epochs": 1}))
    train(cfg)
    assert json.loads((run_dir / "train_state.json").read_text())["status"] == "done"
    events = EventAccumulator(str(next((run_dir / "tb").rglob("events.out.tfevents*")).parent))
    events.Reload()
    skipped = [e.value for e in events.Scalars("train/skipped_samples")]
    assert skipped and skipped[-1] >= 1
    assert len(events.Scalars("train/loss")) == 10
    assert {"train/lr", "train/iou"} <= set(events.Tags()["scalars"])
    assert "train/samples" in events.Tags()["images"]


def test_training_shows_progress_in_its_log_and_state(builtin_dirs, tmp_path, monkeypatch, capfd):
    """A progress bar per epoch in the log, and the step and speed in train_state.json while it runs."""
    import clickseg.train as train_module

    states = []
    real_write = rundir.write_state

    def record(run_dir, status, epoch, step=0, **extra):
        states.append((status, epoch, step, extra.get("total_steps"), extra.get("steps_per_s") or None))
        return real_write(run_dir, status, epoch, step, **extra)

    monkeypatch.setattr(rundir, "write_state", record)
    monkeypatch.setattr(train_module.Progress.__init__, "__defaults__", (0.0,))  # a state write every step
    train(load_config(None, tiny_overrides(builtin_dirs, tmp_path / "run")))  # 2 epochs of 4 steps
    err = capfd.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err and "4/4" in err
    running = [s for s in states if s[0] is Status.RUNNING]
    assert sorted({s[2] for s in running}) == list(range(9))  # the start, then every step
    assert all(s[3] == 8 for s in running) and all(s[4] > 0 for s in running if s[2] > 0)  # with its speed
    assert states[-1][:3] == (Status.DONE, 2, 8)
    final = rundir.read_state(tmp_path / "run")
    assert final.status is Status.DONE and final.eta_s() is None


@pytest.mark.parametrize("bad_steps, fails, applied", [({2}, False, False), ({2, 3, 4}, True, False),
                                                      ({2}, False, True)])
def test_a_nonfinite_step_is_skipped_and_three_in_a_row_stop(builtin_dirs, tmp_path, monkeypatch, capfd,
                                                             bad_steps, fails, applied):
    """Default: the step is skipped, 3 in a row stop the run. ``train.max_nonfinite_steps=0``
    (SegNext's trainer): the step is applied and the weights become NaN."""
    import clickseg.train as train_module

    real, calls = train_module.normalized_focal_loss, []

    def loss_with_nan(logits, gt):
        calls.append(1)
        out = real(logits, gt)
        return out * float("nan") if len(calls) in bad_steps else out

    monkeypatch.setattr(train_module, "normalized_focal_loss", loss_with_nan)
    run_dir = tmp_path / "run"
    extra = {"train.max_nonfinite_steps": 0} if applied else {}
    cfg = load_config(None, tiny_overrides(builtin_dirs, run_dir, **extra))  # 2 epochs of 4 steps
    if fails:
        with pytest.raises(FloatingPointError, match="3 optimizer steps in a row ending at step 4"):
            train(cfg)
        assert rundir.read_state(run_dir).status is Status.FAILED
        return
    train(cfg)
    err = capfd.readouterr().out
    final = _final_state(run_dir)
    if applied:
        assert "non-finite" not in err and final["step"] == 8
        nan = [k for k, v in final["model"].items() if torch.isnan(v).all()]
        assert "image_encoder.patch_embed.proj.weight" in nan and "decoder.head.seg_conv.weight" in nan
        return
    assert err.count("non-finite gradient, step skipped") == 1 and "step 2: non-finite" in err
    assert final["step"] == 8 and all(torch.isfinite(v).all() for v in final["model"].values())


def test_compiled_training_keeps_plain_checkpoints_and_outputs(builtin_dirs, tmp_path, monkeypatch):
    """train.compile: the same checkpoint layout as an eager run (the training compiled with
    dynamo's eager backend: the wrapper, not the kernels, decides the layout; inductor compiles
    the training step in about 2 minutes here), and the model compiled by inductor gives the
    eager model's outputs within 1e-4."""
    from clickseg.model import load_checkpoint

    compiled_calls, real_compile = [], torch.compile

    def eager_backend_compile(model, **kwargs):
        compiled_calls.append(type(model).__name__)
        return real_compile(model, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", eager_backend_compile)
    run_dir = tmp_path / "run"
    small = {"model.arch": "nano_p8", "model.input_size": 64, "train.epochs": 1, "train.samples_per_epoch": 8,
             "data.min_object_area": 30}
    train(load_config(None, tiny_overrides(builtin_dirs, run_dir, **small, **{"train.compile": True})))
    monkeypatch.undo()
    assert compiled_calls == ["method"] * 3  # the image encoder, prompt encoder and decoder, in place
    compiled_ckpt = _final_state(run_dir)
    train(load_config(None, tiny_overrides(builtin_dirs, tmp_path / "eager", **small)))
    assert list(compiled_ckpt["model"]) == list(_final_state(tmp_path / "eager")["model"])  # no "_orig_mod."

    model = load_checkpoint(rundir.list_checkpoints(run_dir)[-1][1]).eval()
    images = torch.rand(2, 3, 64, 64)
    clicks = torch.full((2, 48, 3), -1.0)
    clicks[:, 0] = torch.tensor([20.0, 30.0, 1.0])
    prev = torch.zeros(2, 1, 64, 64)
    with torch.no_grad():
        eager = model(images, clicks, prev)
        compiled = torch.compile(model)(images, clicks, prev)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
