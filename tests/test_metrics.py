"""IoU, the summary metrics and the per-instance click loop, on hand-computed examples."""
import math

import numpy as np
import pytest

from clickseg.eval.clickers import Click
from clickseg.eval.metrics import evaluate_instance, iou, summarize


def test_iou_excludes_ignore_and_counts_only_value_one():
    gt = np.array([[1, 1, 0, -1],
                   [0, 0, 0, -1]])
    pred = np.array([[1, 0, 1, 1],
                     [0, 0, 0, 1]], dtype=bool)
    assert iou(pred, gt) == pytest.approx(1 / 3)  # inter {(0,0)}, union {(0,0),(0,1),(0,2)}
    assert iou(gt == 1, gt) == 1.0
    assert math.isnan(iou(np.zeros((2, 4), bool), np.where(gt == 1, 0, gt)))  # both empty: NaN
    assert iou(np.array([[True, False]]), np.array([[255, 1]])) == 0.0  # 255 is not object
    assert math.isnan(iou(np.array([[True, False]]), np.array([[-1, 0]])))  # only ignored pixels predicted
    assert iou(np.array([[True, False]]), np.array([[0, 0]])) == 0.0


def test_iou_validation():
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(2, 3\)"):
        iou(np.zeros((2, 2), bool), np.zeros((2, 3), int))
    with pytest.raises(TypeError):
        iou(np.full((2, 2), 0.7), np.zeros((2, 2), int))


def test_summarize_exact_values():
    ious = np.array([[0.50, 0.86, 0.91, 0.96, 0.97],
                     [0.90, 0.90, 0.95, 0.95, 0.99],
                     [0.10, 0.20, 0.30, 0.40, 0.84],
                     [np.nan, 0.95, 0.80, 0.80, 0.80]])
    s = summarize(ious)
    assert s["instances"] == 4
    assert math.isnan(s["mIoU@1"])  # plain mean: a NaN shows, it is not hidden
    assert s["mIoU@2"] == pytest.approx((0.86 + 0.90 + 0.20 + 0.95) / 4)
    assert s["mIoU@5"] == pytest.approx((0.97 + 0.99 + 0.84 + 0.80) / 4)
    # first click reaching t (1-based), 5 when never
    assert s["NoC@85"] == pytest.approx((2 + 1 + 5 + 2) / 4)
    assert s["NoC@90"] == pytest.approx((3 + 1 + 5 + 2) / 4)
    assert s["NoC@95"] == pytest.approx((4 + 3 + 5 + 2) / 4)
    assert (s["NoF@85"], s["NoF@90"], s["NoF@95"]) == (1, 1, 1)
    assert math.isnan(s["5-mIoU"])
    assert summarize(ious[:3])["5-mIoU"] == pytest.approx(ious[:3].mean())
    assert set(s) == {"instances", "5-mIoU", *(f"mIoU@{k}" for k in range(1, 6)),
                      *(f"{m}@{t}" for m in ("NoC", "NoF") for t in (85, 90, 95))}


def test_summarize_nan_never_reaches_and_short_budget():
    s = summarize(np.array([[np.nan, np.nan], [0.9, np.nan]]))
    assert s["NoC@85"] == pytest.approx((2 + 1) / 2) and s["NoF@85"] == 1
    assert "5-mIoU" not in s and "mIoU@3" not in s
    assert summarize(np.array([[0.5]]), thresholds=(0.5,)) == {"instances": 1, "mIoU@1": 0.5,
                                                                "NoC@50": 1.0, "NoF@50": 0}
    with pytest.raises(ValueError):
        summarize(np.zeros((0, 5)))


def test_evaluate_instance_with_fake_predictor():
    gt = np.zeros((8, 10), dtype=np.int64)
    gt[2:6, 2:7] = 1  # rows 2-5 x cols 2-6: 20 pixels
    gt[0, 9] = -1
    seen: list[list[Click]] = []

    def predict_fn(clicks):
        seen.append(list(clicks))
        prob = np.zeros(gt.shape, dtype=np.float32)
        if len(clicks) == 1:
            prob[2:6, 2:4] = 0.49  # not > 0.49: empty prediction
        elif len(clicks) == 2:
            prob[2:6, 2:4] = 0.6  # 8 of 20 object pixels
        else:
            prob[gt == 1] = 1.0  # perfect from click 3 on
            prob[0, 9] = 1.0  # ignored pixel: does not count
        return prob

    out = evaluate_instance(predict_fn, gt, 5)
    np.testing.assert_array_equal(out, [0.0, 8 / 20, 1.0, 1.0, 1.0])
    # click 1: rows 3-4 x cols 3-5 are all at distance 2; the first in row-major order is
    # (3, 3). Click 2: the prediction is still empty, (3, 3) is used, so (3, 4). Click 3:
    # FN = rows 2-5 x cols 4-6, whose distance-2 pixels are (3, 5) and (4, 5).
    assert seen[0] == [Click(3, 3, True)]
    assert seen[1] == [Click(3, 3, True), Click(3, 4, True)]
    assert seen[2] == [Click(3, 3, True), Click(3, 4, True), Click(3, 5, True)]
    # perfect prediction: negative clicks at (0, 0), then nothing but zeros to choose from
    assert seen[3][3] == Click(0, 0, False) and seen[4][4] == Click(0, 0, False)
    assert [len(s) for s in seen] == [1, 2, 3, 4, 5]


def test_evaluate_instance_threshold_and_validation():
    gt = np.array([[1, 0]])
    assert evaluate_instance(lambda c: np.array([[0.5, 0.1]]), gt, 2, thr=0.5).tolist() == [0.0, 0.0]
    assert evaluate_instance(lambda c: np.array([[0.5, 0.1]]), gt, 2).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="shape"):
        evaluate_instance(lambda c: np.zeros((2, 2)), gt, 1)
    with pytest.raises(ValueError):
        evaluate_instance(lambda c: np.zeros((1, 2)), gt, 0)
