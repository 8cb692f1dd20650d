"""Agreement with SegNext's own code on checkpoints in SegNext's file format.

tests/data/segnext_ref/ was recorded by tests/data/record_segnext.py, which runs
SegNext's PlainVitModel, BasePredictor, Clicker and get_iou (see its docstring). Our
load_checkpoint + Predictor + CenterClicker + iou must give the same clicks and IoUs
exactly and the same probabilities within 1e-4.
"""
from pathlib import Path

import numpy as np
import pytest

from clickseg.eval.clickers import CenterClicker
from clickseg.eval.metrics import iou
from clickseg.model import load_checkpoint
from clickseg.predictor import Predictor

REF = Path(__file__).parent / "data" / "segnext_ref"
CASES = ["sax2_512", "sax1_448"]
STRIDE = 7


@pytest.fixture(scope="module")
def reference():
    with np.load(REF / "reference.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("case", CASES)
def test_predictions_clicks_and_ious_equal_segnext(case, reference):
    predictor = Predictor(load_checkpoint(REF / f"{case}.pth"))
    images = sorted(int(k.split("/")[1]) for k in reference if k.startswith("image/"))
    assert images == [0, 1, 2]
    for j in images:
        image, gt = reference[f"image/{j}"], reference[f"gt/{j}"]
        want_clicks, want_ious, want_probs = (reference[f"{case}/{j}/{n}"] for n in ("clicks", "ious", "probs"))
        predictor.set_image(image)
        clicker = CenterClicker(gt)
        pred = np.zeros(gt.shape, dtype=bool)
        for k in range(len(want_clicks)):
            click = clicker.next_click(pred)
            assert (click.y, click.x, int(click.is_positive)) == tuple(want_clicks[k]), (case, j, k)
            prob = predictor.predict(clicker.clicks)
            assert prob.shape == gt.shape and prob.dtype == np.float32
            np.testing.assert_allclose(prob[::STRIDE, ::STRIDE], want_probs[k], rtol=0, atol=1e-4)
            pred = prob > 0.49
            assert np.float32(iou(pred, gt)) == want_ious[k], (case, j, k)
