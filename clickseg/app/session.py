"""The state behind the click demo: the model, the images to choose from, the current image,
its clicks and the prediction after them. No web code; every bad input is a :class:`DemoError`
whose message names the file, the choice or the click."""
from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
THRESHOLD = 0.49  # the evaluation's default: object where the probability is strictly above
MASK_RGBA = (255, 150, 0, 255)
GT_RGBA = (0, 255, 0, 255)


class DemoError(ValueError):
    """A bad input of the demo (file, checkpoint, choice, click): shown to the user as is."""


@dataclass
class Choice:
    id: str
    label: str


def decode_image(data: bytes, name: str) -> np.ndarray:
    """H x W x 3 uint8 RGB from encoded bytes; ``name`` names the file in the error."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if arr is None:
        raise DemoError(f"{name!r} is not an image that can be read (JPEG, PNG, BMP, TIFF or WebP expected)")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


class Catalog:
    """The images to choose from: the files of a folder and the instances of shard sets.

    A shard set is read once at start and its raw samples kept in memory (encoded, as in the
    shards); an instance is decoded when chosen.
    """

    def __init__(self, images: str | Path | None = None, datasets: dict[str, str] | None = None):
        self.files: dict[str, Path] = {}
        self.raws: list[dict] = []
        self.instances: dict[str, tuple[int, int]] = {}  # id -> (raw index, object id)
        self.choices: list[Choice] = []
        if images is not None:
            folder = Path(images)
            if not folder.is_dir():
                raise DemoError(f"--images {folder}: not a directory")
            for p in sorted(folder.iterdir()):
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                    cid = f"file:{p.name}"
                    self.files[cid] = p
                    self.choices.append(Choice(cid, p.name))
        for name, directory in (datasets or {}).items():
            self._add_dataset(name, directory)

    def _add_dataset(self, name: str, directory: str) -> None:
        from shards import iter_shard, read_manifest, shard_paths

        if not (Path(directory) / "manifest.json").exists():
            raise DemoError(f"--dataset {name}={directory}: no manifest.json there (not a shard directory)")
        for path in shard_paths(directory, read_manifest(directory)):
            for raw in iter_shard(path):
                meta = json.loads(raw["meta.json"])
                self.raws.append(raw)
                for obj in meta["objects"]:
                    if obj.get("is_stuff"):
                        continue
                    cid = f"{name}:{meta['source']}#{obj['id']}"
                    self.instances[cid] = (len(self.raws) - 1, int(obj["id"]))
                    self.choices.append(Choice(cid, cid))

    def load(self, cid: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(image, ground truth or None) of a choice."""
        if cid in self.files:
            path = self.files[cid]
            try:
                data = path.read_bytes()
            except OSError as e:
                raise DemoError(f"{path}: cannot be read ({e.strerror or e})") from None
            return decode_image(data, str(path)), None
        if cid in self.instances:
            from shards import ShardFormatError, decode_sample

            index, obj_id = self.instances[cid]
            try:
                sample = decode_sample(self.raws[index])
            except ShardFormatError as e:
                raise DemoError(f"{cid}: {e}") from None
            obj = next(o for o in sample.objects if o.id == obj_id)
            return sample.image, obj.mask.astype(np.int64)
        raise DemoError(f"no image or instance named {cid!r}")


def png_data_url(rgba_or_rgb: np.ndarray) -> str:
    """A ``data:image/png`` URL of an RGB or RGBA uint8 array."""
    a = rgba_or_rgb
    code = cv2.COLOR_RGBA2BGRA if a.shape[2] == 4 else cv2.COLOR_RGB2BGR
    ok, data = cv2.imencode(".png", cv2.cvtColor(a, code))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(data.tobytes()).decode()


def mask_rgba(mask: np.ndarray, color: tuple[int, int, int, int]) -> np.ndarray:
    """H x W x 4: ``color`` where ``mask``, fully transparent elsewhere."""
    out = np.zeros(mask.shape + (4,), np.uint8)
    out[mask] = color
    return out


def outline(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of a binary mask (object pixels with a background 4-neighbour)."""
    m = mask.astype(np.uint8)
    return (m - cv2.erode(m, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)) > 0


class Session:
    """One user's demo: a model, the chosen image, its clicks and the prediction after them.

    Clicks are ``(y, x, is_positive)`` in image pixels, as ``Predictor`` takes them. Undo
    replays the remaining clicks from an empty previous mask, so its state equals that of having
    placed only those clicks.
    """

    def __init__(self, checkpoint: str | Path, device: str = "cpu", catalog: Catalog | None = None):
        self.device = device
        self.catalog = catalog or Catalog()
        self.predictor = None
        self.checkpoint = ""
        self.image: np.ndarray | None = None
        self.gt: np.ndarray | None = None
        self.label = ""
        self.clicks: list[tuple[int, int, bool]] = []
        self.prob: np.ndarray | None = None
        self.latency_ms: float | None = None
        self.set_image_ms: float | None = None
        self.version = 0
        self.load_checkpoint(checkpoint)

    # -- model and image ----------------------------------------------------------------------

    def load_checkpoint(self, path: str | Path) -> None:
        """Use the model of ``path``; on failure the previous model stays."""
        from clickseg.model import load_checkpoint
        from clickseg.predictor import Predictor

        path = str(path).strip()
        if not path:
            raise DemoError("no checkpoint path given")
        if not Path(path).is_file():
            raise DemoError(f"checkpoint {path} does not exist" if not Path(path).exists()
                            else f"checkpoint {path} is not a file")
        try:
            model = load_checkpoint(path, self.device)
        except (ValueError, KeyError, TypeError, RuntimeError, OSError) as e:
            raise DemoError(f"checkpoint {path} does not load: {e}") from None
        self.predictor = Predictor(model, self.device)
        self.checkpoint = path
        if self.image is not None:
            self._set(self.image, self.gt, self.label)

    def choose(self, cid: str) -> None:
        image, gt = self.catalog.load(cid)
        self._set(image, gt, cid)

    def upload(self, data: bytes, filename: str) -> None:
        self._set(decode_image(data, filename or "the upload"), None, filename or "upload")

    def _set(self, image: np.ndarray, gt: np.ndarray | None, label: str) -> None:
        t0 = time.perf_counter()
        self.predictor.set_image(image)
        self.set_image_ms = (time.perf_counter() - t0) * 1000
        self.image, self.gt, self.label = image, gt, label
        self.clicks, self.prob, self.latency_ms = [], None, None
        self.version += 1

    # -- clicks ---------------------------------------------------------------------------------

    def click(self, x, y, positive: bool) -> None:
        """Add a click at column ``x``, row ``y`` (image pixels) and predict."""
        if self.image is None:
            raise DemoError("choose or upload an image before clicking")
        try:
            xi, yi = int(x), int(y)
        except (TypeError, ValueError):
            raise DemoError(f"click ({x!r}, {y!r}): coordinates must be integers") from None
        h, w = self.image.shape[:2]
        if not (0 <= xi < w and 0 <= yi < h):
            raise DemoError(f"click at x={xi}, y={yi} lies outside the {w} x {h} image")
        clicks = self.clicks + [(yi, xi, bool(positive))]
        t0 = time.perf_counter()
        self.prob = self.predictor.predict(clicks)
        self.latency_ms = (time.perf_counter() - t0) * 1000
        self.clicks = clicks
        self.version += 1

    def undo(self) -> None:
        if not self.clicks:
            raise DemoError("no click to undo")
        self.clicks = self.clicks[:-1]
        self.predictor.reset()
        self.prob, self.latency_ms = None, None
        for n in range(1, len(self.clicks) + 1):
            t0 = time.perf_counter()
            self.prob = self.predictor.predict(self.clicks[:n])
            self.latency_ms = (time.perf_counter() - t0) * 1000
        self.version += 1

    def reset(self) -> None:
        self.predictor.reset()
        self.clicks, self.prob, self.latency_ms = [], None, None
        self.version += 1

    # -- what the page shows --------------------------------------------------------------------

    @property
    def mask(self) -> np.ndarray | None:
        return None if self.prob is None else self.prob > THRESHOLD

    def iou(self) -> float | None:
        """IoU of the current mask with the ground truth (None without one or without a click)."""
        from clickseg.eval.metrics import iou

        if self.gt is None or self.prob is None:
            return None
        return float(iou(self.mask, self.gt))

    def state(self, with_image: bool = False) -> dict:
        """Everything the page draws, as JSON-ready values; the image itself only when asked."""
        out: dict = {"version": self.version, "checkpoint": self.checkpoint, "device": self.device,
                     "label": self.label, "clicks": [list(c) for c in self.clicks], "threshold": THRESHOLD,
                     "latency_ms": self.latency_ms, "set_image_ms": self.set_image_ms, "iou": None,
                     "mask_pixels": None, "overlay": None, "width": None, "height": None, "gt": None}
        if self.image is None:
            return out
        h, w = self.image.shape[:2]
        out.update(width=w, height=h)
        if with_image:
            out["image"] = png_data_url(self.image)
            if self.gt is not None:
                out["gt"] = png_data_url(mask_rgba(outline(self.gt == 1), GT_RGBA))
        if self.prob is not None:
            mask = self.mask
            out["mask_pixels"] = int(mask.sum())
            out["overlay"] = png_data_url(mask_rgba(mask, MASK_RGBA))
            iou = self.iou()
            out["iou"] = None if iou is None or iou != iou else iou
        return out
