"""Training prompts: ``multi`` correction clicks follow the model's own predictions, by SegNext's rule."""
import cv2
import numpy as np
import torch

from clickseg.config import ClickConfig
from clickseg.model import build_segnext
from clickseg.losses import normalized_focal_loss
from clickseg.simulate import ClickSimulation, prepare_prompts


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


def _segnext_click_set(prob: np.ndarray, gt: np.ndarray):
    """SegNext's get_next_points for one sample, written from SegNext's trainer (isegm/engine/trainer.py): the
    click's label and the set of pixels it is drawn from (None when there is no error)."""
    fn = np.pad(gt & (prob < 0.49), 1).astype(np.uint8)
    fp = np.pad(~gt & (prob > 0.49), 1).astype(np.uint8)
    fn_dt = cv2.distanceTransform(fn, cv2.DIST_L2, 5)[1:-1, 1:-1]
    fp_dt = cv2.distanceTransform(fp, cv2.DIST_L2, 5)[1:-1, 1:-1]
    positive = fn_dt.max() > fp_dt.max()
    inner = (fn_dt if positive else fp_dt) > max(fn_dt.max(), fp_dt.max()) / 2.0
    return (positive, inner) if inner.any() else None


def test_multi_correction_clicks_follow_segnext_rule_and_rows():
    torch.manual_seed(0)
    model = build_segnext("tiny_p8", 64).train()
    images, gt, initial = _batch()
    cfg = ClickConfig(mode="multi", max_positive=2, max_negative=2, max_correction_clicks=2)
    for seed, n_extra in ((0, 2), (1, 1), (11, 0)):  # n uniform in 0..2 from the same generator
        assert int(np.random.default_rng(seed).integers(0, cfg.max_correction_clicks + 1)) == n_extra
        clicks, prev = prepare_prompts(model, images, gt, initial, cfg, np.random.default_rng(seed))
        assert model.training  # the simulation leaves the model as it found it
        assert clicks.shape == initial.shape
        # Reference: one full forward pass per correction click, as a user would see them. Click i
        # (1-based) is drawn from SegNext's set and goes to row max_positive - i (positive) or row
        # P - i (negative), overwriting what was there, as in SegNext's trainer; none without error.
        ref_clicks, ref_prev = initial.clone(), torch.zeros(3, 1, 64, 64)
        model.eval()
        with torch.no_grad():
            for i in range(1, n_extra + 1):
                ref_prev = torch.sigmoid(model(images, ref_clicks, ref_prev))
                for j in range(3):
                    rule = _segnext_click_set(ref_prev[j, 0].numpy(), gt[j, 0].numpy() > 0.5)
                    if rule is None:
                        continue
                    positive, inner = rule
                    row = 2 - i if positive else 4 - i
                    y, x, label = clicks[j, row].long().tolist()
                    assert label == int(positive) and inner[y, x], (seed, i, j)
                    ref_clicks[j, row] = clicks[j, row]
        model.train()
        assert torch.equal(clicks, ref_clicks), seed
        torch.testing.assert_close(prev, ref_prev, rtol=0, atol=1e-6)
        assert n_extra == 0 and not prev.any() or n_extra > 0 and prev.any()


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


def test_training_forward_encodes_once_and_equals_simulation_then_forward():
    """``model(..., simulate=ClickSimulation)`` (SegNext's trainer: one encoder pass per step, the
    correction passes on its features) gives the same clicks, logits and gradients as simulating
    first on separately computed features and then running a plain forward, with one image-encoder
    pass instead of two."""
    images, gt, initial = _batch(b=4)
    cfg = ClickConfig(mode="multi", max_positive=2, max_negative=2, max_correction_clicks=3)
    for mode, seed in (("multi", 0), ("multi", 4), ("single_any", 3)):
        cfg = ClickConfig(mode=mode, max_positive=2, max_negative=2, max_correction_clicks=3)
        init = initial if mode == "multi" else initial[:, :1]
        results = []
        for fused in (False, True):
            torch.manual_seed(0)
            model = build_segnext("tiny_p8", 64).train()
            calls = []
            model.image_encoder.register_forward_hook(lambda *_: calls.append(1))
            rng = np.random.default_rng(seed)
            torch.manual_seed(1)  # the decoder's dropout in the final (training-mode) decode
            if fused:
                sim = ClickSimulation(gt, cfg, rng)
                logits = model(images, init, torch.zeros_like(gt), simulate=sim)
                clicks = sim.clicks
            else:
                clicks, prev = prepare_prompts(model, images, gt, init, cfg, rng)
                torch.manual_seed(1)
                logits = model(images, clicks, prev)
            normalized_focal_loss(logits, gt).mean().backward()
            grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
            results.append((clicks, logits.detach(), grads, len(calls)))
            assert model.training
        (c0, l0, g0, n0), (c1, l1, g1, n1) = results
        simulated = not torch.equal(c0, init)
        assert simulated, (mode, seed)  # these seeds do simulate at least one pass
        assert (n0, n1) == (2, 1)
        assert torch.equal(c0, c1)
        torch.testing.assert_close(l1, l0, rtol=0, atol=1e-6)
        assert g0.keys() == g1.keys() and len(g0) > 100
        for k in g0:
            torch.testing.assert_close(g1[k], g0[k], rtol=1e-5, atol=1e-7, msg=k)


def test_batched_correction_clicks_equal_the_per_sample_rule():
    """The batch version (regions on the device, distance transforms in threads) gives every
    sample's click and leaves the generator exactly as ``correction_click`` called per sample in
    order: random blobs, probabilities on both sides of and exactly at the threshold, samples
    without error, subsets."""
    from clickseg.data.clicks import correction_click
    from clickseg.simulate import correction_clicks

    gen = np.random.default_rng(5)
    for trial in range(40):
        b, t = int(gen.integers(1, 7)), int(gen.integers(8, 70))
        gt = torch.from_numpy(gen.random((b, 1, t, t)) < gen.random()).float()
        smooth = torch.nn.functional.avg_pool2d(torch.from_numpy(gen.random((b, 1, t, t), dtype=np.float32)), 5, 1, 2)
        prob = smooth.clone()
        prob[gen.random((b, 1, t, t)) < 0.1] = 0.49  # exactly the threshold: in neither region
        if trial % 5 == 0:
            prob[0] = gt[0]  # no error: no click
        samples = None if trial % 2 else sorted(gen.choice(b, int(gen.integers(0, b + 1)), replace=False).tolist())
        seed = int(gen.integers(1 << 30))
        got_rng, want_rng = np.random.default_rng(seed), np.random.default_rng(seed)
        got = correction_clicks(gt, prob, 0.49, got_rng, samples)
        want = [correction_click(gt[j, 0].numpy() > 0.5, prob[j, 0].numpy(), 0.49, want_rng)
                for j in (range(b) if samples is None else samples)]
        assert got == want, trial
        assert got_rng.integers(1 << 62) == want_rng.integers(1 << 62), trial
        if trial % 5 == 0 and (samples is None or 0 in samples):
            assert got[0 if samples is None else samples.index(0)] is None
