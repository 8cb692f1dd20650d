"""One evaluator for every click protocol: center or random clicks, draws, test-time flips and
inference-time scaling, run as batches against image features computed once per view.

A protocol is an ``EvalConfig`` (``clickseg.config``: every option, its default and its check);
this module adds what the evaluator derives from one: its views, its result-row label and the
options recorded with a row.

For one instance, all ``draws`` advance click by click in lockstep. At each click every draw
contributes ``scaling`` prompt variants (the user's clicks, then ``scaling - 1`` jittered
copies); all of them are decoded in one batched call per view (identity and the flips), the
probabilities are mapped back to the original orientation and averaged per draw (in float64,
then float32, so averaging identical maps is exact), and the average is thresholded, scored
and fed back as every variant's previous mask. ``scaling = 1`` without flips is exactly the
plain click loop (``clickseg.eval.metrics.evaluate_instance`` for the center protocol). With
``target_iou``, a draw that reaches it is no longer decoded (the batch shrinks; an instance
whose draws have all reached it costs no more calls).
"""
from __future__ import annotations

import copy
import zlib
from dataclasses import asdict
from typing import Sequence

import numpy as np

from clickseg.config import EvalConfig
from clickseg.eval.clickers import CenterClicker, Click, RandomClicker, click_region, jitter_click
from clickseg.eval.metrics import iou

CLICK_STREAM, JITTER_STREAM = 0, 1
# EvalConfig keys that do not change an instance's numbers (max_instances is recorded apart).
_NOT_OPTIONS = ("protocol", "scaling_curve", "max_batch", "max_instances")


def flip_views(flips: str) -> tuple[str, ...]:
    """The views of ``flips``: "" (identity), then each flip, then both; "h" mirrors columns,
    "v" rows (``hv`` -> ``("", "h", "v", "hv")``)."""
    if flips == "none":
        return ("",)
    return ("",) + tuple(flips) + ((flips,) if len(flips) > 1 else ())


def label(cfg: EvalConfig) -> str:
    """Short name of every option that changes the numbers, the ``protocol`` of result rows,
    e.g. ``random-c5-fliphv-K8r5``; defaults add nothing."""
    out = cfg.protocol
    if cfg.draws > 1:
        out += f"-c{cfg.draws}"
    if cfg.protocol == "random" and cfg.seed:
        out += f"-s{cfg.seed}"
    if cfg.threshold != 0.49:
        out += f"-t{cfg.threshold:g}"
    if cfg.target_iou:
        out += f"-target{cfg.target_iou:g}"
    if cfg.flips != "none":
        out += f"-flip{cfg.flips}"
    if cfg.scaling > 1:
        out += f"-K{cfg.scaling}r{cfg.jitter_radius}"
    return out


def options(cfg: EvalConfig) -> dict:
    """The options of a result row: the clicker as ``name``, then every key that changes the numbers."""
    return {"name": cfg.protocol, **{k: v for k, v in asdict(cfg).items() if k not in _NOT_OPTIONS}}


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


# --------------------------------------------------------------------------- evaluation


class Views:
    """One predictor per view of the protocol, sharing the model; ``set_image`` encodes each view once."""

    def __init__(self, predictor, flips: str = "none"):
        self.items = [(view, predictor if view == "" else copy.copy(predictor)) for view in flip_views(flips)]

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


def make_clicker(cfg: EvalConfig, gt: np.ndarray, seed):
    return RandomClicker(gt, seed) if cfg.protocol == "random" else CenterClicker(gt)


def evaluate_views(views: Views, gt: np.ndarray, cfg: EvalConfig, dataset: str = "",
                   instance: int = 0, trace: list | None = None) -> np.ndarray:
    """IoU after each click for every draw of one instance: a (draws, n_clicks) array.

    ``views`` must hold the instance's image (``Views.set_image``); ``dataset`` and ``instance``
    (its index in the dataset) derive the click and jitter seeds from ``cfg.seed``. A draw that
    reaches ``cfg.target_iou`` (when set) stops; its later entries repeat the IoU it reached.
    With ``trace`` (a list), each click appends ``(clicks, probs)``: every draw's user clicks so
    far and a copy of the (draws, H, W) probabilities after it (what the gallery draws).
    """
    gt = np.asarray(gt)
    n_clicks = cfg.n_clicks
    d_count, k_count = cfg.draws, cfg.scaling
    shape = gt.shape
    clickers = [make_clicker(cfg, gt, derive_seed(cfg.seed, dataset, instance, d)) for d in range(d_count)]
    jitter_rngs = [[np.random.default_rng(derive_seed(cfg.seed, dataset, instance, d, JITTER_STREAM + v))
                    for v in range(1, k_count)] for d in range(d_count)]
    prompts = [[[] for _ in range(k_count)] for _ in range(d_count)]  # draw -> variant -> clicks
    prob = np.zeros((d_count,) + shape, dtype=np.float32)
    pred = np.zeros((d_count,) + shape, dtype=bool)
    out = np.empty((d_count, n_clicks), dtype=np.float64)
    live = np.arange(d_count)  # the draws still clicking
    for k in range(n_clicks):
        for d in live:
            click = clickers[d].next_click(pred[d])
            prompts[d][0].append(click)
            if k_count > 1:
                region = click_region(gt, pred[d], click)
                for v in range(1, k_count):
                    prompts[d][v].append(jitter_click(click, region, cfg.jitter_radius, jitter_rngs[d][v - 1]))
        flat = [list(prompts[d][v]) for d in live for v in range(k_count)]
        prev = None if k == 0 else np.repeat(prob[live], k_count, axis=0)
        total = np.zeros((live.size * k_count,) + shape, dtype=np.float64)
        for view, predictor in views.items:
            lists = [flip_clicks(c, view, shape) for c in flat] if view else flat
            view_prev = None if prev is None else flip_maps(prev, view)
            probs = _decode(predictor, lists, view_prev, cfg.max_batch)
            if probs.shape != total.shape:
                raise ValueError(f"predict_batch returned shape {probs.shape}, expected {total.shape}")
            total += flip_maps(probs, view)
        n_maps = k_count * len(views.items)
        prob[live] = (total.reshape((live.size, k_count) + shape).sum(axis=1) / n_maps).astype(np.float32)
        pred[live] = prob[live] > cfg.threshold
        for d in live:
            out[d, k] = iou(pred[d], gt)
        if trace is not None:
            trace.append(([list(prompts[d][0]) for d in range(d_count)], prob.copy()))
        if cfg.target_iou:
            done = live[out[live, k] >= cfg.target_iou]  # NaN never reaches
            out[done, k + 1:] = out[done, k:k + 1]
            live = np.setdiff1d(live, done)
            if live.size == 0:
                break
    return out


def evaluate_image_instance(predictor, image: np.ndarray, gt: np.ndarray, cfg: EvalConfig,
                            dataset: str = "", instance: int = 0) -> np.ndarray:
    """Convenience: set the image on fresh views of ``predictor`` and evaluate one instance."""
    views = Views(predictor, cfg.flips)
    views.set_image(image)
    return evaluate_views(views, gt, cfg, dataset, instance)
