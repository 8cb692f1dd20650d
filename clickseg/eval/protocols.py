"""One evaluator for every click protocol: center or random clicks, draws, test-time flips and
inference-time scaling, run as batches against image features computed once per view.

For one instance, all ``draws`` advance click by click in lockstep. At each click every draw
contributes ``scaling`` prompt variants (the user's clicks, then ``scaling - 1`` jittered
copies); all of them are decoded in one batched call per view (identity and the flips), the
probabilities are mapped back to the original orientation and averaged per draw (in float64,
then float32, so averaging identical maps is exact), and the average is thresholded, scored
and fed back as every variant's previous mask. ``scaling = 1`` without flips is exactly the
plain click loop (``clickseg.eval.metrics.evaluate_instance`` for the center protocol).
"""
from __future__ import annotations

import copy
import zlib
from dataclasses import asdict, dataclass, fields, replace
from typing import Sequence

import numpy as np

from clickseg.eval.clickers import CenterClicker, Click, RandomClicker, error_regions
from clickseg.eval.metrics import iou

# Views per ``flips`` value; "" is the identity, "h" mirrors columns, "v" mirrors rows.
VIEWS = {"none": ("",), "h": ("", "h"), "v": ("", "v"), "hv": ("", "h", "v", "hv")}
CLICK_STREAM, JITTER_STREAM = 0, 1


@dataclass(frozen=True)
class Protocol:
    """Everything that fixes the numbers of an evaluation (see ``EvalConfig`` for each field)."""
    name: str = "center"
    n_clicks: int = 20
    threshold: float = 0.49
    draws: int = 1
    seed: int = 0
    flips: str = "none"
    scaling: int = 1
    jitter_radius: int = 5
    max_batch: int = 0  # 0: auto_batch(device)

    def __post_init__(self):
        if self.name not in ("center", "random"):
            raise ValueError(f"protocol name must be 'center' or 'random', got {self.name!r}")
        if self.flips not in VIEWS:
            raise ValueError(f"flips must be one of {tuple(VIEWS)}, got {self.flips!r}")
        for key in ("n_clicks", "draws", "scaling"):
            if getattr(self, key) < 1:
                raise ValueError(f"protocol {key} must be >= 1, got {getattr(self, key)}")
        if self.seed < 0 or self.jitter_radius < 0 or self.max_batch < 0:
            raise ValueError("protocol seed, jitter_radius and max_batch must be >= 0")

    @classmethod
    def from_config(cls, cfg, **changes) -> "Protocol":
        """From an ``EvalConfig`` (``protocol`` becomes ``name``), with field ``changes``."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in asdict(cfg).items() if k in names}
        values["name"] = cfg.protocol
        return replace(cls(**values), **changes)

    @property
    def views(self) -> tuple[str, ...]:
        return VIEWS[self.flips]

    def label(self) -> str:
        """Short name used as the ``protocol`` of result rows, e.g. ``random-c5-fliphv-K8r5``."""
        out = self.name
        if self.draws > 1:
            out += f"-c{self.draws}"
        if self.name == "random" and self.seed:
            out += f"-s{self.seed}"
        if self.threshold != 0.49:
            out += f"-t{self.threshold:g}"
        if self.flips != "none":
            out += f"-flip{self.flips}"
        if self.scaling > 1:
            out += f"-K{self.scaling}r{self.jitter_radius}"
        return out

    def options(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "max_batch"}


def derive_seed(seed: int, dataset: str, instance: int, draw: int, stream: int = CLICK_STREAM) -> tuple[int, ...]:
    """Seed of one (dataset, instance, draw): the same on every machine and in every process."""
    return (int(seed), zlib.crc32(dataset.encode("utf-8")), int(instance), int(draw), int(stream))


# --------------------------------------------------------------------------- geometry


def flip_maps(a: np.ndarray, view: str) -> np.ndarray:
    """Flip the last two axes (rows, columns) of ``a`` as ``view`` says; its own inverse."""
    if "h" in view:
        a = a[..., :, ::-1]
    if "v" in view:
        a = a[..., ::-1, :]
    return a


def flip_image(image: np.ndarray, view: str) -> np.ndarray:
    """H x W x C image seen in ``view`` (contiguous)."""
    if "h" in view:
        image = image[:, ::-1]
    if "v" in view:
        image = image[::-1]
    return np.ascontiguousarray(image)


def flip_clicks(clicks: Sequence[Click], view: str, shape: tuple[int, int]) -> list[Click]:
    h, w = shape
    return [Click(h - 1 - c.y if "v" in view else c.y, w - 1 - c.x if "h" in view else c.x, c.is_positive)
            for c in clicks]


def click_region(gt: np.ndarray, pred: np.ndarray, click: Click) -> np.ndarray:
    """The region a click lies in: the error region it corrects (FN for a positive click, FP for
    a negative one) at the time it was placed; the object / background when that region does
    not contain the click (a confirming click on a perfect prediction, or the center clicker's
    (0, 0) quirk)."""
    fn, fp = error_regions(gt, pred)
    region = fn if click.is_positive else fp
    if not region[click.y, click.x]:
        region = (gt == 1) if click.is_positive else (gt == 0)
    return region


def jitter_click(click: Click, region: np.ndarray, radius: int, rng: np.random.Generator) -> Click:
    """A copy of ``click`` moved to a pixel drawn uniformly among the pixels of ``region`` within
    Euclidean distance ``radius``; the click itself when there is none."""
    if radius <= 0:
        return click
    h, w = region.shape
    y0, y1 = max(0, click.y - radius), min(h, click.y + radius + 1)
    x0, x1 = max(0, click.x - radius), min(w, click.x + radius + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    ok = region[y0:y1, x0:x1] & ((yy - click.y) ** 2 + (xx - click.x) ** 2 <= radius * radius)
    ys, xs = np.nonzero(ok)
    if ys.size == 0:
        return click
    i = int(rng.integers(ys.size))
    return Click(int(y0 + ys[i]), int(x0 + xs[i]), click.is_positive)


# --------------------------------------------------------------------------- evaluation


class Views:
    """One predictor per view of the protocol, sharing the model; ``set_image`` encodes each view once."""

    def __init__(self, predictor, flips: str = "none"):
        self.items = [(view, predictor if view == "" else copy.copy(predictor)) for view in VIEWS[flips]]

    def set_image(self, image: np.ndarray) -> None:
        for view, p in self.items:
            p.set_image(flip_image(image, view))


def auto_batch(predictor) -> int:
    """Prompts per decode when ``max_batch`` is 0: 8 on CPU, where bigger batches run slower
    (bench/eval_batching.py), 64 on accelerators."""
    device = getattr(predictor, "device", None)
    return 8 if device is None or getattr(device, "type", "cpu") == "cpu" else 64


def _decode(pred, click_lists: list[list[Click]], prev: np.ndarray | None, max_batch: int) -> np.ndarray:
    max_batch = max_batch or auto_batch(pred)
    outs = []
    for i in range(0, len(click_lists), max_batch):
        chunk_prev = None if prev is None else np.ascontiguousarray(prev[i:i + max_batch])
        outs.append(np.asarray(pred.predict_batch(click_lists[i:i + max_batch], chunk_prev)))
    return np.concatenate(outs) if len(outs) > 1 else outs[0]


def make_clicker(protocol: Protocol, gt: np.ndarray, seed):
    return RandomClicker(gt, seed) if protocol.name == "random" else CenterClicker(gt)


def evaluate_views(views: Views, gt: np.ndarray, protocol: Protocol, dataset: str = "",
                   instance: int = 0) -> np.ndarray:
    """IoU after each click for every draw of one instance: a (draws, n_clicks) array.

    ``views`` must hold the instance's image (``Views.set_image``); ``dataset`` and ``instance``
    (its index in the dataset) derive the click and jitter seeds from ``protocol.seed``.
    """
    gt = np.asarray(gt)
    p = protocol
    n_clicks = p.n_clicks
    d_count, k_count = p.draws, p.scaling
    shape = gt.shape
    clickers = [make_clicker(p, gt, derive_seed(p.seed, dataset, instance, d)) for d in range(d_count)]
    jitter_rngs = [[np.random.default_rng(derive_seed(p.seed, dataset, instance, d, JITTER_STREAM + v))
                    for v in range(1, k_count)] for d in range(d_count)]
    prompts = [[[] for _ in range(k_count)] for _ in range(d_count)]  # draw -> variant -> clicks
    prob = np.zeros((d_count,) + shape, dtype=np.float32)
    pred = np.zeros((d_count,) + shape, dtype=bool)
    out = np.empty((d_count, n_clicks), dtype=np.float64)
    for k in range(n_clicks):
        for d in range(d_count):
            click = clickers[d].next_click(pred[d])
            prompts[d][0].append(click)
            if k_count > 1:
                region = click_region(gt, pred[d], click)
                for v in range(1, k_count):
                    prompts[d][v].append(jitter_click(click, region, p.jitter_radius, jitter_rngs[d][v - 1]))
        flat = [list(prompts[d][v]) for d in range(d_count) for v in range(k_count)]
        prev = None if k == 0 else np.repeat(prob, k_count, axis=0)
        total = np.zeros((d_count * k_count,) + shape, dtype=np.float64)
        for view, predictor in views.items:
            lists = [flip_clicks(c, view, shape) for c in flat] if view else flat
            view_prev = None if prev is None else flip_maps(prev, view)
            probs = _decode(predictor, lists, view_prev, p.max_batch)
            if probs.shape != total.shape:
                raise ValueError(f"predict_batch returned shape {probs.shape}, expected {total.shape}")
            total += flip_maps(probs, view)
        n_maps = k_count * len(views.items)
        prob = (total.reshape((d_count, k_count) + shape).sum(axis=1) / n_maps).astype(np.float32)
        pred = prob > p.threshold
        for d in range(d_count):
            out[d, k] = iou(pred[d], gt)
    return out


def evaluate_image_instance(predictor, image: np.ndarray, gt: np.ndarray, protocol: Protocol,
                            dataset: str = "", instance: int = 0) -> np.ndarray:
    """Convenience: set the image on fresh views of ``predictor`` and evaluate one instance."""
    views = Views(predictor, protocol.flips)
    views.set_image(image)
    return evaluate_views(views, gt, protocol, dataset, instance)
