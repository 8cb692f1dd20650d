"""Seeded synthetic source datasets in the exact on-disk layouts the converters read (README: Datasets).

Scenes are smooth textured backgrounds (upsampled low-frequency noise plus a
gradient) with objects of varied shape (ellipses, polygons, blobs, blobs with a
thin stick, rings with a hole), each filled with its own smooth texture in a
colour far from the background. Later objects occlude earlier ones and the
annotation of an occluded object is its visible part. COCO+LVIS scenes add
stuff regions (a "ground" below a wavy horizon), parts inside objects
(parent/child pairs in a different layer than their parent) and, at fixed
positions, images with no object at all (``index % 10 == 3``) or only stuff
(``index % 10 == 7``).

Every image draws from its own generator seeded by ``(seed, dataset, index)``,
so output is byte-identical for a seed and independent of ``n_images``.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

import cv2
import numpy as np

from .format import pack_masks

__all__ = ["Scene", "make_scene", "write_cocolvis", "write_davis", "write_hqseg44k", "write_lvis_panoptic"]

Size = Union[int, tuple[int, int], tuple[tuple[int, int], tuple[int, int]]]
_JPEG = [cv2.IMWRITE_JPEG_QUALITY, 90]
_COCOLVIS, _DAVIS, _HQSEG = 1, 2, 3  # dataset tags in the per-image seed


@dataclass
class Scene:
    """A rendered image and its visible object masks (``masks[i]`` is H x W bool)."""

    image: np.ndarray  # H x W x 3 uint8 RGB
    masks: list[np.ndarray]
    is_stuff: list[bool]
    parent: list[int | None]  # index into masks


def _pick_size(rng: np.random.Generator, size: Size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    if isinstance(h, (tuple, list)):
        return int(rng.integers(h[0], h[1] + 1)), int(rng.integers(w[0], w[1] + 1))
    return int(h), int(w)


def _field(rng: np.random.Generator, h: int, w: int, grid: int, channels: int) -> np.ndarray:
    """Smooth noise in roughly [-1, 1]: a grid x grid random field upsampled bicubically."""
    small = rng.standard_normal((grid, grid, channels)).astype(np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return big.reshape(h, w, channels)


def _texture(rng: np.random.Generator, h: int, w: int, colour: np.ndarray, amplitude: float, stripes: bool = False) -> np.ndarray:
    """A colour with smooth brightness variation, a little hue variation, a gradient and optional soft stripes."""
    tex = colour + amplitude * (_field(rng, h, w, 3, 1) + 0.4 * _field(rng, h, w, 9, 1))
    tex += 0.35 * amplitude * _field(rng, h, w, 3, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)[..., None]
    tex += rng.uniform(-30, 30) * ramp
    if stripes:
        period = rng.uniform(6, 20)
        tex += 0.5 * amplitude * np.sin(2 * np.pi * ramp * max(h, w) / period)
    return tex


def _distinct_colour(rng: np.random.Generator, avoid: list[np.ndarray], min_dist: float = 100.0) -> np.ndarray:
    best, best_d = None, -1.0
    for _ in range(20):
        c = rng.uniform(20, 235, 3).astype(np.float32)
        d = min((float(np.linalg.norm(c - a)) for a in avoid), default=1e9)
        if d >= min_dist:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _shape(rng: np.random.Generator, h: int, w: int, kind: str, cx: int, cy: int, r: float) -> np.ndarray:
    """A filled shape as a uint8 0/1 mask."""
    m = np.zeros((h, w), np.uint8)
    if kind in ("ellipse", "ring"):
        axes = (max(2, int(r)), max(2, int(r * rng.uniform(0.5, 1.0))))
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(m, (cx, cy), axes, angle, 0, 360, 1, -1)
        if kind == "ring":  # a hole showing the background
            inner = (max(1, int(axes[0] * rng.uniform(0.4, 0.6))), max(1, int(axes[1] * rng.uniform(0.4, 0.6))))
            cv2.ellipse(m, (cx, cy), inner, angle, 0, 360, 0, -1)
    elif kind == "polygon":
        n = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = r * rng.uniform(0.5, 1.0, n)
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
        cv2.fillPoly(m, [pts.round().astype(np.int32)], 1)
    else:  # "blob" and "stick": a wobbly closed outline, the latter with a thin limb
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        radii = np.ones_like(t)
        for k in (2, 3, 5):
            radii += rng.uniform(0, 0.25) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
        radii = r * radii / radii.max()
        pts = np.stack([cx + radii * np.cos(t), cy + radii * np.sin(t)], 1)
        cv2.fillPoly(m, [pts.round().astype(np.int32)], 1)
        if kind == "stick":
            a = rng.uniform(0, 2 * np.pi)
            length = r * rng.uniform(1.4, 2.2)
            end = (int(cx + length * np.cos(a)), int(cy + length * np.sin(a)))
            cv2.line(m, (cx, cy), end, 1, int(rng.integers(1, 4)))
    return m


def _composite(image: np.ndarray, shape: np.ndarray, texture: np.ndarray) -> None:
    """Paint ``texture`` where ``shape`` is set, with a slightly soft edge."""
    alpha = cv2.GaussianBlur(shape.astype(np.float32), (3, 3), 0.6)[..., None]
    image *= 1 - alpha
    image += alpha * texture


def make_scene(
    rng: np.random.Generator,
    h: int,
    w: int,
    n_objects: int,
    with_stuff: bool,
    with_parts: bool = True,
    radius: tuple[float, float] = (0.1, 0.28),
) -> Scene:
    """Render one scene; objects whose visible part is tiny are left out of the annotation.

    ``radius`` is the range of object radii as a fraction of the shorter side.
    """
    bg_colour = rng.uniform(40, 215, 3).astype(np.float32)
    image = _texture(rng, h, w, bg_colour, 30.0)
    colours = [bg_colour]
    shapes: list[np.ndarray] = []  # full (amodal) shapes in drawing order
    stuff_flags: list[bool] = []
    parent: list[int | None] = []
    if with_stuff:
        xs = np.arange(w, dtype=np.float32)
        horizon = h * rng.uniform(0.55, 0.8) + h * 0.05 * np.sin(xs / w * 2 * np.pi * rng.uniform(0.5, 2) + rng.uniform(0, 6))
        region = (np.arange(h, dtype=np.float32)[:, None] > horizon[None, :]).astype(np.uint8)
        colour = _distinct_colour(rng, colours, 60.0)
        colours.append(colour)
        _composite(image, region, _texture(rng, h, w, colour, 20.0))
        shapes.append(region)
        stuff_flags.append(True)
        parent.append(None)
    kinds = ("ellipse", "polygon", "blob", "stick", "ring")
    for _ in range(n_objects):
        kind = kinds[int(rng.integers(len(kinds)))]
        r = rng.uniform(*radius) * min(h, w)
        cx, cy = int(rng.uniform(0.1, 0.9) * w), int(rng.uniform(0.1, 0.9) * h)
        shape = _shape(rng, h, w, kind, cx, cy, r)
        colour = _distinct_colour(rng, colours[:2])
        _composite(image, shape, _texture(rng, h, w, colour, 15.0, stripes=rng.random() < 0.3))
        shapes.append(shape)
        stuff_flags.append(False)
        parent.append(None)
        if with_parts and kind in ("ellipse", "blob", "polygon") and rng.random() < 0.35:
            part = _shape(rng, h, w, "ellipse", cx, cy, r * rng.uniform(0.25, 0.4)) & shape
            part_colour = _distinct_colour(rng, [colour], 70.0)
            _composite(image, part, _texture(rng, h, w, part_colour, 10.0))
            shapes.append(part)
            stuff_flags.append(False)
            parent.append(len(shapes) - 2)
    image += rng.normal(0, 2.0, image.shape).astype(np.float32)
    rgb = np.clip(image, 0, 255).round().astype(np.uint8)

    # Visible masks: a shape minus every later shape that is not one of its parts.
    full = [s.astype(bool) for s in shapes]
    visible = []
    for i in range(len(shapes)):
        occluders = np.zeros((h, w), bool)
        for j in range(i + 1, len(shapes)):
            if parent[j] != i:
                occluders |= full[j]
        visible.append(full[i] & ~occluders)
    min_area = max(20, h * w // 1000)
    keep = [bool(v.sum() >= (min_area // 2 if parent[i] is not None else min_area)) for i, v in enumerate(visible)]
    for i, p in enumerate(parent):
        if p is not None and not keep[p]:
            keep[i] = False
    index = {old: new for new, old in enumerate(i for i in range(len(shapes)) if keep[i])}
    return Scene(
        image=rgb,
        masks=[visible[i] for i in index],
        is_stuff=[stuff_flags[i] for i in index],
        parent=[None if parent[i] is None else index[parent[i]] for i in index],
    )


def _pack(masks: list[np.ndarray], h: int, w: int) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """RITM-style uint8 layers (PNG-encodable) and (layer, value) per mask."""
    layers, mapping = pack_masks(masks, h, w)
    if any(value > 255 for _, value in mapping):
        raise OverflowError("more than 255 objects in one layer do not fit RITM's uint8 PNG layers")
    return [layer.astype(np.uint8) for layer in layers], mapping


def _jpeg(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), _JPEG)[1].tobytes()


def _numpy1_pickle(obj: object) -> bytes:
    """Protocol-3 pickle naming numpy globals as numpy 1 did (as the released files do)."""
    data = pickle.dumps(obj, protocol=3)
    return data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_cocolvis(
    root: str | os.PathLike[str], n_images: int, size: Size = 256, seed: int = 0, split: str = "train"
) -> list[str]:
    """Write ``<root>/<split>/{images,masks,hannotation.pickle}``; return the image ids.

    ``size`` is an int (square), ``(H, W)`` or ``((Hmin, Hmax), (Wmin, Wmax))``.
    """
    split_dir = Path(root) / split
    (split_dir / "images").mkdir(parents=True, exist_ok=True)
    (split_dir / "masks").mkdir(parents=True, exist_ok=True)
    annotation = {}
    ids = []
    for i in range(n_images):
        rng = np.random.default_rng([seed, _COCOLVIS, i])
        h, w = _pick_size(rng, size)
        if i % 10 == 3:
            n_obj, stuff = 0, False
        elif i % 10 == 7:
            n_obj, stuff = 0, True
        else:
            n_obj, stuff = int(rng.integers(1, 7)), bool(rng.random() < 0.4)
        scene = make_scene(rng, h, w, n_obj, stuff)
        # Things first (ids 0..N-1), then stuff (ids >= N), as in the released annotations.
        order = [k for k in range(len(scene.masks)) if not scene.is_stuff[k]]
        order += [k for k in range(len(scene.masks)) if scene.is_stuff[k]]
        new_id = {old: new for new, old in enumerate(order)}
        n_things = sum(not s for s in scene.is_stuff)
        layers, mapping = _pack([scene.masks[k] for k in order], h, w)
        hierarchy: dict[int, dict | None] = {}
        for k in order[:n_things]:
            children = [new_id[c] for c, p in enumerate(scene.parent) if p == k]
            p = scene.parent[k]
            hierarchy[new_id[k]] = (
                None
                if p is None and not children
                else {"parent": None if p is None else new_id[p], "children": children, "node_level": 0 if p is None else 1}
            )
        image_id = f"{i:012d}"
        encoded = [cv2.imencode(".png", layer)[1] for layer in layers]
        # Layers from different OpenCV versions come as (N,) or (N, 1): write both.
        encoded = [buf.reshape(-1, 1) if i % 2 else buf.reshape(-1) for buf in encoded]
        (split_dir / "masks" / f"{image_id}.pickle").write_bytes(_numpy1_pickle((encoded, mapping)))
        (split_dir / "images" / f"{image_id}.jpg").write_bytes(_jpeg(scene.image))
        annotation[image_id] = {"hierarchy": hierarchy, "num_instance_masks": n_things}
        ids.append(image_id)
    (split_dir / "hannotation.pickle").write_bytes(pickle.dumps(annotation, protocol=3))
    return ids


def _write_object_pairs(images: Path, masks: Path, names: list[str], seed: Sequence[int], size: Size,
                        soft_edges: bool = True) -> None:
    """One foreground object per image: ``images/<name>.jpg`` with a 3-channel ``masks/<name>.png``.

    With ``soft_edges`` every other mask is anti-aliased (1..254 on the border, 255 inside).
    Up to two unannotated distractors lie behind the object.
    """
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        rng = np.random.default_rng([*seed, i])
        h, w = _pick_size(rng, size)
        scene = make_scene(rng, h, w, int(rng.integers(1, 4)), with_stuff=False, with_parts=False, radius=(0.15, 0.35))
        for _ in range(10):  # the target is the last drawn object that is still visible
            if scene.masks:
                break
            scene = make_scene(rng, h, w, 1, with_stuff=False, with_parts=False, radius=(0.15, 0.35))
        mask = scene.masks[-1].astype(np.uint8) * 255 if scene.masks else np.zeros((h, w), np.uint8)
        if soft_edges and i % 2 == 1:
            mask = np.clip(np.round(cv2.GaussianBlur(mask.astype(np.float32), (5, 5), 0.8)), 0, 255).astype(np.uint8)
        (images / f"{name}.jpg").write_bytes(_jpeg(scene.image))
        (masks / f"{name}.png").write_bytes(cv2.imencode(".png", np.repeat(mask[..., None], 3, axis=2))[1].tobytes())


def write_davis(root: str | os.PathLike[str], n_images: int, seed: int = 0, size: Size = 256) -> list[str]:
    """Write ``<root>/img/<name>.jpg`` and ``<root>/gt/<name>.png`` (one object each); return the names.

    Masks are 3-channel; every other image has soft edges (values 1..254 on
    the border, 255 inside). Up to two unannotated distractors lie behind the object.
    """
    root = Path(root)
    names = [f"synth_{i:04d}" for i in range(n_images)]
    _write_object_pairs(root / "img", root / "gt", names, (seed, _DAVIS), size)
    return names


def write_hqseg44k(root: str | os.PathLike[str], n_per_subset: int, split: str = "val", seed: int = 0,
                   size: Size = 256) -> dict[str, list[str]]:
    """Write every HQSeg-44K subset of ``split`` in its folder layout; return {subset: names}.

    DIS5K names carry ``#`` and the others spaces and dots, as real file names do; the
    cascade_psp subsets keep images and masks in one folder.
    """
    from .folder import HQSEG44K_SUBSETS

    root = Path(root)
    out = {}
    for k, (subset_split, name, images, masks) in enumerate(HQSEG44K_SUBSETS):
        if subset_split != split:
            continue
        if name.startswith("DIS5K"):
            names = [f"{i + 1}#Accessories#{i + 1}#Bag#{i:04d}" for i in range(n_per_subset)]
        else:
            names = [f"{name} img.{i:04d}" for i in range(n_per_subset)]
        _write_object_pairs(root / images, root / masks, names, (seed, _HQSEG, k), size)
        out[name] = names
    return out


@dataclass
class LvisPanopticImage:
    """One image of :func:`write_lvis_panoptic`.

    ``lvis``: per LVIS annotation its polygons (flat ``[x0, y0, x1, y1, ...]`` lists).
    ``panoptic``: ``(mask, is_thing, is_crowd)`` per panoptic segment, painted in order (a later
    segment overwrites an earlier one, as panoptic PNGs hold one segment per pixel).
    """

    stem: str
    height: int
    width: int
    lvis: list[list[list[float]]] = field(default_factory=list)
    panoptic: list[tuple[np.ndarray, bool, bool]] = field(default_factory=list)
    in_lvis: bool = True
    in_panoptic: bool = True
    extra_segment_ids: list[int] = field(default_factory=list)  # listed in segments_info, absent from the PNG


def _panoptic_rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids -> COCO panoptic RGB (id = R + 256 G + 256^2 B)."""
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def write_lvis_panoptic(root: str | os.PathLike[str], images: Sequence[LvisPanopticImage], seed: int = 0,
                        split: str = "train") -> dict[str, Path]:
    """Write LVIS v1 and COCO 2017 panoptic inputs in their official formats; return their paths.

    ``<root>/lvis_v1_<split>.json``, ``<root>/annotations/panoptic_<split>2017.json``,
    ``<root>/annotations/panoptic_<split>2017/<stem>.png`` and ``<root>/<split>2017/<stem>.jpg``.
    Category 1 is a thing, 2 is stuff; segment ids count from 1 per image with a large stride
    so that all three RGB channels are used.
    """
    root = Path(root)
    image_dir, png_dir = root / f"{split}2017", root / "annotations" / f"panoptic_{split}2017"
    image_dir.mkdir(parents=True, exist_ok=True)
    png_dir.mkdir(parents=True, exist_ok=True)
    lvis: dict = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing", "frequency": "f"}]}
    panoptic: dict = {"images": [], "annotations": [], "categories": [
        {"id": 1, "name": "thing", "isthing": 1, "supercategory": "thing"},
        {"id": 2, "name": "stuff", "isthing": 0, "supercategory": "stuff"}]}
    ann_id = 1
    for k, spec in enumerate(images):
        rng = np.random.default_rng([seed, 4, k])
        image_id = k + 1
        colour = rng.uniform(40, 215, 3)
        (image_dir / f"{spec.stem}.jpg").write_bytes(
            _jpeg(np.clip(_texture(rng, spec.height, spec.width, colour, 30.0), 0, 255).astype(np.uint8)))
        file_name = f"{spec.stem}.jpg"
        if spec.in_lvis:
            lvis["images"].append({"id": image_id, "height": spec.height, "width": spec.width,
                                   "coco_url": f"http://images.cocodataset.org/{split}2017/{file_name}"})
            for polygons in spec.lvis:
                lvis["annotations"].append({"id": ann_id, "image_id": image_id, "category_id": 1,
                                            "segmentation": polygons, "area": 0.0, "bbox": [0, 0, 0, 0]})
                ann_id += 1
        if spec.in_panoptic:
            ids = np.zeros((spec.height, spec.width), np.int64)
            segments = []
            for s, (mask, thing, crowd) in enumerate(spec.panoptic):
                seg_id = 1 + s * 70001  # spreads over R, G and B
                ids[mask] = seg_id
                segments.append({"id": seg_id, "category_id": 1 if thing else 2, "iscrowd": int(crowd),
                                 "area": int(mask.sum()), "bbox": [0, 0, 0, 0]})
            segments += [{"id": i, "category_id": 1, "iscrowd": 0, "area": 0, "bbox": [0, 0, 0, 0]}
                         for i in spec.extra_segment_ids]
            (png_dir / f"{spec.stem}.png").write_bytes(
                cv2.imencode(".png", _panoptic_rgb(ids)[..., ::-1])[1].tobytes())
            panoptic["images"].append({"id": image_id, "file_name": file_name,
                                       "height": spec.height, "width": spec.width})
            panoptic["annotations"].append({"image_id": image_id, "file_name": f"{spec.stem}.png",
                                            "segments_info": segments})
    lvis_json = root / f"lvis_v1_{split}.json"
    panoptic_json = root / "annotations" / f"panoptic_{split}2017.json"
    lvis_json.write_text(json.dumps(lvis))
    panoptic_json.write_text(json.dumps(panoptic))
    return {"lvis": lvis_json, "panoptic_json": panoptic_json, "panoptic_dir": png_dir, "images": image_dir}
