"""The evaluation gallery: per experiment and dataset, a static HTML page of the instances worth
looking at, with small JPEG images next to it (opens from disk, no server).

For the last evaluated epoch of an experiment on a dataset, each protocol (scaling-curve rows
aside) gets a section with

- the ``k`` worst instances at click 1 (lowest IoU@1, averaged over draws): the image with the
  ground-truth outline and the first click of every draw, and each draw's prediction;
- the instances with an empty mask that the evaluation skipped (``skipped_empty``), by name;
- with a baseline experiment, the ``k`` largest gains and losses of IoU@1 against the
  baseline's row of the same dataset and protocol (same instances, same click draws), with
  both models' predictions.

The IoUs come from ``results.jsonl``. The images are recomputed for the shown instances only:
the dataset is read again and each shown instance runs the row's protocol for one click on the
row's checkpoint (``evaluate_views`` with the same seeds, so the same clicks); a recomputed
IoU@1 that differs from the stored one is shown on the tile as a warning (checkpoint or data
changed since the evaluation).
"""
from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import yaml

from clickseg import rundir
from clickseg.config import EvalConfig
from clickseg.eval.evaluate import instance_objects
from clickseg.report import baseline_row, collect, first_click_ious, latest

THUMB = 160  # longest side of the gallery images, pixels
GT_COLOR = (0, 255, 0)
POS_COLOR, NEG_COLOR = (40, 220, 40), (230, 40, 40)
MASK_COLOR = np.array([255, 150, 0], np.float32)  # orange


@dataclass
class Shown:
    """One instance recomputed at click 1 for one model."""

    clicks: list[list[tuple[int, int, bool]]]  # per draw, (y, x, positive)
    probs: np.ndarray  # (draws, H, W)
    ious: list[float]  # per draw


@dataclass
class Section:
    """The instances of one protocol that the page shows."""

    protocol: str
    row: dict
    ref: dict | None = None
    worst: list[str] = field(default_factory=list)
    gains: list[tuple[str, float]] = field(default_factory=list)
    losses: list[tuple[str, float]] = field(default_factory=list)


# --------------------------------------------------------------------------- choosing instances


def worst_instances(row: dict, k: int) -> list[str]:
    """The ``k`` instance names with the lowest IoU@1 (draw mean); ties by name."""
    ious = first_click_ious(row)
    return sorted(ious, key=lambda n: (_sort_value(ious[n]), n))[:k]


def _sort_value(v: float) -> float:
    return -math.inf if v is None or (isinstance(v, float) and math.isnan(v)) else v


def gains_and_losses(row: dict, ref: dict, k: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(gains, losses): up to ``k`` shared instances each with the largest positive and negative
    IoU@1 difference ``row - ref``, as (name, delta), largest change first."""
    a, b = first_click_ious(row), first_click_ious(ref)
    deltas = [(n, a[n] - b[n]) for n in a if n in b and not math.isnan(a[n] - b[n])]
    gains = sorted((d for d in deltas if d[1] > 0), key=lambda d: (-d[1], d[0]))[:k]
    losses = sorted((d for d in deltas if d[1] < 0), key=lambda d: (d[1], d[0]))[:k]
    return gains, losses


# --------------------------------------------------------------------------- recomputing


def protocol_of(row: dict) -> EvalConfig:
    """The ``EvalConfig`` a result row was evaluated with (its recorded options)."""
    opts = {k: v for k, v in (row.get("options") or {}).items() if k != "name"}
    known = EvalConfig.__dataclass_fields__
    return EvalConfig(protocol=row.get("clicker", "center"), **{k: v for k, v in opts.items() if k in known})


def recompute(predictor, image: np.ndarray, gt: np.ndarray, cfg: EvalConfig, dataset: str, index: int) -> Shown:
    """Click 1 of every draw of one instance under ``cfg`` (the evaluation's seeds)."""
    from clickseg.eval.protocols import Views, evaluate_views

    views = Views(predictor, cfg.flips)
    views.set_image(image)
    trace: list = []
    ious = evaluate_views(views, gt, replace(cfg, n_clicks=1, target_iou=0.0), dataset, index, trace)
    clicks, probs = trace[0]
    return Shown([[tuple(c) for c in d] for d in clicks], probs, [float(v) for v in ious[:, 0]])


# --------------------------------------------------------------------------- drawing


def thumbnail_size(shape: tuple[int, int], side: int = THUMB) -> tuple[int, int]:
    """(width, height) with the longest side ``side``."""
    h, w = shape
    s = side / max(h, w)
    return max(1, round(w * s)), max(1, round(h * s))


def _resize(a: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    return cv2.resize(a, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def draw_outline(thumb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int]) -> None:
    """Draw the outline of ``mask`` (at the thumbnail's size) onto ``thumb`` in place."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(thumb, contours, -1, color, 1)


def draw_clicks(thumb: np.ndarray, clicks: Sequence[tuple[int, int, bool]], shape: tuple[int, int]) -> None:
    """Mark clicks (original image pixels) on ``thumb`` in place: filled dots, green positive, red negative."""
    h, w = shape
    th, tw = thumb.shape[:2]
    for y, x, positive in clicks:
        centre = (int((x + 0.5) * tw / w), int((y + 0.5) * th / h))
        cv2.circle(thumb, centre, 4, (255, 255, 255), -1, lineType=cv2.LINE_AA)
        cv2.circle(thumb, centre, 3, POS_COLOR if positive else NEG_COLOR, -1, lineType=cv2.LINE_AA)


def image_panel(image: np.ndarray, gt: np.ndarray, clicks: Sequence[tuple[int, int, bool]]) -> np.ndarray:
    """The image with the ground-truth outline and ``clicks``, at thumbnail size (RGB)."""
    size = thumbnail_size(gt.shape)
    thumb = np.ascontiguousarray(_resize(image, size))
    draw_outline(thumb, _resize((gt == 1).astype(np.uint8), size, nearest=True), GT_COLOR)
    draw_clicks(thumb, clicks, gt.shape)
    return thumb


def prediction_panel(image: np.ndarray, gt: np.ndarray, prob: np.ndarray, threshold: float,
                     clicks: Sequence[tuple[int, int, bool]]) -> np.ndarray:
    """The predicted mask over the dimmed image, ground-truth outline and clicks (RGB thumbnail)."""
    size = thumbnail_size(gt.shape)
    thumb = _resize(image, size).astype(np.float32) * 0.6
    pred = _resize((prob > threshold).astype(np.uint8), size, nearest=True).astype(bool)
    thumb[pred] = thumb[pred] * 0.4 + MASK_COLOR * 0.6
    thumb = np.ascontiguousarray(thumb.clip(0, 255).astype(np.uint8))
    draw_outline(thumb, _resize((gt == 1).astype(np.uint8), size, nearest=True), GT_COLOR)
    draw_clicks(thumb, clicks, gt.shape)
    return thumb


def write_jpeg(path: Path, rgb: np.ndarray, quality: int = 90) -> None:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"could not encode {path}")
    rundir.atomic_write(path, lambda f: f.write(data.tobytes()))


# --------------------------------------------------------------------------- pages

_STYLE = """body{font-family:sans-serif;margin:16px;color:#222}h1{font-size:22px}h2{margin-top:28px}
.tiles{display:flex;flex-wrap:wrap;gap:10px}.tile{border:1px solid #ccc;padding:6px;border-radius:4px}
.tile img{display:inline-block;margin:2px;vertical-align:top}.cap{font-size:12px;max-width:520px}
.warn{color:#b00}.skipped li{font-family:monospace}figure{display:inline-block;margin:0 2px}
figcaption{font-size:11px;text-align:center}"""


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:80] or "x"


def _figure(src: str, caption: str) -> str:
    return (f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


class PageWriter:
    """Builds one page (experiment, dataset) and writes its images into ``<page stem>_files/``."""

    def __init__(self, page: Path):
        self.page = page
        self.files = page.parent / f"{page.stem}_files"
        self.count = 0
        self.written: set[str] = set()

    def image(self, rgb: np.ndarray, stem: str) -> str:
        self.count += 1
        name = f"{self.count:04d}_{_safe(stem)}.jpg"
        write_jpeg(self.files / name, rgb)
        self.written.add(name)
        return f"{self.files.name}/{name}"

    def remove_stale(self) -> None:
        """Remove the images of an earlier version of the page that this one does not show."""
        for p in self.files.glob("*.jpg") if self.files.is_dir() else ():
            if p.name not in self.written:
                p.unlink()


def _check(stored: float, shown: Shown) -> str:
    mean = round(float(np.mean(shown.ious)), 6)
    if stored is None or abs(mean - stored) <= 1e-6:
        return ""
    return (f'<div class="warn">recomputed IoU@1 {mean:.4f} differs from the stored {stored:.4f}: '
            "the checkpoint or the data changed since the evaluation</div>")


def worst_tile(w: PageWriter, name: str, stored: float, image: np.ndarray, gt: np.ndarray, shown: Shown,
               threshold: float) -> str:
    first = [c[0] for c in shown.clicks]
    figs = [_figure(w.image(image_panel(image, gt, first), name + "_gt"),
                    "ground truth, click 1 of every draw" if len(first) > 1 else "ground truth, click 1")]
    for d, (clicks, prob, v) in enumerate(zip(shown.clicks, shown.probs, shown.ious)):
        label = f"draw {d + 1}: IoU {v:.3f}" if len(shown.ious) > 1 else f"prediction: IoU {v:.3f}"
        figs.append(_figure(w.image(prediction_panel(image, gt, prob, threshold, clicks), f"{name}_d{d}"), label))
    return (f'<div class="tile" data-name="{html.escape(name)}" data-iou="{stored!r}">'
            f'<div class="cap"><b>{html.escape(name)}</b> IoU@1 {stored:.4f}</div>'
            f'{_check(stored, shown)}{"".join(figs)}</div>')


def delta_tile(w: PageWriter, name: str, delta: float, stored: tuple[float, float], image: np.ndarray,
               gt: np.ndarray, mine: Shown, base: Shown, labels: tuple[str, str], threshold: float) -> str:
    draws = len(mine.ious)
    which = f" (draw 1 of {draws})" if draws > 1 else ""
    figs = [_figure(w.image(image_panel(image, gt, [c[0] for c in mine.clicks]), name + "_gt"), "ground truth")]
    for label, shown in zip(labels, (mine, base)):
        figs.append(_figure(w.image(prediction_panel(image, gt, shown.probs[0], threshold, shown.clicks[0]),
                                    f"{name}_{label}"), f"{label}{which}: IoU {shown.ious[0]:.3f}"))
    return (f'<div class="tile" data-name="{html.escape(name)}" data-delta="{delta!r}">'
            f'<div class="cap"><b>{html.escape(name)}</b> IoU@1 {stored[0]:.4f} vs {stored[1]:.4f} '
            f"({delta:+.4f})</div>{_check(stored[0], mine)}{_check(stored[1], base)}{''.join(figs)}</div>")


# --------------------------------------------------------------------------- sources


def dataset_dir(run_dir: str | Path, dataset: str, datasets: dict[str, str] | None = None) -> str:
    """The shard directory of ``dataset``: from ``datasets``, else the run's ``data.eval``."""
    if datasets and dataset in datasets:
        return str(datasets[dataset])
    path = rundir.config_path(run_dir)
    evals = {}
    if path.exists():
        evals = ((yaml.safe_load(path.read_text()) or {}).get("data") or {}).get("eval") or {}
    if dataset not in evals:
        raise ValueError(f"no shard directory known for dataset {dataset!r} of {run_dir} "
                         f"(not in {path}'s data.eval; pass it as NAME=SHARD_DIR)")
    return str(evals[dataset])


def checkpoint_of(row: dict) -> Path:
    """The checkpoint a row evaluated: in its run directory by epoch, else the recorded path."""
    by_epoch = rundir.checkpoint_path(row["run_dir"], row["epoch"]) if row.get("run_dir") else None
    if by_epoch is not None and by_epoch.exists():
        return by_epoch
    path = Path(row.get("checkpoint", ""))
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint of {row['experiment']} epoch {row['epoch']} not found: "
                                f"{by_epoch} nor {path}")
    return path


class Models:
    """Predictors by checkpoint path, loaded once."""

    def __init__(self, device: str):
        self.device = device
        self.cache: dict[Path, object] = {}

    def get(self, path: Path):
        if path not in self.cache:
            from clickseg.model import load_checkpoint
            from clickseg.predictor import Predictor

            self.cache[path] = Predictor(load_checkpoint(path, self.device), self.device)
        return self.cache[path]


# --------------------------------------------------------------------------- one page


def write_page(page: Path, experiment: str, dataset: str, sections: list[Section], shard_dir: str,
               models: Models, k: int, baseline: str | None) -> None:
    """Recompute the shown instances of every section and write the page."""
    w = PageWriter(page)
    wanted: dict[str, list] = {}
    for s in sections:
        for n in s.worst + [n for n, _ in s.gains + s.losses]:
            wanted.setdefault(n, [])
    limit = max(int(s.row.get("max_instances") or 0) for s in sections)
    found: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}
    skipped: list[str] = []
    walked: list[str] = []
    for index, (sample, obj) in enumerate(instance_objects(shard_dir, limit)):
        name = f"{sample.source}#{obj.id}"
        if not obj.mask.any():
            skipped.append(name)
            continue
        walked.append(name)
        if name in wanted:
            found[name] = (index, sample.image, obj.mask.astype(np.int64))
    parts = [f"<h1>{html.escape(experiment)} on {html.escape(dataset)}</h1>",
             f"<p>shards: {html.escape(str(shard_dir))}</p>"]
    for s in sections:
        row, cfg = s.row, protocol_of(s.row)
        names = row.get("instance_names") or []
        if walked[:len(names)] != names:
            raise ValueError(f"{shard_dir} no longer holds the instances {experiment} was evaluated on "
                             f"({dataset}, {s.protocol}); re-run the evaluation")
        stored = first_click_ious(row)
        ckpt = checkpoint_of(row)
        parts.append(f'<section id="{html.escape(s.protocol)}" data-protocol="{html.escape(s.protocol)}">'
                     f"<h2>{html.escape(s.protocol)}, epoch {row['epoch']}</h2>"
                     f"<p>{row.get('instances')} instances, {row.get('draws', 1)} draw(s), mIoU@1 "
                     f"{row['metrics'].get('mIoU@1', float('nan')):.4f}; checkpoint {html.escape(str(ckpt))}</p>")
        tiles = []
        for n in s.worst:
            index, image, gt = found[n]
            shown = recompute(models.get(ckpt), image, gt, cfg, dataset, index)
            tiles.append(worst_tile(w, n, stored[n], image, gt, shown, cfg.threshold))
        parts.append(f'<h3>The {len(tiles)} worst instances at click 1</h3><div class="tiles worst">'
                     + "".join(tiles) + "</div>")
        n_skip = int(row.get("skipped_empty") or 0)
        items = "".join(f"<li>{html.escape(n)}</li>" for n in skipped)
        parts.append(f'<h3>Skipped: {n_skip} instance(s) with an empty mask</h3><ul class="skipped">{items}</ul>')
        if s.ref is not None:
            base_ckpt = checkpoint_of(s.ref)
            ref_stored = first_click_ious(s.ref)
            for title, cls, items_ in (("gains", "gains", s.gains), ("losses", "losses", s.losses)):
                tiles = []
                for n, delta in items_:
                    index, image, gt = found[n]
                    mine = recompute(models.get(ckpt), image, gt, cfg, dataset, index)
                    base = recompute(models.get(base_ckpt), image, gt, cfg, dataset, index)
                    tiles.append(delta_tile(w, n, delta, (stored[n], ref_stored[n]), image, gt, mine, base,
                                            (experiment, baseline or "baseline"), cfg.threshold))
                parts.append(f"<h3>Largest {title} against {html.escape(baseline or '')} (epoch {s.ref['epoch']})"
                             f'</h3><div class="tiles {cls}">' + "".join(tiles) + "</div>")
        parts.append("</section>")
    text = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(experiment)} / "
            f"{html.escape(dataset)}</title><style>{_STYLE}</style></head><body>" + "\n".join(parts)
            + "</body></html>\n")
    rundir.atomic_write_text(page, text)
    w.remove_stale()


def plan(rows: list[dict], baseline: str | None, k: int) -> dict[tuple[str, str], list[Section]]:
    """(experiment, dataset) -> the sections of its page: every protocol at its last epoch."""
    by_key = {key: r for key, r in latest(rows).items() if not r.get("scaling_curve")}
    last: dict[tuple[str, str, str], int] = {}
    for exp, epoch, ds, protocol in by_key:
        last[(exp, ds, protocol)] = max(epoch, last.get((exp, ds, protocol), epoch))
    pages: dict[tuple[str, str], list[Section]] = {}
    for (exp, ds, protocol), epoch in sorted(last.items()):
        row = by_key[(exp, epoch, ds, protocol)]
        s = Section(protocol, row, worst=worst_instances(row, k))
        if baseline is not None and exp != baseline:
            s.ref = baseline_row(by_key, baseline, epoch, ds, protocol)
            if s.ref is not None:
                s.gains, s.losses = gains_and_losses(row, s.ref, k)
        pages.setdefault((exp, ds), []).append(s)
    return pages


def write_galleries(out_dir: str | Path, run_dirs: Sequence[str | Path], baseline: str | None = None, k: int = 8,
                    device: str = "cpu", datasets: dict[str, str] | None = None) -> tuple[list[Path], list[str]]:
    """Write ``<out_dir>/gallery/<experiment>/<dataset>.html`` for every experiment and dataset of
    the runs' results and ``<out_dir>/gallery/index.html``; return (pages, errors). A page that
    cannot be made (dataset or checkpoint gone) is an error naming it; the others are written."""
    root = Path(out_dir) / "gallery"
    rows = collect(list(run_dirs))
    if baseline is not None and not any(r["experiment"] == baseline for r in rows):
        raise ValueError(f"baseline experiment {baseline!r} has no results")
    models = Models(device)
    pages, errors, links = [], [], []
    for (exp, ds), sections in plan(rows, baseline, k).items():
        page = root / _safe(exp) / f"{_safe(ds)}.html"
        try:
            shard_dir = dataset_dir(sections[0].row["run_dir"], ds, datasets)
            write_page(page, exp, ds, sections, shard_dir, models, k, baseline)
        except (ValueError, KeyError, OSError) as e:
            errors.append(f"gallery of {exp} on {ds}: {e}")
            continue
        pages.append(page)
        links.append(f'<li><a href="{_safe(exp)}/{_safe(ds)}.html">{html.escape(exp)} / {html.escape(ds)}</a></li>')
    if links:
        rundir.atomic_write_text(root / "index.html", "<!DOCTYPE html><html><head><meta charset='utf-8'>"
                                 f"<title>gallery</title><style>{_STYLE}</style></head><body><h1>Gallery</h1>"
                                 f"<ul>{''.join(links)}</ul></body></html>\n")
    return pages, errors
