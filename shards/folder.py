"""Converters for "image folder + mask folder" datasets (DAVIS, GrabCut, Berkeley, HQSeg subsets...).

Images and masks are paired by file stem (the name up to its last dot, so
``1#Bag#0001 v2.jpg`` pairs with ``1#Bag#0001 v2.png``). The object is every
pixel where any colour channel of the mask is > 0 (soft anti-aliased edges count as object; an
alpha channel is ignored, as SegNext's loaders ignore it);
it becomes a single uint8 layer with value 1 and object id 1. Both folders may
be the same directory (HQSeg's cascade_psp subsets): the mask is then the
``.png`` and the image the ``.jpg``.

Files must resolve inside the root (when one is given) or inside the image or
mask folder (either may be a link); others are skipped as ``outside_root``
unless ``follow_links``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .converter import Converter, SkipItem, SourceSample, load_image

__all__ = ["FolderConverter", "HQSeg44kConverter", "HQSEG44K_SUBSETS", "davis_converter"]

# Preference order when several files share a stem.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".gif")

Item = tuple[str, "str | None", "str | None"]  # (stem, image path, mask path), paths relative to root


def _by_stem(directory: Path, suffixes: tuple[str, ...], exclude: set[Path] = frozenset()) -> dict[str, Path]:
    found: dict[str, Path] = {}
    rank = {s: i for i, s in enumerate(suffixes)}
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        path = Path(entry.path)
        suffix = path.suffix.lower()
        if not entry.is_file() or suffix not in rank or path in exclude:
            continue
        best = found.get(path.stem)
        if best is None or rank[suffix] < rank[best.suffix.lower()]:
            found[path.stem] = path
    return found


@dataclass
class FolderConverter(Converter):
    images: Path
    masks: Path
    root: Path | None = None  # defaults to the folders' common parent
    split: str = "val"
    format: str = "folder"
    checksum_sources: bool = True  # evaluation sets: sha256 of every source file
    follow_links: bool = False

    def __post_init__(self) -> None:
        self.images, self.masks = Path(self.images), Path(self.masks)
        self._root_given = self.root is not None
        if self.root is None:
            self.root = Path(os.path.commonpath([self.images.resolve(), self.masks.resolve()]))
        self.root = Path(self.root)
        for d in (self.images, self.masks):
            if not d.is_dir():
                raise FileNotFoundError(f"{self.format}: folder {d} does not exist")

    def _rel(self, path: Path) -> str:
        return Path(os.path.relpath(path, self.root)).as_posix()

    def list_items(self) -> list[Item]:
        masks = _by_stem(self.masks, MASK_SUFFIXES)
        images = _by_stem(self.images, IMAGE_SUFFIXES, exclude=set(masks.values()))
        items = []
        for stem in sorted(set(images) | set(masks)):
            image, mask = images.get(stem), masks.get(stem)
            items.append((stem, image and self._rel(image), mask and self._rel(mask)))
        return items

    def source_roots(self) -> list[Path]:
        """The given root and the two folders (which may be links); without a root only the folders."""
        return ([self.root] if self._root_given else []) + [self.images, self.masks]

    def item_name(self, item: Item) -> str:
        return item[1] or item[2] or item[0]

    def item_files(self, item: Item) -> list[Path]:
        return [self.root / p for p in item[1:] if p]

    def load(self, item: Item) -> SourceSample:
        _stem, image_rel, mask_rel = item
        if image_rel is None:
            raise SkipItem("missing_image", f"no image for mask {mask_rel}")
        if mask_rel is None:
            raise SkipItem("missing_mask", f"no mask for image {image_rel}")
        image_bytes, ext, (height, width), flags = load_image(self.root / image_rel)
        data = np.fromfile(self.root / mask_rel, dtype=np.uint8)
        try:
            mask = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        except cv2.error:
            mask = None
        if mask is None:
            raise SkipItem("corrupt_mask", f"{mask_rel} does not decode")
        if mask.shape[:2] != (height, width):
            raise SkipItem("size_mismatch", f"mask {mask.shape[:2]} vs image {(height, width)}")
        if mask.ndim == 3:  # colour (B, G, R) or with alpha (B, G, R, A): alpha is not the object
            mask = mask[..., :3]
        obj = (mask > 0).any(axis=2) if mask.ndim == 3 else mask > 0
        objects = [{"id": 1, "layer": 0, "value": 1, "is_stuff": False, "parent": None, "children": []}]
        if not obj.any():
            objects = []
            flags += ["empty_object", "no_objects"]
        return SourceSample(image_bytes, ext, obj.astype(np.uint8)[None], objects, image_rel, flags)


def davis_converter(root: str | os.PathLike[str], split: str = "val", follow_links: bool = False) -> FolderConverter:
    """DAVIS layout: ``<root>/img/<name>.jpg`` with ``<root>/gt/<name>.png``."""
    root = Path(root)
    return FolderConverter(images=root / "img", masks=root / "gt", root=root, split=split, format="davis",
                           follow_links=follow_links)


# HQSeg-44K subsets: (split, name, images folder, masks folder) relative to the dataset root.
HQSEG44K_SUBSETS: tuple[tuple[str, str, str, str], ...] = (
    ("val", "DIS5K-VD", "DIS5K/DIS-VD/im", "DIS5K/DIS-VD/gt"),
    ("val", "ThinObject5k-TE", "thin_object_detection/ThinObject5K/images_test",
     "thin_object_detection/ThinObject5K/masks_test"),
    ("val", "COIFT", "thin_object_detection/COIFT/images", "thin_object_detection/COIFT/masks"),
    ("val", "HRSOD", "thin_object_detection/HRSOD/images", "thin_object_detection/HRSOD/masks_max255"),
    ("train", "DIS5K-TR", "DIS5K/DIS-TR/im", "DIS5K/DIS-TR/gt"),
    ("train", "ThinObject5k-TR", "thin_object_detection/ThinObject5K/images_train",
     "thin_object_detection/ThinObject5K/masks_train"),
    ("train", "FSS", "cascade_psp/fss_all", "cascade_psp/fss_all"),
    ("train", "DUTS-TR", "cascade_psp/DUTS-TR", "cascade_psp/DUTS-TR"),
    ("train", "DUTS-TE", "cascade_psp/DUTS-TE", "cascade_psp/DUTS-TE"),
    ("train", "ECSSD", "cascade_psp/ecssd", "cascade_psp/ecssd"),
    ("train", "MSRA10K", "cascade_psp/MSRA_10K", "cascade_psp/MSRA_10K"),
)


@dataclass
class HQSeg44kConverter(FolderConverter):
    """HQSeg-44K: every subset of ``split`` (or the named ``subsets``), in table order, under one root.

    Each subset is an image folder + mask folder pair read exactly as :class:`FolderConverter`
    reads one; sample sources are relative to the HQSeg-44K root, so they name the subset.
    """

    images: Path | None = None
    masks: Path | None = None
    format: str = "hqseg44k"
    subsets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.root is None:
            raise ValueError("hqseg44k: the dataset root is required")
        self.root = Path(self.root)
        self._root_given = True
        self.checksum_sources = self.split == "val"  # 44k training files: counts and sizes only
        names = [s[1] for s in HQSEG44K_SUBSETS if s[0] == self.split]
        unknown = sorted(set(self.subsets) - set(names))
        if unknown:
            raise ValueError(f"hqseg44k: unknown {self.split} subset(s) {unknown}; known: {names}")
        self.subsets = tuple(n for n in names if not self.subsets or n in self.subsets)
        for name, images, masks in self._folders():
            for d in (images, masks):
                if not d.is_dir():
                    raise FileNotFoundError(f"hqseg44k: folder {d} of subset {name} does not exist")

    def _folders(self) -> list[tuple[str, Path, Path]]:
        """(name, images folder, masks folder) of each chosen subset, in table order."""
        return [(name, self.root / images, self.root / masks)
                for split, name, images, masks in HQSEG44K_SUBSETS if split == self.split and name in self.subsets]

    def list_items(self) -> list[Item]:
        items: list[Item] = []
        for _name, images, masks in self._folders():
            items += FolderConverter(images=images, masks=masks, root=self.root).list_items()
        return items

    def source_roots(self) -> list[Path]:
        """The root and each subset's folders (which may be links)."""
        return [self.root] + [d for _name, images, masks in self._folders() for d in (images, masks)]

    def options(self) -> dict:
        return {"subsets": list(self.subsets), **super().options()}
