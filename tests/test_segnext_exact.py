"""Agreement with SegNext's own code on checkpoints in SegNext's file format.

tests/data/segnext_ref/ was recorded by tests/data/record_segnext.py, which runs
SegNext's PlainVitModel, BasePredictor, Clicker and get_iou (see its docstring). Our
load_checkpoint + Predictor + CenterClicker + iou must give the same clicks and IoUs
exactly and the same probabilities within 1e-4.

Cases: 512 and 448 inputs (2 x 2 windows) and the ViT-B 1024 layout (4 x 4 windows of
16 x 16 tokens), on images smaller than the input and on larger ones (480 x 854 as in
DAVIS, 700 x 520) that SegNext squashes to the square input.
"""
from pathlib import Path

import numpy as np
import pytest

from clickseg.eval.clickers import CenterClicker
from clickseg.eval.metrics import iou
from clickseg.model import load_checkpoint
from clickseg.predictor import Predictor

REF = Path(__file__).parent / "data" / "segnext_ref"
# case -> the recorded images it runs on (see CASE_IMAGES in record_segnext.py)
CASES = {"sax2_512": [0, 1, 2, 3, 4], "sax1_448": [0, 1, 2, 3, 4], "sax2_1024": [1, 3, 4]}
IMAGE_SIZES = [(300, 200), (97, 131), (180, 320), (480, 854), (700, 520)]


@pytest.fixture(scope="module")
def reference():
    with np.load(REF / "reference.npz") as z:
        return {k: z[k] for k in z.files}


def test_reference_holds_every_case_and_image(reference):
    images = sorted(int(k.split("/")[1]) for k in reference if k.startswith("image/"))
    assert images == list(range(len(IMAGE_SIZES)))
    assert [reference[f"image/{j}"].shape[:2] for j in images] == IMAGE_SIZES
    recorded = {(k.split("/")[0], int(k.split("/")[1])) for k in reference if k.endswith("/clicks")}
    assert recorded == {(case, j) for case, js in CASES.items() for j in js}


@pytest.mark.parametrize("case", CASES)
def test_predictions_clicks_and_ious_equal_segnext(case, reference):
    predictor = Predictor(load_checkpoint(REF / f"{case}.pth"))
    for j in CASES[case]:
        image, gt = reference[f"image/{j}"], reference[f"gt/{j}"]
        stride = int(reference[f"stride/{j}"])
        want_clicks, want_ious, want_probs = (reference[f"{case}/{j}/{n}"] for n in ("clicks", "ious", "probs"))
        predictor.set_image(image)
        clicker = CenterClicker(gt)
        pred = np.zeros(gt.shape, dtype=bool)
        for k in range(len(want_clicks)):
            click = clicker.next_click(pred)
            assert (click.y, click.x, int(click.is_positive)) == tuple(want_clicks[k]), (case, j, k)
            prob = predictor.predict(clicker.clicks)
            assert prob.shape == gt.shape and prob.dtype == np.float32
            np.testing.assert_allclose(prob[::stride, ::stride], want_probs[k], rtol=0, atol=1e-4,
                                       err_msg=f"{case} image {j} {gt.shape} click {k}")
            pred = prob > 0.49
            assert np.float32(iou(pred, gt)) == want_ious[k], (case, j, k)
