"""Per-checkpoint evaluation: rows appended once per (epoch, dataset, protocol), TensorBoard at step = epoch."""
import json

import numpy as np
import torch

from builtin_data import tiny_overrides
from clickseg import checkpoint, rundir
from clickseg.config import load_config, save_config, to_dict
from clickseg.eval.evaluate import evaluate_dataset, evaluate_run
from clickseg.rundir import read_results
from clickseg.eval.metrics import evaluate_instance
from clickseg.model import build_segnext, load_checkpoint
from clickseg.predictor import Predictor


def _fake_run(builtin_dirs, run_dir, epochs=(1, 2)):
    cfg = load_config(None, tiny_overrides(builtin_dirs, run_dir))
    save_config(cfg, run_dir / "config.yaml")
    for epoch in epochs:
        torch.manual_seed(epoch)
        model = build_segnext("tiny", 224)
        checkpoint.atomic_save({"format": "clickseg", "version": 1, "model": model.state_dict(),
                                "epoch": epoch, "config": to_dict(cfg)}, rundir.checkpoint_path(run_dir, epoch))
    return cfg


def test_evaluate_run_appends_each_checkpoint_once(builtin_dirs, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    cfg = _fake_run(builtin_dirs, run_dir)
    rows = evaluate_run(run_dir)
    assert [(r["epoch"], r["dataset"], r["protocol"]) for r in rows] == [(1, "davis", "center"), (2, "davis", "center")]
    assert all(r["ci"]["mIoU@1"][0] <= r["metrics"]["mIoU@1"] <= r["ci"]["mIoU@1"][1] for r in rows)
    assert evaluate_run(run_dir) == []  # nothing evaluated twice
    _fake_run(builtin_dirs, run_dir, epochs=(3,))
    assert [r["epoch"] for r in evaluate_run(run_dir)] == [3]
    stored = read_results(run_dir)
    assert [r["epoch"] for r in stored] == [1, 2, 3]
    for r in stored:
        ious = np.asarray(r["ious"])
        assert ious.shape == (r["instances"], cfg.eval.n_clicks) == (12, 3)
        assert r["metrics"]["mIoU@1"] == pytest_approx(ious[:, 0].mean())
        assert r["skipped_empty"] == 0
    events = EventAccumulator(str(run_dir / "tb" / "eval"))
    events.Reload()
    assert [(e.step, round(e.value, 6)) for e in events.Scalars("eval/davis/mIoU@1")] == [
        (r["epoch"], round(r["metrics"]["mIoU@1"], 6)) for r in stored]


def pytest_approx(v):
    import pytest
    return pytest.approx(v, abs=1e-6)


def test_evaluate_dataset_equals_a_plain_click_loop(builtin_dirs, tmp_path):
    """The evaluator's IoUs equal those of an independent loop over the predictor."""
    import shards

    cfg = _fake_run(builtin_dirs, tmp_path / "run", epochs=(1,))
    model = load_checkpoint(rundir.checkpoint_path(tmp_path / "run", 1))
    predictor = Predictor(model)
    result = evaluate_dataset(predictor, str(builtin_dirs["davis"]), cfg.eval)
    ious, skipped, names = result.mean_ious, result.skipped_empty, result.names
    assert result.ious.shape == (12, 1, cfg.eval.n_clicks) and result.images == 12
    expected = []
    for sample in shards.open_dataset(builtin_dirs["davis"]):
        gt = sample.objects[0].mask.astype(np.int64)
        predictor.set_image(sample.image)
        expected.append(evaluate_instance(predictor.predict, gt, cfg.eval.n_clicks, cfg.eval.threshold))
    np.testing.assert_array_equal(ious, np.asarray(expected))
    assert skipped == 0 and len(names) == len(expected)


def test_predictor_keeps_previous_mask_and_batches(builtin_dirs):
    torch.manual_seed(0)
    model = build_segnext("tiny", 224).eval()
    p = Predictor(model)
    image = (np.random.default_rng(0).random((150, 230, 3)) * 255).astype(np.uint8)
    p.set_image(image)
    first = p.predict([(40, 60, True)])
    second = p.predict([(40, 60, True), (100, 200, False)])
    assert first.shape == (150, 230) and first.dtype == np.float32
    batched = p.predict_batch([[(40, 60, True)], [(40, 60, True), (100, 200, False)]],
                              np.stack([np.zeros_like(first), first]))
    np.testing.assert_allclose(batched[0], first, atol=1e-5)
    np.testing.assert_allclose(batched[1], second, atol=1e-5)
    p.reset()
    np.testing.assert_allclose(p.predict([(40, 60, True)]), first, atol=1e-6)
    coords = p.to_model_coords([(149, 229, True), (0, 0, False)])
    assert coords.tolist() == [[223.0, 223.0, 1.0], [0.0, 0.0, 0.0]]


def test_protocol_overrides_and_scaling_curve_add_rows_without_overwriting(builtin_dirs, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    _fake_run(builtin_dirs, run_dir, epochs=(1,))
    evaluate_run(run_dir, overrides=["eval.max_instances=3"])
    before = (run_dir / "results.jsonl").read_text()
    overrides = ["eval.protocol=random", "eval.draws=2", "eval.n_clicks=2", "eval.max_instances=3",
                 "eval.scaling_curve=[1, 2]", "eval.flips=h", "eval.seed=1"]
    rows = evaluate_run(run_dir, overrides=overrides)
    assert [r["protocol"] for r in rows] == ["random-c2-s1-fliph", "random-c2-s1-fliph-K1r5@1",
                                             "random-c2-s1-fliph-K2r5@1"]
    assert (run_dir / "results.jsonl").read_text().startswith(before)  # appended, nothing rewritten
    assert evaluate_run(run_dir, overrides=overrides) == []
    more = evaluate_run(run_dir, overrides=["eval.max_instances=4", "eval.n_clicks=2"])  # new budget and limit
    assert [(r["protocol"], r["n_clicks"], r["max_instances"], r["instances"]) for r in more] == [("center", 2, 4, 4)]
    assert evaluate_run(run_dir, overrides=["eval.max_instances=4", "eval.n_clicks=2"]) == []
    main, k1, k2 = rows
    assert np.asarray(main["draw_ious"]).shape == (3, 2, 2) and np.asarray(main["ious"]).shape == (3, 2)
    assert main["metrics"]["draws"] == 2 and main["options"]["flips"] == "h" and not main["scaling_curve"]
    assert k1["scaling_curve"] and k1["n_clicks"] == 1 and k2["options"]["scaling"] == 2
    np.testing.assert_allclose(np.asarray(k1["draw_ious"])[:, :, 0], np.asarray(main["draw_ious"])[:, :, 0], atol=1e-6)
    assert k1["seconds_per_image"] > 0
    events = EventAccumulator(str(run_dir / "tb" / "eval"))
    events.Reload()
    assert "eval/davis/random-c2-s1-fliph/mIoU@1" in events.Tags()["scalars"]
    import pytest
    from clickseg.config import ConfigError
    with pytest.raises(ConfigError, match="eval"):
        evaluate_run(run_dir, overrides=["train.lr=1"])
    with pytest.raises(ConfigError, match="eval.flips"):
        evaluate_run(run_dir, overrides=["eval.flips=diagonal"])


def test_empty_objects_are_skipped_and_counted(builtin_dirs, tmp_path, monkeypatch):
    from clickseg.eval import evaluate as ev

    real = list(ev.instances(str(builtin_dirs["davis"]), 4))
    monkeypatch.setattr(ev, "instances", lambda d, limit=0: iter([real[0], None, real[1], None, real[2]]))
    model = build_segnext("tiny", 224)
    cfg = load_config(None, ["eval.protocol=random", "eval.n_clicks=1", "eval.draws=2"]).eval
    result = ev.evaluate_dataset(Predictor(model), str(builtin_dirs["davis"]), cfg, "davis")
    assert result.skipped_empty == 2 and result.ious.shape == (3, 2, 1) and len(result.names) == 3


def test_launch_eval_checkpoint_prints_tables_and_saves_ious(builtin_dirs, tmp_path, capsys):
    """``launch.py eval --checkpoint`` on a SegNext-format file: one table per dataset, IoU arrays saved."""
    import launch
    from pathlib import Path

    ckpt = Path(__file__).parent / "data" / "segnext_ref" / "sax1_448.pth"
    out = tmp_path / "ev"
    rc = launch.main(["eval", "--checkpoint", str(ckpt), "--dataset", f"davis={builtin_dirs['davis']}",
                      "--dataset", f"again={builtin_dirs['davis']}", "--out", str(out), "eval.n_clicks=5"])
    assert rc == 0
    text = capsys.readouterr().out
    ious = np.load(out / "davis.center.ious.npy")
    assert ious.shape == (12, 1, 5)
    assert np.array_equal(np.load(out / "again.center.ious.npy"), ious)
    assert json.loads((out / "davis.center.instances.json").read_text())[0].endswith("#1")
    rows = read_results(out)
    assert [(r["experiment"], r["dataset"]) for r in rows] == [("sax1_448", "davis"), ("sax1_448", "again")]
    m = rows[0]["metrics"]
    assert m["mIoU@1"] == pytest_approx(ious[:, 0, 0].mean())
    for line in ("NoC@85  NoC@90  NoC@95  NoF@90  NoF@95  5-mIoU  s/click",
                 f"mIoU@1={ious[:, 0, 0].mean():.4f}  mIoU@2={ious[:, 0, 1].mean():.4f}",
                 f"mIoU@5={ious[:, 0, 4].mean():.4f}"):
        assert line in text
    assert text.count("davis [center]: 12 instances, 0 empty skipped") == 1
    assert launch.main(["eval", "--checkpoint", str(ckpt), "--dataset", "davis"]) == 2
    assert "expected NAME=SHARD_DIR" in capsys.readouterr().err
    assert launch.main(["eval", "--checkpoint", str(ckpt), "--dataset", f"d={tmp_path}", "--out", str(out)]) == 2
    assert f"dataset 'd': {tmp_path} has no manifest.json" in capsys.readouterr().err
    assert len(read_results(out)) == 2  # nothing written by the refused calls


def test_target_iou_on_a_dataset_keeps_noc_and_nof_with_fewer_clicks(builtin_dirs):
    """``eval.target_iou`` against a full run over a dataset: the same NoC and NoF at thresholds up
    to the target, fewer clicks predicted, its own row label (scaling-curve points keep theirs)."""
    from dataclasses import replace

    from test_eval_protocols import StubPredictor
    from clickseg.config import EvalConfig
    from clickseg.eval.checkpoint_eval import seconds_per_click
    from clickseg.eval.evaluate import make_row, protocols_of
    from clickseg.eval.summary import summarize_draws

    cfg = EvalConfig(protocol="random", draws=2, n_clicks=5, max_instances=6, target_iou=0.3, scaling_curve=[2])
    (main, _), (point, curve) = protocols_of(cfg)
    full = evaluate_dataset(StubPredictor(), str(builtin_dirs["davis"]), replace(main, target_iou=0.0))
    short = evaluate_dataset(StubPredictor(), str(builtin_dirs["davis"]), main)
    thresholds = (0.2, 0.25, 0.3)
    ref, got = summarize_draws(full.ious, thresholds)[0], summarize_draws(short.ious, thresholds)[0]
    assert 0 < ref["NoF@30"] < 6 and ref["NoC@20"] > 1  # some reach the target, not at once
    assert {k: v for k, v in got.items() if k.startswith("No")} == {k: v for k, v in ref.items() if k.startswith("No")}
    assert full.clicks == full.ious.size == 6 * 2 * 5 and short.clicks < full.clicks
    assert seconds_per_click(short) == short.seconds / short.clicks
    row = make_row("x", 1, "davis", main, False, short, "ckpt", 6)
    assert row["protocol"] == "random-c2-target0.3" and row["options"]["target_iou"] == 0.3
    assert make_row("x", 1, "davis", point, curve, short, "ckpt", 6)["protocol"] == "random-c2-K2r5@1"
