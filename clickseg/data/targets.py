"""One training sample as SegNext makes it: stuff, augmentation, object removal, target choice.

Per sample (SegNext's ``CocoLvisDataset`` + ``ISDataset`` + ``DSample`` + ``MultiPointSampler``):

1. stuff regions are root objects with probability ``data.stuff_prob``, else background;
2. the whole image is augmented to T x T (``clickseg.data.augment``); objects left without a
   pixel are dropped; when none is left the sample is kept with probability
   ``data.keep_background_prob``, otherwise the image is augmented again;
3. objects under ``data.min_object_area`` pixels (at T) are removed, their children attached to
   the nearest surviving ancestor (their pixels stay "not background");
4. the target is one root object, or with probability ``data.merge_objects_prob`` (two or more
   roots) the union of 2..``data.max_merged_objects`` distinct roots; with no object left the
   target is empty.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

import shards
from clickseg.config import Config
from clickseg.data.augment import augment

# A sample whose augmentations keep losing every object is given up after this many draws
# (SegNext would loop for ever on an object-less image with keep_background_prob 0).
MAX_AUGMENT_ATTEMPTS = 100


@dataclass
class Scene:
    """An augmented sample: the image, its layers, and the objects that survived, by index."""

    image: np.ndarray  # (3, T, T) uint8
    layers: np.ndarray  # (L, T, T) integer layers
    objects: list[shards.Object]  # the sample's objects in this draw (erased stuff excluded)
    areas: np.ndarray  # pixels of each object at T (0: lost by the augmentation)
    kept: list[int]  # indices of objects that survived the minimum area
    roots: list[int]  # kept objects without a kept ancestor
    content: tuple[int, int]  # (height, width) of the image content at the top left
    _foreground: np.ndarray | None = field(default=None, repr=False)

    def mask(self, index: int) -> np.ndarray:
        o = self.objects[index]
        return self.layers[o.layer] == o.value

    def foreground(self) -> np.ndarray:
        """Pixels of any live object, removed small ones included (erased stuff is background);
        computed once per scene (several negative strategies ask for it)."""
        if self._foreground is not None:
            return self._foreground
        fg = np.zeros(self.layers.shape[1:], bool)
        for li in range(self.layers.shape[0]):
            values = [o.value for o in self.objects if o.layer == li]
            if values:
                table = np.zeros(int(self.layers[li].max()) + 1 if self.layers[li].size else 1, bool)
                table[[v for v in values if v < len(table)]] = True
                fg |= table[self.layers[li]]
        self._foreground = fg
        return fg


@dataclass
class Target:
    """The chosen target: its object indices in the scene (empty: a background-only sample)."""

    members: list[int]
    mask: np.ndarray  # T x T bool, union of the members


def live_objects(sample: shards.Sample, stuff_prob: float, rng: np.random.Generator) -> list[shards.Object]:
    """The sample's objects for this draw: stuff kept as root objects with ``stuff_prob``, else erased."""
    keep_stuff = rng.random() < stuff_prob
    out = []
    for o in sample.objects:
        if o.is_stuff:
            if keep_stuff:
                out.append(shards.Object(o.id, None, True, None, [], o.layer, o.value))
        else:
            out.append(o)
    return out


def _value_counts(layer: np.ndarray) -> np.ndarray:
    """Pixels of each value of an integer layer (OpenCV's histogram: much faster than bincount)."""
    top = int(layer.max()) + 1 if layer.size else 1
    if layer.dtype in (np.uint8, np.uint16):
        return cv2.calcHist([layer], [0], None, [top], [0, top]).ravel().astype(np.int64)
    return np.bincount(layer.ravel(), minlength=top)


def _areas(layers: np.ndarray, objects: list[shards.Object]) -> np.ndarray:
    counts = [_value_counts(layer) for layer in layers]
    return np.array([counts[o.layer][o.value] if o.value < len(counts[o.layer]) else 0 for o in objects],
                    dtype=np.int64)


def surviving_roots(objects: list[shards.Object], kept: np.ndarray) -> list[int]:
    """Indices of kept objects without a kept ancestor: removing an object attaches its children
    to its parent, so an object's parent becomes its nearest kept ancestor."""
    index = {o.id: i for i, o in enumerate(objects)}
    roots = []
    for i, o in enumerate(objects):
        if not kept[i]:
            continue
        parent, seen = o.parent, set()
        while parent is not None and parent in index and parent not in seen and not kept[index[parent]]:
            seen.add(parent)
            parent = objects[index[parent]].parent
        if parent is None or parent not in index or not kept[index[parent]]:
            roots.append(i)
    return roots


def make_scene(sample: shards.Sample, cfg: Config, rng: np.random.Generator) -> Scene | None:
    """Steps 1-3: None when no draw in ``MAX_AUGMENT_ATTEMPTS`` was usable."""
    objects = live_objects(sample, cfg.data.stuff_prob, rng)
    if sample.layers is None:
        raise ValueError(f"sample {sample.key} was decoded without its layers")
    # With no object at all, no draw can keep one: SegNext repeats the draw until it keeps the
    # sample as background, and only that last, independent draw is seen, so draw once.
    attempts = MAX_AUGMENT_ATTEMPTS if objects else 1
    if not objects and cfg.data.keep_background_prob == 0:
        return None
    for _ in range(attempts):
        image, layers, geo = augment(sample.image, sample.layers, cfg.model.input_size, cfg.augment, rng)
        areas = _areas(layers, objects)
        present = areas > 0
        if present.any() or not objects or rng.random() < cfg.data.keep_background_prob:
            kept_flags = present & (areas >= cfg.data.min_object_area)
            return Scene(image, layers, objects, areas, list(np.flatnonzero(kept_flags)),
                         surviving_roots(objects, kept_flags), (geo.height, geo.width))
    return None


def choose_target(scene: Scene, cfg: Config, rng: np.random.Generator) -> Target:
    """Step 4."""
    roots = scene.roots
    if not roots:
        return Target([], np.zeros(scene.layers.shape[1:], bool))
    if len(roots) > 1 and rng.random() < cfg.data.merge_objects_prob:
        n = int(rng.integers(2, min(len(roots), cfg.data.max_merged_objects) + 1))
        members = [roots[i] for i in rng.choice(len(roots), size=n, replace=False)]
    else:
        members = [roots[int(rng.integers(len(roots)))]]
    mask = scene.mask(members[0])
    for m in members[1:]:
        mask = mask | scene.mask(m)
    return Target(members, mask)
