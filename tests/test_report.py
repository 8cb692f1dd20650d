"""The report: deltas to a baseline, paired significance and config diffs on constructed results."""
import csv
import io

import numpy as np
import pytest
import yaml

import launch
from clickseg.rundir import append_result
from clickseg.report import markdown_report, table, write_report, collect

N = 20


def _run(root, name, per_epoch_first_click: dict[int, np.ndarray], config: dict, names=None):
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"name": name, "run_dir": str(run), **config}))
    for epoch, first in per_epoch_first_click.items():
        ious = np.stack([first, np.minimum(1.0, first + 0.1)], axis=1)
        append_result(run, {
            "experiment": name, "epoch": epoch, "dataset": "davis", "protocol": "center", "scaling_curve": False,
            "instances": len(first), "n_clicks": 2,
            "metrics": {"mIoU@1": float(first.mean()), "mIoU@2": float(ious[:, 1].mean()), "NoC@90": 2.0},
            "instance_names": list(names or [f"img{i}#1" for i in range(len(first))]),
            "ious": ious.tolist()})
    return run


@pytest.fixture
def difficulty():
    return np.linspace(0.1, 0.8, N)  # instances differ a lot in difficulty


def test_constant_gain_is_exact_and_significant(tmp_path, difficulty):
    base = _run(tmp_path, "base", {1: difficulty, 2: difficulty}, {"model": {"input_size": 224}})
    exp = _run(tmp_path, "exp", {1: difficulty + 0.02, 2: difficulty + 0.02}, {"model": {"input_size": 448}})
    recs = {(r["experiment"], r["epoch"]): r for r in table(collect([base, exp]), baseline="base")}
    r = recs[("exp", 2)]
    assert r["delta mIoU@1"] == pytest.approx(0.02, abs=1e-12)
    assert r["delta lo"] == pytest.approx(0.02, abs=1e-12) and r["delta hi"] == pytest.approx(0.02, abs=1e-12)
    assert r["significant"] == "yes" and r["p"] == 0.0 and r["baseline epoch"] == 2
    # the unpaired intervals overlap: only the pairing shows the gain
    assert r["mIoU@1 lo"] < recs[("base", 2)]["mIoU@1 hi"]
    assert recs[("base", 1)]["delta mIoU@1"] == 0.0 and recs[("base", 1)]["significant"] == "no"


def test_noise_around_zero_is_not_significant(tmp_path, difficulty):
    noise = np.where(np.arange(N) % 2 == 0, 0.1, -0.1)  # mean exactly 0
    base = _run(tmp_path, "base", {1: difficulty}, {})
    exp = _run(tmp_path, "exp", {1: difficulty + noise}, {})
    r = [x for x in table(collect([base, exp]), baseline="base") if x["experiment"] == "exp"][0]
    assert r["delta mIoU@1"] == pytest.approx(0.0, abs=1e-12)
    assert r["delta lo"] < 0 < r["delta hi"] and r["significant"] == "no" and r["p"] > 0.5


def test_a_loss_is_significant_and_negative(tmp_path, difficulty):
    base = _run(tmp_path, "base", {1: difficulty}, {})
    loss = 0.05 + np.where(np.arange(N) % 2 == 0, 0.01, -0.01)
    exp = _run(tmp_path, "exp", {1: difficulty - loss}, {})
    r = [x for x in table(collect([base, exp]), baseline="base") if x["experiment"] == "exp"][0]
    assert r["delta mIoU@1"] == pytest.approx(-0.05, abs=1e-12)
    assert -0.06 <= r["delta lo"] < r["delta hi"] < 0 and r["significant"] == "yes"


def test_later_epoch_uses_baseline_last_epoch_and_only_shared_instances(tmp_path, difficulty):
    base = _run(tmp_path, "base", {1: difficulty - 0.05, 2: difficulty}, {})
    names = [f"img{i}#1" for i in range(N - 5)] + [f"other{i}#1" for i in range(5)]
    exp = _run(tmp_path, "exp", {3: difficulty + 0.03}, {}, names=names)
    r = [x for x in table(collect([base, exp]), baseline="base") if x["experiment"] == "exp"][0]
    assert r["baseline epoch"] == 2
    assert r["delta mIoU@1"] == pytest.approx(0.03, abs=1e-12)  # over the 15 shared instances
    assert r["significant"] == "yes"


def test_markdown_csv_config_diffs_and_plots(tmp_path, difficulty, capsys):
    base = _run(tmp_path, "base", {1: difficulty, 2: difficulty},
                {"model": {"input_size": 224, "arch": "tiny"}, "clicks": {"mode": "single_pos"}})
    exp = _run(tmp_path, "exp", {1: difficulty + 0.02, 2: difficulty + 0.02},
               {"model": {"input_size": 448, "arch": "tiny"}, "clicks": {"mode": "multi"}})
    out = tmp_path / "report"
    assert launch.main(["report", str(base), str(exp), "--baseline", "base", "--out", str(out)]) == 0
    md = capsys.readouterr().out
    assert "- exp: clicks.mode: single_pos -> multi; model.input_size: 224 -> 448" in md
    assert "| exp | 2 | davis | center | 20 | 0.4700 |" in md
    assert "| +0.0200 | [+0.0200, +0.0200] | 0.000 | yes |" in md
    rows = list(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    assert [(r["experiment"], r["epoch"], r["significant"]) for r in rows] == [
        ("base", "1", "no"), ("base", "2", "no"), ("exp", "1", "yes"), ("exp", "2", "yes")]
    assert rows[2]["config diff"] == "clicks.mode: single_pos -> multi; model.input_size: 224 -> 448"
    for png in ("miou.png", "iou_vs_clicks.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="baseline experiment 'nope' has no results"):
        markdown_report(collect([base, exp]), baseline="nope")


def test_the_epoch_axis_has_integer_ticks(tmp_path, difficulty):
    from clickseg.report import miou_figure

    base = _run(tmp_path, "base", {1: difficulty, 2: difficulty + 0.01, 3: difficulty + 0.02}, {})
    fig, (ax,) = miou_figure(table(collect([base])))
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks == [1, 2, 3], ax.get_xticks()
    assert ax.get_xlabel() == "epoch"
