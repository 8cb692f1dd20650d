"""Build COCO+LVIS from the original LVIS v1 and COCO 2017 panoptic annotations, into shards.

The same objects as RITM's COCO+LVIS conversion, per image (every threshold is an option
with RITM's value as the default):

1. LVIS objects: each polygon of an annotation is rounded to integer pixels and filled
   with OpenCV's ``fillPoly``; objects smaller than ``min_object_area`` pixels are dropped.
2. COCO panoptic "thing" segments (crowd ones included, as RITM does) below
   ``min_object_area`` are dropped, and so is every COCO thing that an LVIS object matches:
   box IoU > ``coco_match_iou`` and mask IoU > ``coco_match_iou``.
3. Near-duplicate LVIS objects: an LVIS object is dropped when a later LVIS object of the
   same image has box IoU > ``duplicate_box_iou`` and mask IoU > ``duplicate_mask_iou``.
4. Objects, in this order: the kept COCO things, then the kept LVIS objects. An image with
   none is not part of the dataset (skipped with reason ``no_objects``, kind ``rule``: it does
   not count toward ``--max-skip-fraction``).
5. The hierarchy (parent / children by containment, :func:`containment_hierarchy`).
6. COCO "stuff" segments minus every object pixel, kept when larger than
   ``min_stuff_area`` pixels, appended as stuff (ids after the things).

Images are the panoptic annotation file's images that LVIS annotates (matched by file stem;
a stem listed twice counts once, the last entry), in sorted stem order as RITM's COCO+LVIS
dataset reads them. Overlapping objects are kept as separate masks. Image and PNG files must
resolve inside the ``images`` or ``panoptic_dir`` folder (either may be a link), unless
``follow_links``; others are skipped as ``outside_root``.

Known differences from RITM: a polygon with fewer than 3 points is skipped (RITM's
``fillPoly`` draws it as a line or a point); an image whose size differs from LVIS's is
skipped (``size_mismatch``). OpenCV 4.11 and later fill polygons inside the image exactly as
4.7 did, but polygons with corners on or past the image border can differ in a few pixels
(measured: 7 of 300 LVIS-like border polygons, 9 pixels); the manifest records the version.
"""
from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from .checksum import sha256_file
from .converter import ConversionError, Converter, SkipItem, SourceSample, load_image
from .format import pack_masks

__all__ = ["BuildOptions", "CocoLvisBuildConverter", "build_objects", "check_opencv", "containment_hierarchy",
           "rasterize_polygons"]

# fillPoly in OpenCV 4.8.0 - 4.10.x adds pixels along steep polygon edges; 4.5 - 4.7 (what
# RITM used) and 4.11 onwards agree.
BAD_FILLPOLY = ((4, 8), (4, 10))


def check_opencv(version: str = cv2.__version__) -> None:
    """Refuse OpenCV versions whose ``fillPoly`` rasterises LVIS polygons differently."""
    major_minor = tuple(int(p) for p in version.split(".")[:2])
    if BAD_FILLPOLY[0] <= major_minor <= BAD_FILLPOLY[1]:
        raise ConversionError(
            f"OpenCV {version} fills polygons with extra pixels along steep edges (4.8 - 4.10 do), so the "
            f"LVIS masks would differ from RITM's; install opencv-python-headless 4.7 or >= 4.11")


@dataclass(frozen=True)
class BuildOptions:
    min_object_area: int = 80
    """Things (LVIS and COCO) need at least this many pixels."""
    coco_match_iou: float = 0.70
    """A COCO thing is dropped when an LVIS object has box IoU and mask IoU above this."""
    duplicate_box_iou: float = 0.70
    duplicate_mask_iou: float = 0.85
    """An LVIS object is dropped when a later one has box IoU and mask IoU above these."""
    min_stuff_area: int = 500
    """Stuff regions (minus every object pixel) need more than this many pixels."""
    hierarchy_box_ratio: float = 0.70
    hierarchy_mask_ratio: float = 0.80
    """A child must have this share of its box inside the parent's box and of its mask inside
    the parent's mask."""


# --------------------------------------------------------------------------- geometry


def rasterize_polygons(polygons: Sequence[Sequence[float]], height: int, width: int) -> tuple[np.ndarray, int]:
    """LVIS ``segmentation`` (flat ``[x0, y0, x1, y1, ...]`` lists) -> (H x W bool mask, polygons skipped).

    Each polygon's points are rounded half to even (numpy) and filled one polygon at a time;
    a polygon with fewer than 3 points is skipped and counted.
    """
    canvas = np.zeros((height, width), np.int32)
    skipped = 0
    for poly in polygons:
        points = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if len(points) < 3:
            skipped += 1
            continue
        cv2.fillPoly(canvas, np.round(points).astype(np.int32)[None], 1)
    return canvas == 1, skipped


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Inclusive (row min, row max, col min, col max) of a non-empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def _overlap_1d(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0) + 1)


def _box_iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """Product of the row-range and column-range IoUs (RITM's box IoU, inclusive pixel ranges)."""
    out = 1.0
    for k in (0, 2):
        inter = _overlap_1d(a[k], a[k + 1], b[k], b[k + 1])
        out *= inter / max(1e-6, max(a[k + 1], b[k + 1]) - min(a[k], b[k]) + 1)
    return out


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / np.logical_or(a, b).sum())


def containment_hierarchy(masks: Sequence[np.ndarray], box_ratio: float = 0.70,
                          mask_ratio: float = 0.80) -> list[tuple[int | None, list[int], int]]:
    """Parent, children and depth per mask, by containment, as RITM computes them.

    Masks are visited from the largest to the smallest (equal areas: the later index first).
    ``j`` lies inside ``i`` when at least ``box_ratio`` of ``j``'s box is inside ``i``'s box
    and more than ``mask_ratio`` of ``j``'s pixels are in ``i``. Each mask not yet placed
    that lies inside a larger mask ``i`` becomes a child of the deepest descendant of ``i``
    (searched through children in the order they were added, skipping smaller ones) that
    contains it, or of ``i`` itself.
    """
    n = len(masks)
    areas = [int(m.sum()) for m in masks]
    boxes = [_box(m) for m in masks]
    order = [i for i, _ in sorted(enumerate(areas), key=lambda t: (t[1], t[0]), reverse=True)]
    children: dict[int, list[int]] = defaultdict(list)
    parent: list[int | None] = [None] * n
    level = [0] * n
    placed = [False] * n

    def inside(j: int, i: int) -> bool:
        bi, bj = boxes[i], boxes[j]
        box_inter = _overlap_1d(bi[0], bi[1], bj[0], bj[1]) * _overlap_1d(bi[2], bi[3], bj[2], bj[3])
        if box_inter / ((bj[1] - bj[0] + 1) * (bj[3] - bj[2] + 1)) < box_ratio:
            return False
        return np.logical_and(masks[i], masks[j]).sum() / areas[j] > mask_ratio

    def deepest(root: int, j: int) -> int | None:
        for child in children[root]:
            if areas[child] >= areas[j]:
                found = deepest(child, j)
                if found is not None:
                    return found
        return root if inside(j, root) else None

    for a in range(n - 1):
        for b in range(a + 1, n):
            i, j = order[a], order[b]
            if placed[j] or not inside(j, i):
                continue
            p = deepest(i, j)
            children[p].append(j)
            placed[j], parent[j], level[j] = True, p, level[p] + 1
    return [(parent[i], list(children[i]), level[i]) for i in range(n)]


# --------------------------------------------------------------------------- one image


def build_objects(lvis: Sequence[np.ndarray], coco_things: Sequence[np.ndarray], stuff: Sequence[np.ndarray],
                  opts: BuildOptions = BuildOptions()) -> tuple[list[np.ndarray], int, list, Counter]:
    """The rules for one image: (masks, number of things, hierarchy of the things, rule counts).

    ``lvis`` in annotation order, ``coco_things`` and ``stuff`` in segment order, all full-size
    bool masks. The masks returned are the things (kept COCO, then kept LVIS) and then stuff.
    """
    counts: Counter[str] = Counter()
    lvis = [m for m in lvis if _count(counts, "lvis_below_min_area", m.sum() < opts.min_object_area)]
    coco = [m for m in coco_things if _count(counts, "coco_below_min_area", m.sum() < opts.min_object_area)]
    lvis_boxes, coco_boxes = [_box(m) for m in lvis], [_box(m) for m in coco]
    things = []
    for cm, cb in zip(coco, coco_boxes):
        matched = any(_box_iou(lb, cb) > opts.coco_match_iou and _mask_iou(lm, cm) > opts.coco_match_iou
                      for lm, lb in zip(lvis, lvis_boxes))
        counts["coco_matched_by_lvis" if matched else "coco_kept"] += 1
        if not matched:
            things.append(cm)
    for k, (lm, lb) in enumerate(zip(lvis, lvis_boxes)):
        duplicate = any(_box_iou(lb, ob) > opts.duplicate_box_iou and _mask_iou(lm, om) > opts.duplicate_mask_iou
                        for om, ob in zip(lvis[k + 1:], lvis_boxes[k + 1:]))
        counts["lvis_duplicates" if duplicate else "lvis_kept"] += 1
        if not duplicate:
            things.append(lm)
    if not things:
        return [], 0, [], counts
    hierarchy = containment_hierarchy(things, opts.hierarchy_box_ratio, opts.hierarchy_mask_ratio)
    covered = np.logical_or.reduce(things)
    regions = []
    for m in stuff:
        region = m & ~covered
        keep = region.sum() > opts.min_stuff_area
        counts["stuff_kept" if keep else "stuff_below_min_area"] += 1
        if keep:
            regions.append(region)
    return things + regions, len(things), hierarchy, counts


def _count(counts: Counter, key: str, dropped: bool) -> bool:
    if dropped:
        counts[key] += 1
    return not dropped


# --------------------------------------------------------------------------- converter

# One image: (stem, image file, panoptic PNG file, (height, width) from LVIS,
#             [LVIS segmentation per annotation], [(segment id, is thing) per panoptic segment])
Item = tuple[str, str, str, tuple[int, int], list, list]


def _read_json(path: Path, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConversionError(f"{what} {path} not found") from None
    except (OSError, ValueError) as e:
        raise ConversionError(f"{what} {path}: {e}") from None
    if not isinstance(data, dict):
        raise ConversionError(f"{what} {path}: expected a JSON object")
    return data


@dataclass
class CocoLvisBuildConverter(Converter):
    """``launch.py shard cocolvis-build``: LVIS json + COCO panoptic json/PNGs + COCO images -> shards."""

    lvis_json: Path
    panoptic_json: Path
    panoptic_dir: Path
    images: Path
    split: str = "train"
    build: BuildOptions = BuildOptions()
    format: str = "cocolvis-build"
    checksum_sources: bool = False
    follow_links: bool = False
    root: Path = field(init=False)
    listing_counts: dict[str, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.lvis_json, self.panoptic_json = Path(self.lvis_json), Path(self.panoptic_json)
        self.panoptic_dir, self.images = Path(self.panoptic_dir), Path(self.images)
        self.root = Path(os.path.commonpath([self.images.resolve(), self.panoptic_dir.resolve()]))
        check_opencv()
        for d in (self.images, self.panoptic_dir):
            if not d.is_dir():
                raise FileNotFoundError(f"cocolvis-build: folder {d} does not exist")

    def list_items(self) -> list[Item]:
        lvis = _read_json(self.lvis_json, "LVIS annotations")
        panoptic = _read_json(self.panoptic_json, "COCO panoptic annotations")
        counts: Counter[str] = Counter()
        try:
            images = {img["id"]: img for img in lvis["images"]}
            per_image: dict[Any, list] = defaultdict(list)
            for ann in lvis["annotations"]:
                if ann["image_id"] in images:
                    per_image[ann["image_id"]].append(ann["segmentation"])
                else:
                    counts["lvis_annotation_without_image"] += 1
            by_stem = {Path(img["coco_url"]).stem: img for img in lvis["images"] if per_image.get(img["id"])}
            is_thing = {c["id"]: bool(c["isthing"]) for c in panoptic["categories"]}
            by_item: dict[str, Item] = {}
            for ann in panoptic["annotations"]:
                stem = Path(ann["file_name"]).stem
                img = by_stem.get(stem)
                if img is None:
                    counts["coco_image_not_in_lvis"] += 1
                    continue
                if stem in by_item:
                    counts["panoptic_duplicate_image"] += 1
                segments = [(int(s["id"]), is_thing.get(s["category_id"], False)) for s in ann["segments_info"]]
                by_item[stem] = (stem, f"{stem}.jpg", ann["file_name"], (int(img["height"]), int(img["width"])),
                                 per_image[img["id"]], segments)
            items = [by_item[stem] for stem in sorted(by_item)]
        except (KeyError, TypeError, ValueError) as e:
            raise ConversionError(f"{self.lvis_json} / {self.panoptic_json}: unexpected structure ({e!r})") from None
        counts["lvis_images_without_panoptic"] = len(by_stem) - len(items)
        self.listing_counts = dict(sorted(counts.items()))
        return items

    def item_name(self, item: Item) -> str:
        return Path(os.path.relpath(self.images / item[1], self.root)).as_posix()

    def item_files(self, item: Item) -> list[Path]:
        return [self.images / item[1], self.panoptic_dir / item[2]]

    def extra_files(self) -> list[Path]:
        return [self.lvis_json, self.panoptic_json]

    def source_roots(self) -> list[Path]:
        """The two folders (``root``, their common parent, may be far up)."""
        return [self.images, self.panoptic_dir]

    def options(self) -> dict[str, Any]:
        # a new OpenCV rebuilds the shards
        return {**self.build.__dict__, "opencv": cv2.__version__, **super().options()}

    def load(self, item: Item) -> SourceSample:
        stem, image_file, png_file, (height, width), lvis_segmentations, segments = item
        image_bytes, ext, size, flags = load_image(self.images / image_file)
        if size != (height, width):
            raise SkipItem("size_mismatch", f"image {size} vs LVIS {(height, width)}")
        png = cv2.imread(str(self.panoptic_dir / png_file), cv2.IMREAD_UNCHANGED)  # B, G, R as stored
        if png is None:
            raise SkipItem("missing_panoptic_png", str(self.panoptic_dir / png_file))
        if png.ndim != 3 or png.shape[2] < 3 or png.dtype != np.uint8:
            raise SkipItem("bad_panoptic_png", f"{png_file}: {png.dtype} of shape {png.shape}, not 8-bit RGB")
        png = png[..., :3]
        if png.shape[:2] != (height, width):
            raise SkipItem("panoptic_size_mismatch", f"{png_file} is {png.shape[:2]}, image {(height, width)}")
        ids = (png[..., 0].astype(np.int32) << 16) | (png[..., 1].astype(np.int32) << 8) | png[..., 2]
        counts: Counter[str] = Counter()
        lvis = []
        for segmentation in lvis_segmentations:
            if not isinstance(segmentation, list):  # RLE (crowd) annotations do not occur in LVIS v1
                counts["lvis_not_polygons"] += 1
                continue
            mask, bad = rasterize_polygons(segmentation, height, width)
            counts["polygon_too_few_points"] += bad
            if bad and "polygon_too_few_points" not in flags:
                flags.append("polygon_too_few_points")
            lvis.append(mask)
        present = set(np.unique(ids).tolist())
        coco, stuff = [], []
        for seg_id, thing in segments:
            if seg_id not in present:
                counts["segment_not_in_png"] += 1
                if "segment_not_in_png" not in flags:
                    flags.append("segment_not_in_png")
                continue
            (coco if thing else stuff).append(ids == seg_id)
        masks, n_things, hierarchy, rule_counts = build_objects(lvis, coco, stuff, self.build)
        counts.update(rule_counts)
        counts = Counter({k: v for k, v in counts.items() if v})
        if not masks:
            raise SkipItem("no_objects", f"{stem}: no object left after the rules", dict(counts), kind="rule")
        layers, placement = pack_masks(masks, height, width)
        objects = []
        for k, (layer, value) in enumerate(placement):
            parent, children = (hierarchy[k][0], hierarchy[k][1]) if k < n_things else (None, [])
            objects.append({"id": k, "layer": layer, "value": value, "is_stuff": k >= n_things,
                            "parent": parent, "children": children})
        return SourceSample(image_bytes, ext, layers, objects, self.item_name(item), flags, dict(counts))

    def summarize(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        rules: Counter[str] = Counter(self.listing_counts)
        for r in records:
            rules.update(r.get("extra", {}).get("counts", {}))
            rules.update(Counter(f"skipped_{e['reason']}" for e in r["skipped"]))
        return {"build": {
            "inputs": {"lvis_json": {"path": str(self.lvis_json), "sha256": sha256_file(self.lvis_json)},
                       "panoptic_json": {"path": str(self.panoptic_json), "sha256": sha256_file(self.panoptic_json)}},
            "opencv": cv2.__version__,
            "rules": dict(sorted(rules.items())),
        }}
