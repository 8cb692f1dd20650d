"""Per-sample training transforms: choose an object, rescale, flip and crop to T x T."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Crop:
    image: np.ndarray  # T x T x 3 uint8
    mask: np.ndarray   # T x T bool, the chosen object


def candidate_objects(objects: list, stuff_prob: float, rng: np.random.Generator) -> list:
    """Objects eligible as training targets: things always, stuff with probability ``stuff_prob`` per sample."""
    keep_stuff = rng.random() < stuff_prob
    return [o for o in objects if (keep_stuff or not o.is_stuff) and o.mask.any()]


def random_crop(image: np.ndarray, masks: list[np.ndarray], size: int, scale_range: tuple[float, float],
                rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rescale so the short side is ``size * s`` (s uniform in ``scale_range``), flip half the time,
    zero-pad to at least ``size`` and take a random ``size`` x ``size`` crop."""
    h, w = image.shape[:2]
    s = rng.uniform(*scale_range) * size / min(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    masks = [cv2.resize(m.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST) for m in masks]
    if rng.random() < 0.5:
        image = image[:, ::-1]
        masks = [m[:, ::-1] for m in masks]
    ph, pw = max(0, size - nh), max(0, size - nw)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
        masks = [np.pad(m, ((0, ph), (0, pw))) for m in masks]
    y = int(rng.integers(0, image.shape[0] - size + 1))
    x = int(rng.integers(0, image.shape[1] - size + 1))
    image = np.ascontiguousarray(image[y:y + size, x:x + size])
    masks = [np.ascontiguousarray(m[y:y + size, x:x + size]).astype(bool) for m in masks]
    return image, masks


def make_crop(sample, size: int, stuff_prob: float, min_area: int, scale_range: tuple[float, float],
              rng: np.random.Generator, attempts: int = 4) -> Crop | None:
    """A training crop of one object, or None when the sample has no usable object."""
    objects = candidate_objects(sample.objects, stuff_prob, rng)
    if not objects:
        return None
    for _ in range(attempts):
        target = objects[int(rng.integers(len(objects)))]
        image, (mask,) = random_crop(sample.image, [target.mask], size, scale_range, rng)
        if mask.sum() >= min_area:
            return Crop(image, mask)
    return None
