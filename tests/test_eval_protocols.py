"""The protocol evaluator: flips map back exactly, K = 1 is the plain loop, batching, jitter, summaries,
target IoU."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from clickseg.config import EVAL_FLIPS, EvalConfig
from clickseg.eval.clickers import CenterClicker, Click, RandomClicker, jitter_click
from clickseg.eval.metrics import evaluate_instance, iou, per_instance, summarize
from clickseg.eval.protocols import (Views, derive_seed, evaluate_image_instance, evaluate_views, flip_clicks,
                                     flip_maps, flip_views, label, options)
from clickseg.eval.summary import summarize_draws
from test_random_clicks import in_another_process


class StubPredictor:
    """A flip-equivariant toy predictor with exact arithmetic (only +, -, *, /, so every
    pixel's value depends on its neighbourhood, never on its memory position).

    Probability = clip(0.5 + 0.4 * (brightness - 0.5) + sum over clicks of +-0.45 / (1 + d^2 / 40)
    + 0.2 * (prev - 0.5), 0, 1). Each prompt is computed on its own, so a batch gives the same
    numbers as single calls. ``calls`` records the batch size of every call.
    """

    def __init__(self):
        self.calls: list[int] = []
        self.prev = None

    def set_image(self, image):
        self.brightness = image.astype(np.float32).sum(axis=2) / np.float32(765.0)
        self.prev = None

    def reset(self):
        self.prev = None

    def _one(self, clicks, prev):
        h, w = self.brightness.shape
        yy, xx = np.mgrid[:h, :w].astype(np.float32)
        z = np.float32(0.5) + np.float32(0.4) * (self.brightness - np.float32(0.5))
        for y, x, positive in clicks:
            d2 = (yy - np.float32(y)) ** 2 + (xx - np.float32(x)) ** 2
            z = z + np.float32(0.45 if positive else -0.45) / (np.float32(1) + d2 / np.float32(40))
        if prev is not None:
            z = z + np.float32(0.2) * (prev.astype(np.float32) - np.float32(0.5))
        return np.clip(z, 0, 1).astype(np.float32)

    def predict_batch(self, click_lists, prev_masks=None):
        self.calls.append(len(click_lists))
        return np.stack([self._one(c, None if prev_masks is None else prev_masks[i])
                         for i, c in enumerate(click_lists)])

    def predict(self, clicks):
        self.prev = self._one(clicks, self.prev)
        return self.prev


def scene(seed=0, shape=(40, 52)):
    rng = np.random.default_rng(seed)
    gt = np.zeros(shape, dtype=np.int64)
    gt[8:30, 10:36] = 1
    gt[14:20, 16:24] = 0
    gt[33:37, 40:50] = 1
    gt[0:3, :] = -1
    image = (rng.random(shape + (3,)) * 255).astype(np.uint8)
    image[gt == 1] //= 3  # the object is darker: the stub's prediction follows it
    return image, gt


def plain_loop(predictor, image, gt, clicker, n_clicks, thr=0.49):
    """The reference loop: one click, one predict() call, previous mask fed back."""
    predictor.set_image(image)
    predictor.reset()
    pred = np.zeros(gt.shape, bool)
    out = []
    for _ in range(n_clicks):
        clicker.next_click(pred)
        pred = predictor.predict(list(clicker.clicks)) > thr
        out.append(iou(pred, gt))
    return np.array(out)


def test_flip_helpers_round_trip():
    a = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    for view in ("", "h", "v", "hv"):
        np.testing.assert_array_equal(flip_maps(flip_maps(a, view), view), a)
    clicks = [Click(0, 0, True), Click(2, 1, False)]
    assert flip_clicks(clicks, "h", (3, 4)) == [Click(0, 3, True), Click(2, 2, False)]
    assert flip_clicks(clicks, "v", (3, 4)) == [Click(2, 0, True), Click(0, 1, False)]
    assert flip_clicks(clicks, "hv", (3, 4)) == [Click(2, 3, True), Click(0, 2, False)]
    img = np.zeros((3, 4), bool)
    img[2, 1] = True
    assert flip_maps(img, "hv")[0, 2]
    assert [flip_views(f) for f in EVAL_FLIPS] == [("",), ("", "h"), ("", "v"), ("", "h", "v", "hv")]


@pytest.mark.parametrize("name,scaling", [("random", 1), ("random", 3), ("center", 2)])
def test_flip_equivariant_model_gives_identical_results_with_flips(name, scaling):
    image, gt = scene()
    base = EvalConfig(protocol=name, n_clicks=5, draws=3, seed=4, scaling=scaling, jitter_radius=3)
    plain = evaluate_image_instance(StubPredictor(), image, gt, base, "toy", 7)
    assert 0 < np.nanmax(plain) < 1  # a non-trivial run
    for flips in ("h", "v", "hv"):
        flipped = evaluate_image_instance(StubPredictor(), image, gt, replace(base, flips=flips),
                                          "toy", 7)
        np.testing.assert_array_equal(flipped, plain)


def test_flips_change_results_of_a_model_that_is_not_equivariant():
    class Skewed(StubPredictor):
        def _one(self, clicks, prev):
            h, w = self.brightness.shape
            ramp = np.linspace(-0.3, 0.3, w, dtype=np.float32)[None]  # depends on the column
            return np.clip(super()._one(clicks, prev) + ramp, 0, 1).astype(np.float32)

    image, gt = scene()
    p = EvalConfig(protocol="random", n_clicks=3, draws=2, seed=1)
    a = evaluate_image_instance(Skewed(), image, gt, p, "toy", 0)
    b = evaluate_image_instance(Skewed(), image, gt, replace(p, flips="h"), "toy", 0)
    assert not np.array_equal(a, b)


def test_k1_equals_the_plain_loop_exactly():
    image, gt = scene(1)
    for name, draws in (("random", 4), ("center", 1)):
        p = EvalConfig(protocol=name, n_clicks=6, draws=draws, seed=9, jitter_radius=4)
        got = evaluate_image_instance(StubPredictor(), image, gt, p, "davis", 3)
        for d in range(draws):
            clicker = RandomClicker(gt, derive_seed(9, "davis", 3, d)) if name == "random" else CenterClicker(gt)
            np.testing.assert_array_equal(got[d], plain_loop(StubPredictor(), image, gt, clicker, 6))
    # center protocol: the same numbers as metrics.evaluate_instance
    stub = StubPredictor()
    stub.set_image(image)
    np.testing.assert_array_equal(evaluate_image_instance(StubPredictor(), image, gt, EvalConfig(n_clicks=6),
                                                          "x", 0)[0],
                                  evaluate_instance(stub.predict, gt, 6))


def test_k1_equals_the_plain_loop_with_the_real_model():
    from clickseg.model import build_segnext
    from clickseg.predictor import Predictor

    torch.manual_seed(0)
    predictor = Predictor(build_segnext("tiny", 224))
    image, gt = scene(2, (64, 80))
    for name in ("center", "random"):
        p = EvalConfig(protocol=name, n_clicks=3, seed=2, threshold=0.45)
        got = evaluate_image_instance(predictor, image, gt, p, "davis", 5)
        clicker = RandomClicker(gt, derive_seed(2, "davis", 5, 0)) if name == "random" else CenterClicker(gt)
        np.testing.assert_array_equal(got[0], plain_loop(predictor, image, gt, clicker, 3, thr=0.45))


def test_draws_variants_and_views_run_as_one_batch_per_view_and_click():
    image, gt = scene()
    stub = StubPredictor()
    p = EvalConfig(protocol="random", n_clicks=4, draws=5, scaling=8, flips="hv", jitter_radius=3, max_batch=64)
    views = Views(stub, p.flips)
    views.set_image(image)
    stub.calls.clear()
    calls = []
    for _, v in views.items:  # copies of the stub share nothing but the class
        v.calls = calls
    evaluate_views(views, gt, p, "toy", 0)
    assert calls == [5 * 8] * (4 * 4)  # (clicks x views) calls of draws x K prompts
    chunked = Views(StubPredictor(), "none")
    chunked.set_image(image)
    p = EvalConfig(protocol="random", n_clicks=2, draws=5, scaling=8)
    out = evaluate_views(chunked, gt, replace(p, max_batch=16), "toy", 0)
    assert chunked.items[0][1].calls == [16, 16, 8] * 2
    auto = Views(StubPredictor(), "none")  # max_batch 0: 8 prompts per decode on CPU
    auto.set_image(image)
    evaluate_views(auto, gt, p, "toy", 0)
    assert auto.items[0][1].calls == [8] * 5 * 2
    np.testing.assert_array_equal(out, evaluate_image_instance(StubPredictor(), image, gt, p, "toy", 0))


def test_jitter_stays_within_radius_and_region():
    _, gt = scene()
    region = gt == 1
    rng = np.random.default_rng(0)
    click = Click(9, 11, True)
    seen = set()
    for _ in range(500):
        j = jitter_click(click, region, 3, rng)
        assert region[j.y, j.x] and (j.y - 9) ** 2 + (j.x - 11) ** 2 <= 9 and j.is_positive
        seen.add((j.y, j.x))
    inside = {(y, x) for y in range(6, 13) for x in range(8, 15)
              if (y - 9) ** 2 + (x - 11) ** 2 <= 9 and region[y, x]}
    assert seen == inside  # every allowed pixel is reached
    assert jitter_click(click, region, 0, rng) == click
    assert jitter_click(Click(0, 0, False), np.zeros_like(region), 5, rng) == Click(0, 0, False)


def test_scaling_first_variant_is_the_user_click_and_variants_nest():
    """K = 4 runs the user's clicks plus 3 jittered copies; the copies of K = 2 are among them."""
    image, gt = scene()
    seen = {}

    class Recorder(StubPredictor):
        def predict_batch(self, click_lists, prev_masks=None):
            seen.setdefault(len(click_lists), []).append([list(c) for c in click_lists])
            return super().predict_batch(click_lists, prev_masks)

    for k in (2, 4):
        p = EvalConfig(protocol="random", n_clicks=1, scaling=k, jitter_radius=4)
        evaluate_image_instance(Recorder(), image, gt, p, "d", 1)
    first2, first4 = seen[2][0], seen[4][0]
    user = RandomClicker(gt, derive_seed(0, "d", 1, 0)).next_click(np.zeros(gt.shape, bool))
    assert first4[0] == [user] and first4[:2] == first2
    assert all(gt[c.y, c.x] == 1 for prompt in first4 for c in prompt)


def test_same_numbers_in_another_process():
    image, gt = scene(3)
    p = EvalConfig(protocol="random", n_clicks=4, draws=3, seed=5, scaling=3, flips="h")
    here = evaluate_image_instance(StubPredictor(), image, gt, p, "davis", 2)
    np.testing.assert_array_equal(here, evaluate_image_instance(StubPredictor(), image, gt, p, "davis", 2))
    code = ("import test_eval_protocols as t; from clickseg.config import EvalConfig; "
            "from clickseg.eval.protocols import evaluate_image_instance; image, gt = t.scene(3); "
            "p = EvalConfig(protocol='random', n_clicks=4, draws=3, seed=5, scaling=3, flips='h'); "
            "print(json.dumps(evaluate_image_instance(t.StubPredictor(), image, gt, p, 'davis', 2).tolist()))")
    np.testing.assert_array_equal(np.array(in_another_process(code)), here)


def test_summaries_with_one_draw_equal_summarize_and_ci_brackets_the_mean():
    rng = np.random.default_rng(0)
    ious = np.sort(rng.random((30, 1, 6)), axis=2)
    metrics, ci = summarize_draws(ious)
    ref = summarize(ious[:, 0])
    for key, value in ref.items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), key
    for key, (lo, hi) in ci.items():
        assert lo <= metrics[key] + 1e-9 and metrics[key] <= hi + 1e-9, key
    assert metrics["draws"] == 1 and isinstance(metrics["NoF@90"], int)


def test_draws_are_averaged_within_an_instance():
    ious = np.array([[[0.2, 0.9], [0.6, 0.8]],     # instance 0: draw 0 reaches 0.85 at click 2, draw 1 never
                     [[0.9, 0.95], [0.9, 0.96]]])  # instance 1: both at click 1
    v = per_instance(ious)
    np.testing.assert_allclose(v["mIoU@1"], [0.4, 0.9])
    np.testing.assert_allclose(v["NoC@85"], [2.0, 1.0])
    np.testing.assert_allclose(v["NoF@85"], [0.5, 0.0])
    metrics, ci = summarize_draws(ious)
    assert metrics["mIoU@1"] == pytest.approx(0.65) and metrics["NoF@85"] == pytest.approx(0.5)
    assert metrics["instances"] == 2 and metrics["draws"] == 2
    # Resampling the 2 instances (not the 4 draws): a quarter of the means are 0.4, a quarter 0.9,
    # so the 95% interval is exactly [0.4, 0.9]; resampling draws would reach down to 0.2.
    assert ci["mIoU@1"] == pytest.approx([0.4, 0.9])


def test_protocol_labels_and_validation():
    assert label(EvalConfig()) == "center"
    random = EvalConfig(protocol="random", draws=5)
    assert label(random) == "random-c5"
    assert label(replace(random, flips="hv", scaling=8, jitter_radius=5)) == "random-c5-fliphv-K8r5"
    assert label(EvalConfig(protocol="random", seed=3, threshold=0.5)) == "random-s3-t0.5"
    assert label(EvalConfig(target_iou=0.9)) == "center-target0.9"
    assert label(EvalConfig(protocol="random", draws=5, target_iou=0.95, flips="h")) == "random-c5-target0.95-fliph"
    # options that only change the cost or which instances run are not in the label
    assert label(EvalConfig(max_batch=4, max_instances=3, scaling_curve=[1, 2])) == "center"
    assert options(EvalConfig(protocol="random", draws=5)) == {
        "name": "random", "n_clicks": 20, "threshold": 0.49, "draws": 5, "seed": 0, "flips": "none",
        "scaling": 1, "jitter_radius": 5, "target_iou": 0.0}
    with pytest.raises(ValueError, match="flips"):
        EvalConfig(flips="x")
    with pytest.raises(ValueError, match="draws"):
        EvalConfig(draws=0)
    with pytest.raises(ValueError, match="eval.target_iou"):
        replace(EvalConfig(), target_iou=1.5)


class Oracle(StubPredictor):
    """The object with a share of its pixels missed that falls with the clicks (IoU 0.4, 0.7, 0.88,
    0.93, 0.96, then down to 0.94, then 0.98 and 1), one to three clicks later where the first
    click's coordinates say so."""

    MISSED = (0.6, 0.3, 0.12, 0.07, 0.04, 0.06, 0.02, 0.0)

    def __init__(self, gt):
        super().__init__()
        self.gt = gt

    def _one(self, clicks, prev):
        late = (clicks[0][0] + clicks[0][1]) % 3
        missed = self.MISSED[min(len(self.MISSED) - 1, max(0, len(clicks) - 1 - late))]
        obj = np.flatnonzero(self.gt == 1)
        prob = (self.gt == 1).astype(np.float32)
        prob.flat[obj[:round(missed * obj.size)]] = 0.0
        return prob


@pytest.mark.parametrize("name,draws", [("center", 1), ("random", 3)])
def test_target_iou_stops_clicking_and_keeps_noc_and_nof(name, draws):
    """Against a full run: NoC@t and NoF@t are equal for t <= target_iou, the IoUs after the stop
    repeat the reached one, and the predictor is called less."""
    rows, calls = {}, {}
    for target in (0.0, 0.95, 0.97):
        ious, n_calls = [], 0
        for s in range(4):
            image, gt = scene(s)
            stub = Oracle(gt)
            views = Views(stub, "none")
            views.set_image(image)
            cfg = EvalConfig(protocol=name, n_clicks=10, draws=draws, seed=3, target_iou=target)
            ious.append(evaluate_views(views, gt, cfg, "toy", s))
            n_calls += sum(stub.calls)
        rows[target], calls[target] = np.stack(ious), n_calls
    full = rows[0.0]
    assert 0 < (full[..., 0] < 0.85).mean() and (full[..., -1] >= 0.97).all()  # thresholds crossed mid-run
    for target in (0.95, 0.97):
        got = rows[target]
        stop = np.argmax(full >= target, axis=-1)  # every draw reaches the target
        for i, d in np.ndindex(stop.shape):
            k = stop[i, d]
            np.testing.assert_array_equal(got[i, d, :k + 1], full[i, d, :k + 1])
            assert (got[i, d, k + 1:] == full[i, d, k]).all()
        ref, short = summarize_draws(full)[0], summarize_draws(got)[0]
        for key in ("NoC@85", "NoC@90", "NoC@95", "NoF@85", "NoF@90", "NoF@95"):
            assert short[key] == ref[key], (target, key)
        assert calls[target] == (stop + 1).sum() < calls[0.0]
    assert calls[0.95] < calls[0.97]
