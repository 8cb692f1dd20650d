"""The converter contract: what a source reader implements and raises.

A :class:`Converter` lists source items in a deterministic (sorted) order and
loads one item at a time into a :class:`SourceSample`; :mod:`shards.writer`
turns the listing into shards.

Bad input never stops a conversion: :meth:`Converter.load` raises
:class:`SkipItem` with a reason (``missing_image``, ``missing_mask``,
``corrupt_image``, ``corrupt_mask``, ``size_mismatch``, ``unsafe_pickle``,
``bad_pickle``, ``bad_annotation``; the writer adds ``outside_root`` and
``unexpected_error``), and a usable item with problems is kept and flagged
(``no_objects``, ``only_stuff``, ``empty_object`` (that object is dropped),
``reencoded_png``). Each skip has a kind: ``bad_input`` (the reasons above) or
``rule`` (the dataset's own rules leave nothing, e.g. cocolvis-build's
``no_objects``). A converter raises :class:`ConversionError` when nothing can
be converted (e.g. its index file is missing).

Source links: an item whose files resolve outside every folder of
:meth:`Converter.source_roots` is skipped unread (``outside_root``, see
:func:`links_outside`) unless the converter's ``follow_links`` is set.
The layout's folders themselves may be links.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

__all__ = [
    "SKIP_KINDS",
    "ConversionError",
    "Converter",
    "SkipItem",
    "SourceSample",
    "links_outside",
    "load_image",
    "resolved_roots",
]


class ConversionError(RuntimeError):
    """A conversion that cannot start (no items, unusable index) or skipped too many items."""


SKIP_KINDS = ("bad_input", "rule")  # unusable input / left out by the dataset's rules


class SkipItem(Exception):
    """Raised by :meth:`Converter.load` for an item that cannot become a sample.

    ``kind`` is ``"bad_input"`` (counts toward ``max_skip_fraction``) or ``"rule"``.
    """

    def __init__(self, reason: str, detail: str = "", counts: dict[str, int] | None = None,
                 kind: str = "bad_input") -> None:
        if kind not in SKIP_KINDS:
            raise ValueError(f"skip kind {kind!r} is not one of {SKIP_KINDS}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.counts = counts or {}  # per-rule counts of the item, still reported (see SourceSample.counts)
        self.kind = kind


@dataclass
class SourceSample:
    """What a converter produces for one usable source item (see :func:`shards.format.encode_sample`)."""

    image_bytes: bytes
    ext: str
    layers: np.ndarray  # (L, H, W) integer
    objects: list[dict[str, Any]]
    source: str
    flags: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # per-rule counts a converter reports (summed per shard)


class Converter:
    """Base class of the source readers. Instances travel to worker processes, so keep them small."""

    format: str = ""
    split: str = ""
    root: Path
    checksum_sources: bool = False  # True: manifest lists sha256 of every source file
    follow_links: bool = False  # True: also read files that resolve outside source_roots()

    def list_items(self) -> list[Any]:
        """All source items in deterministic order; each item must be picklable."""
        raise NotImplementedError

    def item_name(self, item: Any) -> str:
        """Path of the item relative to ``root`` (used in reports and ``meta.json``)."""
        raise NotImplementedError

    def item_files(self, item: Any) -> list[Path]:
        """Source files the item reads (for the manifest's source summary)."""
        raise NotImplementedError

    def load(self, item: Any) -> SourceSample:
        """Read one item; raise :class:`SkipItem` when it cannot be used."""
        raise NotImplementedError

    def extra_files(self) -> list[Path]:
        """Source files shared by all items (e.g. an annotation index)."""
        return []

    def source_roots(self) -> list[Path]:
        """Folders that item files must resolve into unless ``follow_links`` (default: ``root``)."""
        return [self.root]

    def summarize(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Extra top-level manifest entries computed from the shard records (their ``extra`` parts)."""
        return {}

    def options(self) -> dict[str, Any]:
        """Settings that change the output (part of each shard's fingerprint and of the manifest).
        ``follow_links`` appears only when set, so conversions made before it existed resume."""
        return {"follow_links": True} if self.follow_links else {}


def _sniff(data: bytes) -> str | None:
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    return None


def _jpeg_complete(data: bytes) -> bool:
    """False for a truncated JPEG (older OpenCV versions decode those with a grey tail)."""
    if data.rstrip(b"\x00\r\n")[-2:] == b"\xff\xd9":
        return True
    from PIL import Image  # only for files without an end marker, which may still be valid

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
        return True
    except Exception:
        return False


def load_image(path: Path) -> tuple[bytes, str, tuple[int, int], list[str]]:
    """Read and check an image file: ``(bytes, "jpg"|"png", (H, W), flags)``.

    The size is the one readers see (``cv2.imdecode`` with ``IMREAD_COLOR``).
    Raises :class:`SkipItem` ``missing_image`` / ``corrupt_image``.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SkipItem("missing_image", str(path)) from None
    except OSError as e:
        raise SkipItem("corrupt_image", f"unreadable: {e}") from None
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        bgr = None
    kind = _sniff(data)
    if bgr is None or (kind == "jpg" and not _jpeg_complete(data)):
        raise SkipItem("corrupt_image", "does not decode")
    flags = []
    if kind is None:
        data = cv2.imencode(".png", bgr)[1].tobytes()
        kind = "png"
        flags.append("reencoded_png")
    return data, kind, (int(bgr.shape[0]), int(bgr.shape[1])), flags


def resolved_roots(converter: Converter) -> list[Path]:
    """The converter's source roots with links resolved."""
    return [Path(os.path.realpath(r)) for r in converter.source_roots()]


def links_outside(converter: Converter, files: Sequence[Path], roots: Sequence[Path] | None = None
                  ) -> list[tuple[Path, Path]]:
    """``(file, resolved target)`` of each file that resolves outside every source root."""
    roots = resolved_roots(converter) if roots is None else roots
    out = []
    for path in files:
        target = Path(os.path.realpath(path))
        if not any(target.is_relative_to(r) for r in roots):
            out.append((Path(path), target))
    return out
