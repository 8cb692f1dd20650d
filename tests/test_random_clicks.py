"""The random clicker: determinism (runs and processes), uniformity (chi-square), allowed pixels."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from clickseg.eval.clickers import Click, RandomClicker
from clickseg.eval.protocols import derive_seed
from clickseg.eval.stats import chi2_sf, chi_square_uniform

ALPHA = 0.001  # a fixed-seed test: with these seeds the p-values are far above it


def irregular_gt() -> np.ndarray:
    """An object of two components, a one-pixel-thin arm, a hole, ignore pixels inside and around."""
    gt = np.zeros((24, 30), dtype=np.int64)
    gt[3:12, 3:13] = 1          # block with a hole
    gt[6:9, 6:9] = 0
    gt[7, 13:27] = 1            # thin arm, one pixel high
    gt[16:22, 18:21] = 1        # second component
    gt[20, 2] = 1               # isolated single pixel
    gt[3:6, 10:13] = -1         # ignore band over part of the block
    gt[15:23, 17] = -1          # ignore strip next to the second component
    gt[0, :] = -1
    return gt


def in_another_process(code: str):
    """The JSON that ``code`` prints (``json`` imported) in a new Python process that can import the tests."""
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, env=env,
                         check=True)
    return json.loads(out.stdout)


def click_sequence(seed, gt, preds) -> list[tuple]:
    c = RandomClicker(gt, seed)
    return [tuple(c.next_click(p)) for p in preds]


def test_same_seed_same_clicks_different_seed_different():
    gt = irregular_gt()
    rng = np.random.default_rng(5)
    preds = [np.zeros(gt.shape, bool)] + [rng.random(gt.shape) < 0.3 for _ in range(6)]
    a = click_sequence((1, 2, 3), gt, preds)
    assert a == click_sequence((1, 2, 3), gt, preds)
    assert a != click_sequence((1, 2, 4), gt, preds)
    assert click_sequence(7, gt, preds) == click_sequence(7, gt, preds)


def test_same_clicks_in_another_process():
    gt = irregular_gt()
    seeds = [derive_seed(0, "davis", i, d) for i in range(3) for d in range(2)]
    here = [click_sequence(s, gt, [np.zeros(gt.shape, bool), gt == 0]) for s in seeds]
    code = ("import numpy as np, test_random_clicks as t; from clickseg.eval.protocols import derive_seed; "
            "gt = t.irregular_gt(); "
            "print(json.dumps([t.click_sequence(derive_seed(0, 'davis', i, d), gt, [np.zeros(gt.shape, bool), gt == 0]) "
            "for i in range(3) for d in range(2)]))")
    assert in_another_process(code) == [[list(c) for c in seq] for seq in here]


def test_first_click_uniform_over_object_pixels():
    gt = irregular_gt()
    obj = np.flatnonzero(gt == 1)
    n = 60 * obj.size
    counts = np.zeros(gt.size, dtype=np.int64)
    for i in range(n):
        c = RandomClicker(gt, derive_seed(0, "irregular", i, i % 5)).next_click(np.zeros(gt.shape, bool))
        assert c.is_positive and gt[c.y, c.x] == 1
        counts[c.y * gt.shape[1] + c.x] += 1
    assert counts.sum() == counts[obj].sum() == n  # never background or ignore
    assert (counts[obj] > 0).all()  # the thin arm, the single pixel and both components are reached
    stat, p = chi_square_uniform(counts[obj])
    assert p > ALPHA, (stat, p)


def test_later_clicks_uniform_over_error_regions_never_ignore():
    gt = irregular_gt()
    pred = np.zeros(gt.shape, bool)
    pred[2:10, 8:20] = True  # FP over background and ignore pixels, covers part of the object
    pred[17:19, 18:21] = True
    valid = gt != -1
    fn = (gt == 1) & ~pred & valid
    fp = (gt != 1) & pred & valid
    errors = np.flatnonzero(fn | fp)
    n = 40 * errors.size
    counts = np.zeros(gt.size, dtype=np.int64)
    positives = 0
    for i in range(n):
        clicker = RandomClicker(gt, (11, i), clicks=[(17, 19, True)])
        c = clicker.next_click(pred)
        assert c.is_positive == bool(fn[c.y, c.x]) and (fn | fp)[c.y, c.x]
        assert gt[c.y, c.x] != -1
        assert clicker.clicks[0] == Click(17, 19, True) and len(clicker.clicks) == 2
        counts[c.y * gt.shape[1] + c.x] += 1
        positives += c.is_positive
    assert counts.sum() == counts[errors].sum()
    stat, p = chi_square_uniform(counts[errors])
    assert p > ALPHA, (stat, p)
    # the region is chosen with probability proportional to its area
    share = fn.sum() / (fn.sum() + fp.sum())
    assert abs(positives / n - share) < 4 * np.sqrt(share * (1 - share) / n)


def test_chi_square_rejects_a_biased_sampler():
    """The test has power: a sampler that prefers the first half of the pixels is rejected."""
    rng = np.random.default_rng(0)
    cells = 100
    draws = np.where(rng.random(6000) < 0.6, rng.integers(0, cells // 2, 6000), rng.integers(0, cells, 6000))
    assert chi_square_uniform(np.bincount(draws, minlength=cells))[1] < 1e-6
    assert chi2_sf(3.841458820694124, 1) == pytest.approx(0.05, abs=1e-9)
    assert chi2_sf(124.34211340400407, 100) == pytest.approx(0.05, abs=1e-9)


def test_perfect_prediction_empty_object_and_validation():
    gt = irregular_gt()
    c = RandomClicker(gt, 3, clicks=[(7, 20, True)])
    for _ in range(20):
        click = c.next_click(gt == 1)  # no error pixel: a confirming positive click on the object
        assert click.is_positive and gt[click.y, click.x] == 1
    with pytest.raises(ValueError, match="no object pixel"):
        RandomClicker(np.where(gt == 1, 0, gt), 0)
    with pytest.raises(ValueError, match="outside"):
        RandomClicker(gt, 0, clicks=[(99, 0, True)])
    with pytest.raises(TypeError):
        RandomClicker(gt, 0).next_click(np.zeros(gt.shape))
