"""Per-checkpoint evaluation of a run, appending to its results file and TensorBoard.

Each run directory holds ``results.jsonl``: one JSON row per (experiment,
epoch, dataset, protocol) with the summary metrics and the per-instance IoU
after every click. A checkpoint whose rows are all present is never evaluated
again, so ``evaluate_run`` can be called any number of times (and ``follow_run``
calls it until training has ended).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

import shards
from clickseg import checkpoint
from clickseg.config import Config, EvalConfig, load_config
from clickseg.eval.metrics import evaluate_instance, summarize
from clickseg.model import load_checkpoint
from clickseg.predictor import Predictor

RESULTS_FILE = "results.jsonl"


@dataclass
class Instance:
    source: str
    object_id: int
    image: np.ndarray
    gt: np.ndarray  # H x W int: 1 object, 0 background


def instances(dataset_dir: str, limit: int = 0) -> Iterator[Instance | None]:
    """Evaluation instances in source order (every non-stuff object); None for an empty object."""
    n = 0
    for sample in shards.open_dataset(dataset_dir):
        for obj in sample.objects:
            if obj.is_stuff:
                continue
            if limit and n >= limit:
                return
            n += 1
            yield Instance(sample.source, obj.id, sample.image, obj.mask.astype(np.int64)) if obj.mask.any() else None


def evaluate_dataset(predictor: Predictor, dataset_dir: str, cfg: EvalConfig) -> tuple[np.ndarray, int, list[str]]:
    """IoU after each click for every instance: ((N, n_clicks) array, skipped empty objects, instance names)."""
    rows, names, skipped = [], [], 0
    for inst in instances(dataset_dir, cfg.max_instances):
        if inst is None:
            skipped += 1
            continue
        predictor.set_image(inst.image)
        rows.append(evaluate_instance(predictor.predict, inst.gt, cfg.n_clicks, cfg.threshold))
        names.append(f"{inst.source}#{inst.object_id}")
    return np.asarray(rows, dtype=np.float64).reshape(-1, cfg.n_clicks), skipped, names


def read_results(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / RESULTS_FILE
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise ValueError(f"{path}, line {n}: not valid JSON") from None
    return rows


def append_result(run_dir: str | Path, row: dict) -> None:
    """Append one row as a single write (never rewrites earlier rows)."""
    with open(Path(run_dir) / RESULTS_FILE, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def evaluate_run(run_dir: str | Path, cfg: Config | None = None, device: str = "cpu") -> list[dict]:
    """Evaluate every checkpoint of ``run_dir`` not evaluated yet; return the new rows."""
    run_dir = Path(run_dir)
    cfg = cfg or load_config(run_dir / "config.yaml")
    done = {(r["epoch"], r["dataset"], r["protocol"]) for r in read_results(run_dir)}
    new_rows = []
    writer = None
    for epoch, path in checkpoint.list_checkpoints(run_dir):
        todo = [(name, d) for name, d in cfg.data.eval.items() if (epoch, name, cfg.eval.protocol) not in done]
        if not todo:
            continue
        predictor = Predictor(load_checkpoint(path, device), device)
        for name, dataset_dir in todo:
            t0 = time.time()
            ious, skipped, names = evaluate_dataset(predictor, dataset_dir, cfg.eval)
            metrics = summarize(ious) if len(ious) else {}
            row = {"experiment": cfg.name, "epoch": epoch, "dataset": name, "protocol": cfg.eval.protocol,
                   "threshold": cfg.eval.threshold, "n_clicks": cfg.eval.n_clicks, "instances": len(ious),
                   "skipped_empty": skipped, "checkpoint": str(path), "seconds": round(time.time() - t0, 2),
                   "metrics": metrics, "instance_names": names, "ious": ious.round(6).tolist()}
            append_result(run_dir, row)
            new_rows.append(row)
            if writer is None:
                from torch.utils.tensorboard import SummaryWriter
                writer = SummaryWriter(str(run_dir / "tb" / "eval"))
            for key in ("mIoU@1", "mIoU@5", "NoC@85", "NoC@90", "NoC@95", "NoF@90"):
                if key in metrics:
                    writer.add_scalar(f"eval/{name}/{key}", metrics[key], epoch)
            print(f"[eval] {cfg.name} epoch {epoch} {name}: mIoU@1 {metrics.get('mIoU@1', float('nan')):.4f} "
                  f"NoC@90 {metrics.get('NoC@90', float('nan')):.2f} ({len(ious)} instances, {row['seconds']} s)",
                  flush=True)
    if writer is not None:
        writer.close()
    return new_rows


def training_status(run_dir: str | Path) -> str:
    """'running', 'done', 'failed' or 'missing', from the state file training writes."""
    path = Path(run_dir) / "train_state.json"
    if not path.exists():
        return "missing"
    return json.loads(path.read_text()).get("status", "running")


def follow_run(run_dir: str | Path, poll_s: float = 5.0, device: str = "cpu", timeout_s: float | None = None) -> int:
    """Evaluate checkpoints as they appear until training is done or failed; return rows written."""
    torch.set_num_threads(1)
    cfg = load_config(Path(run_dir) / "config.yaml")
    start, total = time.time(), 0
    while True:
        status = training_status(run_dir)  # read before evaluating, so the last checkpoint is never missed
        total += len(evaluate_run(run_dir, cfg, device))
        if status in ("done", "failed"):
            return total
        if timeout_s is not None and time.time() - start > timeout_s:
            raise TimeoutError(f"training of {run_dir} did not finish within {timeout_s} s")
        time.sleep(poll_s)
