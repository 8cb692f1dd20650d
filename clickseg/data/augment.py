"""SegNext's training augmentation: one affine warp for the geometry, one lookup table for colour.

SegNext (albumentations 1.4) applies, in order: UniformRandomResize, Flip, RandomRotate90,
ShiftScaleRotate, RandomBrightnessContrast, RGBShift, ResizeLongestSide(T) and PadIfNeeded(T, T)
at the top left; each step is a separate pass over an image up to 1.4x larger than the source.
Here the random parameters of every step are drawn the same way, the five geometric steps are
composed into one 2x3 matrix (each as the pixel mapping OpenCV's resize / flip / np.rot90 /
warpAffine applies) and the source is resampled once, straight to the T x T output; the two
colour steps, which act per channel on uint8 values, are composed into one 256-entry table per
channel and applied to the image content (the zero padding on the right and bottom stays zero,
the corners that the rotation uncovered are shifted like SegNext's). Masks are resampled with
nearest neighbour, the image bilinearly, borders filled with 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from clickseg.config import AugmentConfig


@dataclass
class Geometry:
    """The composed mapping from source pixels to output pixels and the content size."""

    matrix: np.ndarray  # 2 x 3, output = matrix @ (x, y, 1) of the source
    height: int  # content rows at the top of the T x T output
    width: int  # content columns at its left
    uncovers: bool = False  # ShiftScaleRotate fired: the content has corners filled with 0


def _resize(w: int, h: int, new_w: int, new_h: int) -> np.ndarray:
    """cv2.resize's pixel mapping (pixel centres aligned) as a 3 x 3 matrix."""
    sx, sy = new_w / w, new_h / h
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])


def _flip(w: int, h: int, code: int) -> np.ndarray:
    """cv2.flip: code 1 horizontal, 0 vertical, -1 both."""
    m = np.eye(3)
    if code in (1, -1):
        m[0] = [-1, 0, w - 1]
    if code in (0, -1):
        m[1] = [0, -1, h - 1]
    return m


_ROT90 = np.array([[0.0, 1, 0], [-1, 0, 0], [0, 0, 1]])  # np.rot90 once: (x, y) -> (y, w - 1 - x)


def draw_geometry(h: int, w: int, size: int, cfg: AugmentConfig, rng: np.random.Generator) -> Geometry:
    """Draw SegNext's geometric steps for an h x w source and compose them for output side ``size``."""
    s = rng.uniform(cfg.scale_min, cfg.scale_max)  # UniformRandomResize
    nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
    m = _resize(w, h, nw, nh)
    h, w = nh, nw
    if rng.random() < cfg.flip_prob:  # Flip: cv2.flip code uniform in {-1, 0, 1}
        m = _flip(w, h, int(rng.integers(-1, 2))) @ m
    if rng.random() < cfg.rotate90_prob:  # RandomRotate90: k uniform in {0, 1, 2, 3}
        for _ in range(int(rng.integers(0, 4))):
            rot = _ROT90.copy()
            rot[1, 2] = w - 1
            m = rot @ m
            h, w = w, h
    uncovers = rng.random() < cfg.shift_rotate_prob
    if uncovers:  # ShiftScaleRotate, scale 1, same output size
        angle = rng.uniform(-cfg.rotate_limit, cfg.rotate_limit)
        dx, dy = rng.uniform(-cfg.shift_limit, cfg.shift_limit, size=2)
        ssr = np.vstack([cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0), [0, 0, 1]])
        ssr[0, 2] += dx * w
        ssr[1, 2] += dy * h
        m = ssr @ m
    scale = size / max(h, w)  # ResizeLongestSide(size)
    nh, nw = (size, int(round(w * scale))) if h > w else (int(round(h * scale)), size)
    m = _resize(w, h, max(1, nw), max(1, nh)) @ m
    return Geometry(m[:2], max(1, nh), max(1, nw), uncovers)


def draw_colour_lut(cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray | None:
    """(256, 1, 3) uint8 table: RandomBrightnessContrast then RGBShift, or None when neither fires.

    Brightness/contrast: v * alpha + beta * 255, alpha = 1 + U(contrast_limit),
    beta = U(brightness_limit); RGBShift: v + U(+-limit) per channel; each step clipped to
    0..255 and truncated to uint8, as albumentations does for uint8 images.
    """
    lut = np.repeat(np.arange(256, dtype=np.float32)[:, None], 3, axis=1)
    changed = False
    if rng.random() < cfg.brightness_contrast_prob:
        alpha = 1.0 + rng.uniform(*cfg.contrast_limit)
        beta = rng.uniform(*cfg.brightness_limit)
        lut = np.clip(lut * np.float32(alpha) + np.float32(beta * 255), 0, 255).astype(np.uint8).astype(np.float32)
        changed = True
    if rng.random() < cfg.rgb_shift_prob:
        shifts = rng.uniform(-cfg.rgb_shift_limit, cfg.rgb_shift_limit, size=3).astype(np.float32)
        lut = np.clip(lut + shifts[None], 0, 255).astype(np.uint8).astype(np.float32)
        changed = True
    return lut.astype(np.uint8)[:, None, :] if changed else None


def _warp_layers(layers: np.ndarray, geo: Geometry, size: int) -> np.ndarray:
    """Each layer resampled with nearest neighbour into the top left of a zero (L, T, T) array."""
    dtype = np.float32 if layers.dtype == np.int32 else layers.dtype  # warpAffine has no int32
    out = np.zeros((layers.shape[0], size, size), dtype)
    for i, layer in enumerate(layers):
        cv2.warpAffine(layer.astype(dtype, copy=False), geo.matrix, (geo.width, geo.height),
                       dst=out[i, :geo.height, :geo.width], flags=cv2.INTER_NEAREST,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out.astype(layers.dtype, copy=False)


def augment(image: np.ndarray, layers: np.ndarray, size: int, cfg: AugmentConfig,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """One draw of the augmentation: ((3, T, T) uint8 image, (L, T, T) layers, geometry).

    The colour table acts per pixel value, so it is applied to the smaller of the source and
    the content; either way the corners the rotation uncovers get the table's value of 0, as
    SegNext's zeros do after its colour steps, and the padding stays 0.
    """
    h, w = image.shape[:2]
    geo = draw_geometry(h, w, size, cfg, rng)
    lut = draw_colour_lut(cfg, rng)
    colour_first = lut is not None and h * w <= geo.height * geo.width  # on the smaller image
    border = (0, 0, 0)
    if colour_first:
        image = cv2.LUT(image, lut)
        border = tuple(int(v) for v in lut[0, 0])
    # Without ShiftScaleRotate only resizes touch the edges, and cv2.resize repeats edge pixels.
    mode = cv2.BORDER_CONSTANT if geo.uncovers else cv2.BORDER_REPLICATE
    out = np.zeros((3, size, size), np.uint8)
    for c, plane in enumerate(cv2.split(image)):  # channels first, as the model takes them
        content = out[c, :geo.height, :geo.width]
        cv2.warpAffine(plane, geo.matrix, (geo.width, geo.height), dst=content,
                       flags=cv2.INTER_LINEAR, borderMode=mode, borderValue=border[c])
        if lut is not None and not colour_first:
            cv2.LUT(content, np.ascontiguousarray(lut[:, :, c]), dst=content)
    return out, _warp_layers(layers, geo, size), geo
