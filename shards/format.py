"""The shard sample format: the contract between the converter and every reader.

A shard is a plain (uncompressed) webdataset tar. Each sample has the key
``f"{index:08d}"`` (``index`` = position of the source item in the sorted source
listing, so keys are unique across a dataset's shards and never contain dots)
and three members:

``<key>.image.jpg`` or ``<key>.image.png``
    The original image file bytes, not re-encoded (files that are neither JPEG
    nor PNG are re-encoded losslessly to PNG and flagged ``reencoded_png``).
``<key>.layers.npz``
    A zip (``np.load``-compatible, like ``np.savez_compressed``) with one array
    ``layers`` of shape (L, H, W) and the smallest of uint8/uint16/int32 that
    holds its values. L may be 0 (background-only sample).
``<key>.meta.json``
    ``{"source": <path relative to the dataset root>, "height": H, "width": W,
    "objects": [{"id", "layer", "value", "is_stuff", "parent", "children"}],
    "flags": [...]}``. Object ``id``'s pixels are ``layers[layer] == value``;
    ``parent``/``children`` only reference ids present in ``objects``.

:func:`decode_sample` turns a raw sample (the dict
:func:`shards.tar_reader.iter_shard` yields) into a :class:`Sample`.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Any, Sequence

import cv2
import numpy as np

__all__ = [
    "IMAGE_EXTS",
    "Object",
    "Sample",
    "ShardFormatError",
    "decode_sample",
    "encode_sample",
    "pack_layers",
    "pack_masks",
    "sample_key",
]

IMAGE_EXTS = ("jpg", "png")
# A fixed zip timestamp keeps layers.npz (and so the shard's sha256) reproducible.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class ShardFormatError(ValueError):
    """A shard sample could not be decoded; the message names shard and key."""


@dataclass
class Object:
    """One annotated region of a sample."""

    id: int
    mask: np.ndarray | None  # H x W bool (None when decoded with ``object_masks=False``)
    is_stuff: bool = False
    parent: int | None = None
    children: list[int] = field(default_factory=list)
    layer: int = 0  # the object's pixels are ``Sample.layers[layer] == value``
    value: int = 0


@dataclass
class Sample:
    """One decoded shard sample."""

    key: str
    source: str  # path of the source image relative to the dataset root
    image: np.ndarray  # H x W x 3 uint8 RGB
    objects: list[Object]
    flags: list[str]
    layers: np.ndarray | None = None  # (L, H, W) integer layers the objects index into


def sample_key(index: int) -> str:
    return f"{index:08d}"


def pack_layers(layers: Sequence[np.ndarray] | np.ndarray, height: int, width: int) -> np.ndarray:
    """Stack integer H x W layers into (L, H, W) with the smallest sufficient dtype."""
    arrays = [np.asarray(layer) for layer in layers]
    for a in arrays:
        if a.shape != (height, width) or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"layer of shape {a.shape} and dtype {a.dtype} is not an integer {height}x{width} array")
    lo = min((int(a.min()) for a in arrays if a.size), default=0)
    hi = max((int(a.max()) for a in arrays if a.size), default=0)
    if lo < 0 or hi > np.iinfo(np.int32).max:
        raise ValueError(f"layer values {lo}..{hi} do not fit the shard format (0..2**31-1)")
    dtype = np.uint8 if hi <= 255 else np.uint16 if hi <= 65535 else np.int32
    if not arrays:
        return np.zeros((0, height, width), dtype)
    return np.stack([a.astype(dtype, copy=False) for a in arrays])


def pack_masks(masks: Sequence[np.ndarray], height: int, width: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Bool masks -> (layers (L, H, W), (layer, value) per mask): each mask goes to the first layer
    it does not overlap, with the next free value there; overlapping masks land in different layers."""
    layers: list[np.ndarray] = []
    placement = []
    for m in masks:
        for li, layer in enumerate(layers):
            if not layer[m].any():
                break
        else:
            layers.append(np.zeros((height, width), np.int32))
            li = len(layers) - 1
        value = int(layers[li].max()) + 1
        layers[li][m] = value
        placement.append((li, value))
    return pack_layers(layers, height, width), placement


def _npz_bytes(layers: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("layers.npy", date_time=_ZIP_EPOCH)
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.ascontiguousarray(layers), allow_pickle=False)
    return buf.getvalue()


def encode_sample(
    image_bytes: bytes,
    ext: str,
    layers: np.ndarray,
    objects: Sequence[dict[str, Any]],
    source: str,
    flags: Sequence[str] = (),
    *,
    index: int = 0,
) -> dict[str, Any]:
    """Build the dict :class:`webdataset.TarWriter` writes (use ``encoder=False``).

    ``layers`` is (L, H, W) from :func:`pack_layers`; ``objects`` are dicts with
    ``id, layer, value, is_stuff, parent, children``; ``index`` gives the key.
    """
    if ext not in IMAGE_EXTS:
        raise ValueError(f"image extension must be one of {IMAGE_EXTS}, not {ext!r}")
    if layers.ndim != 3:
        raise ValueError(f"layers must be (L, H, W), got shape {layers.shape}")
    meta_objects = []
    for o in objects:
        if not 0 <= int(o["layer"]) < layers.shape[0]:
            raise ValueError(f"object {o['id']} refers to layer {o['layer']} of {layers.shape[0]}")
        meta_objects.append(
            {
                "id": int(o["id"]),
                "layer": int(o["layer"]),
                "value": int(o["value"]),
                "is_stuff": bool(o.get("is_stuff", False)),
                "parent": None if o.get("parent") is None else int(o["parent"]),
                "children": [int(c) for c in o.get("children", [])],
            }
        )
    meta = {
        "source": source,
        "height": int(layers.shape[1]),
        "width": int(layers.shape[2]),
        "objects": meta_objects,
        "flags": list(flags),
    }
    return {
        "__key__": sample_key(index),
        f"image.{ext}": bytes(image_bytes),
        "layers.npz": _npz_bytes(layers),
        "meta.json": json.dumps(meta, separators=(",", ":")).encode("utf-8"),
    }


def decode_sample(raw: dict[str, Any], object_masks: bool = True) -> Sample:
    """Decode one raw sample (member suffix -> bytes, plus ``__key__``/``__url__``).

    With ``object_masks=False`` the per-object bool masks are not built (``Object.mask`` is
    None); the objects' pixels are then read from ``Sample.layers`` with ``layer``/``value``.
    """
    key = str(raw.get("__key__", "?"))
    where = f"shard {raw.get('__url__', '?')} sample {key}"

    def member(name: str) -> bytes:
        if name not in raw:
            raise ShardFormatError(f"{where}: missing member {name!r} (has {sorted(k for k in raw if not k.startswith('__'))})")
        return raw[name]

    try:
        meta = json.loads(member("meta.json"))
        height, width = int(meta["height"]), int(meta["width"])
    except ShardFormatError:
        raise
    except (ValueError, KeyError, TypeError) as e:
        raise ShardFormatError(f"{where}: bad meta.json ({e})") from e

    names = [f"image.{ext}" for ext in IMAGE_EXTS if f"image.{ext}" in raw]
    image_bytes = member(names[0] if names else "image.jpg")
    try:
        bgr = cv2.imdecode(np.frombuffer(image_bytes, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as e:
        raise ShardFormatError(f"{where}: image does not decode ({e})") from e
    if bgr is None:
        raise ShardFormatError(f"{where}: image does not decode")
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    try:
        with np.load(io.BytesIO(member("layers.npz")), allow_pickle=False) as npz:
            layers = npz["layers"]
    except ShardFormatError:
        raise
    except Exception as e:  # zipfile/np.load raise many types for damaged data
        raise ShardFormatError(f"{where}: bad layers.npz ({type(e).__name__}: {e})") from e
    if layers.ndim != 3 or layers.shape[1:] != image.shape[:2] or (height, width) != image.shape[:2]:
        raise ShardFormatError(
            f"{where}: layers {layers.shape} / meta {height}x{width} do not match image {image.shape[:2]}"
        )

    objects = []
    try:
        for o in meta["objects"]:
            if not 0 <= o["layer"] < layers.shape[0]:
                raise ShardFormatError(f"{where}: object {o['id']} refers to missing layer {o['layer']}")
            objects.append(
                Object(
                    id=int(o["id"]),
                    mask=(layers[o["layer"]] == o["value"]) if object_masks else None,
                    is_stuff=bool(o["is_stuff"]),
                    parent=o["parent"],
                    children=list(o["children"]),
                    layer=int(o["layer"]),
                    value=int(o["value"]),
                )
            )
    except (KeyError, TypeError) as e:
        raise ShardFormatError(f"{where}: bad object entry in meta.json ({e!r})") from e
    return Sample(key=key, source=str(meta.get("source", "")), image=image, objects=objects,
                  flags=list(meta.get("flags", [])), layers=layers)
