"""Converter for RITM's combined COCO+LVIS annotations (layout: README, Datasets).

``<root>/<split>/images/<id>.jpg``, ``<root>/<split>/masks/<id>.pickle`` and
``<root>/<split>/hannotation.pickle``; items are taken in sorted image-id order.
Objects with ``id >= num_instance_masks`` are stuff and are kept with
``is_stuff=True`` (the loader decides per sample whether to use them).
Parent/child links survive, restricted to objects that are kept.
Image and mask files must resolve inside the root or the ``images`` /
``masks`` folder (either may be a link), and ``hannotation.pickle`` inside
the root or the split folder, unless ``follow_links``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from . import safe_pickle
from .format import pack_layers
from .converter import ConversionError, Converter, SkipItem, SourceSample, links_outside, load_image

__all__ = ["CocoLvisConverter"]

Item = tuple[str, dict[str, Any]]  # (image id, hannotation entry)


def _decode_layer(buf: Any) -> np.ndarray:
    """One PNG buffer of shape (N,) or (N, 1) -> H x W integer layer."""
    try:
        layer = cv2.imdecode(np.asarray(buf, dtype=np.uint8).reshape(-1), cv2.IMREAD_UNCHANGED)
    except (cv2.error, ValueError, TypeError):
        layer = None
    if layer is None or layer.ndim != 2:
        raise SkipItem("corrupt_mask", "a layer does not decode to a single-channel image")
    return layer


def _as_mapping(objs_mapping: Any) -> dict[int, tuple[int, int]]:
    """``objs_mapping`` is indexed by instance id: a list/tuple or a dict."""
    if isinstance(objs_mapping, dict):
        pairs = objs_mapping.items()
    elif isinstance(objs_mapping, (list, tuple)):
        pairs = enumerate(objs_mapping)
    else:
        raise SkipItem("bad_annotation", f"objs_mapping is a {type(objs_mapping).__name__}")
    try:
        return {int(k): (int(v[0]), int(v[1])) for k, v in pairs}
    except (TypeError, ValueError, IndexError) as e:
        raise SkipItem("bad_annotation", f"objs_mapping entry: {e}") from None


@dataclass
class CocoLvisConverter(Converter):
    root: Path
    split: str = "train"
    format: str = "cocolvis"
    checksum_sources: bool = False  # ~200k training files: count and bytes only
    follow_links: bool = False

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    @property
    def split_dir(self) -> Path:
        return self.root / self.split

    def extra_files(self) -> list[Path]:
        return [self.split_dir / "hannotation.pickle"]

    def source_roots(self) -> list[Path]:
        return [self.root, self.split_dir / "images", self.split_dir / "masks"]

    def list_items(self) -> list[Item]:
        path = self.split_dir / "hannotation.pickle"
        roots = [Path(os.path.realpath(d)) for d in (self.root, self.split_dir)]
        outside = [] if self.follow_links else links_outside(self, [path], roots)
        if outside:
            raise ConversionError(f"{path} leads to {outside[0][1]}, outside the root {self.root} "
                                  f"(--follow-links reads it)")
        try:
            annotation = safe_pickle.load(path)
        except FileNotFoundError:
            raise ConversionError(f"{path} not found (is --root the folder that holds {self.split}/?)") from None
        except Exception as e:  # refused or damaged: nothing can be converted without the index
            raise ConversionError(f"{path}: {e}") from e
        if not isinstance(annotation, dict):
            raise ConversionError(f"{path}: expected a dict, got {type(annotation).__name__}")
        return [(str(image_id), annotation[image_id]) for image_id in sorted(annotation)]

    def _paths(self, image_id: str) -> tuple[Path, Path]:
        return self.split_dir / "images" / f"{image_id}.jpg", self.split_dir / "masks" / f"{image_id}.pickle"

    def item_name(self, item: Item) -> str:
        return f"{self.split}/images/{item[0]}.jpg"

    def item_files(self, item: Item) -> list[Path]:
        return list(self._paths(item[0]))

    def load(self, item: Item) -> SourceSample:
        image_id, entry = item
        image_path, masks_path = self._paths(image_id)
        image_bytes, ext, (height, width), flags = load_image(image_path)
        if not masks_path.is_file():
            raise SkipItem("missing_mask", str(masks_path))
        try:
            encoded_layers, objs_mapping = safe_pickle.load(masks_path)
        except safe_pickle.UnsafePickleError as e:
            raise SkipItem("unsafe_pickle", str(e)) from None
        except Exception as e:  # truncated or garbage pickles raise many types
            raise SkipItem("bad_pickle", f"{masks_path}: {type(e).__name__}: {e}") from None

        layers = [_decode_layer(buf) for buf in encoded_layers]
        if any(layer.shape != (height, width) for layer in layers):
            shapes = sorted({layer.shape for layer in layers})
            raise SkipItem("size_mismatch", f"layers {shapes} vs image {(height, width)}")
        packed = pack_layers(layers, height, width)
        mapping = _as_mapping(objs_mapping)

        try:
            hierarchy: dict[int, Any] = {int(k): v for k, v in (entry.get("hierarchy") or {}).items()}
            n_things = int(entry["num_instance_masks"])
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise SkipItem("bad_annotation", f"hannotation entry: {e!r}") from None
        ids = sorted(set(hierarchy) | set(mapping))  # things: id < n_things; stuff: the rest
        objects = []
        for inst_id in ids:
            if inst_id not in mapping:
                raise SkipItem("bad_annotation", f"instance {inst_id} has no entry in objs_mapping")
            layer, value = mapping[inst_id]
            if not 0 <= layer < len(layers):
                raise SkipItem("bad_annotation", f"instance {inst_id} refers to layer {layer} of {len(layers)}")
            node = hierarchy.get(inst_id) or {}
            objects.append(
                {
                    "id": inst_id,
                    "layer": layer,
                    "value": value,
                    "is_stuff": inst_id >= n_things,
                    "parent": node.get("parent"),
                    "children": list(node.get("children") or []),
                }
            )

        kept = [o for o in objects if np.any(packed[o["layer"]] == o["value"])]
        if len(kept) < len(objects):
            flags.append("empty_object")
        kept_ids = {o["id"] for o in kept}
        for o in kept:
            o["parent"] = o["parent"] if o["parent"] in kept_ids else None
            o["children"] = [c for c in o["children"] if c in kept_ids]
        if not kept:
            flags.append("no_objects")
        elif all(o["is_stuff"] for o in kept):
            flags.append("only_stuff")
        return SourceSample(image_bytes, ext, packed, kept, self.item_name(item), flags)
