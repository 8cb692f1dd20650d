"""Training prompts: ``multi`` correction clicks follow the model's own predictions, by SegNext's rule."""
import cv2
import numpy as np
import torch

from clickseg.config import ClickConfig
from clickseg.model import build_segnext
from clickseg.simulate import prepare_prompts


def _batch(b: int = 3, t: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(b, 3, t, t, generator=gen)
    gt = torch.zeros(b, 1, t, t)
    for i in range(b):
        gt[i, 0, 10 + 3 * i:40 + 2 * i, 12:50 - 4 * i] = 1
    clicks = torch.full((b, 4, 3), -1.0)  # rows 0-1 positive, rows 2-3 negative
    clicks[:, 0] = torch.tensor([25.0, 30.0, 1.0])
    clicks[:, 2] = torch.tensor([55.0, 5.0, 0.0])
    return images, gt, clicks


def _segnext_next_click(prob: np.ndarray, gt: np.ndarray, rng: np.random.Generator):
    """SegNext's get_next_points for one sample, written from training-recipe.md section 2."""
    fn = np.pad(gt & (prob < 0.49), 1).astype(np.uint8)
    fp = np.pad(~gt & (prob > 0.49), 1).astype(np.uint8)
    fn_dt = cv2.distanceTransform(fn, cv2.DIST_L2, 5)[1:-1, 1:-1]
    fp_dt = cv2.distanceTransform(fp, cv2.DIST_L2, 5)[1:-1, 1:-1]
    positive = fn_dt.max() > fp_dt.max()
    inner = np.argwhere((fn_dt if positive else fp_dt) > max(fn_dt.max(), fp_dt.max()) / 2.0)
    if len(inner) == 0:
        return None
    y, x = inner[rng.integers(0, len(inner), size=1)[0]]
    return float(y), float(x), positive


def test_multi_correction_clicks_follow_segnext_rule_and_rows():
    torch.manual_seed(0)
    model = build_segnext("tiny_p8", 64).train()
    images, gt, initial = _batch()
    cfg = ClickConfig(mode="multi", max_positive=2, max_negative=2, max_correction_clicks=2)
    seen = set()
    for seed in (0, 1, 11):  # 2, 1 and 0 correction clicks
        clicks, prev = prepare_prompts(model, images, gt, initial, cfg, np.random.default_rng(seed))
        assert model.training  # the simulation leaves the model as it found it
        # Reference: one full forward pass per correction click, as a user would see them. Click i
        # (1-based) goes to row max_positive - i (positive) or row P - i (negative), overwriting
        # what was there, as in SegNext's trainer.
        rng = np.random.default_rng(seed)
        n_extra = int(rng.integers(0, cfg.max_correction_clicks + 1))
        seen.add(n_extra)
        ref_clicks, ref_prev = initial.clone(), torch.zeros(3, 1, 64, 64)
        model.eval()
        with torch.no_grad():
            for i in range(1, n_extra + 1):
                ref_prev = torch.sigmoid(model(images, ref_clicks, ref_prev))
                for j in range(3):
                    c = _segnext_next_click(ref_prev[j, 0].numpy(), gt[j, 0].numpy() > 0.5, rng)
                    if c is not None:
                        row = 2 - i if c[2] else 4 - i
                        ref_clicks[j, row] = torch.tensor([c[0], c[1], float(c[2])])
        model.train()
        assert clicks.shape == initial.shape
        assert torch.equal(clicks, ref_clicks), seed
        torch.testing.assert_close(prev, ref_prev, rtol=0, atol=1e-6)
        assert n_extra == 0 and not prev.any() or n_extra > 0 and prev.any()
    assert seen == {0, 1, 2}


def test_single_any_redraws_half_the_clicks_in_the_error():
    torch.manual_seed(0)
    model = build_segnext("tiny_p8", 64).train()
    images, gt, initial = _batch(b=16)
    initial = initial[:, :1]
    cfg = ClickConfig(mode="single_any")
    clicks, prev = prepare_prompts(model, images, gt, initial, cfg, np.random.default_rng(3))
    redo = np.random.default_rng(3).random(16) < 0.5
    changed = ~(clicks == initial).all(-1)[:, 0].numpy()
    has_prev = prev.flatten(1).any(1).numpy()
    assert clicks.shape == (16, 1, 3)
    assert (changed <= redo).all() and (has_prev == changed).all() and changed.any()
    gt_np = gt[:, 0].numpy() > 0.5
    for j in np.flatnonzero(changed):  # the new click lies in the error of the previous mask
        y, x, label = clicks[j, 0].long().tolist()
        p = prev[j, 0, y, x].item()
        assert (label == 1 and gt_np[j, y, x] and p < 0.49) or (label == 0 and not gt_np[j, y, x] and p > 0.49)
