"""Evaluate one checkpoint (clickseg's or SegNext's) on sharded datasets: a table per dataset
and the per-instance IoU arrays on disk (``launch.py eval --checkpoint``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from clickseg.config import EvalConfig
from clickseg.eval.evaluate import DatasetResult, evaluate_dataset, make_row, protocols_of
from clickseg.model import load_checkpoint
from clickseg.predictor import Predictor
from clickseg.rundir import append_result

NOC_COLUMNS = ("NoC@85", "NoC@90", "NoC@95", "NoF@90", "NoF@95", "5-mIoU")


def seconds_per_click(result: DatasetResult) -> float:
    return result.seconds / result.clicks if result.clicks else float("nan")


def format_table(dataset: str, label: str, row: dict, result: DatasetResult) -> str:
    """NoC / NoF / 5-mIoU and seconds per click on one line, then mIoU@1..n in rows of five."""
    m = row["metrics"]
    head = f"{dataset} [{label}]: {row['instances']} instances, {row['skipped_empty']} empty skipped, " \
           f"{row['draws']} draw(s), threshold {row['threshold']}"

    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    cols = [c for c in NOC_COLUMNS if c in m] + ["s/click"]
    vals = [fmt(m[c]) for c in cols[:-1]] + [f"{seconds_per_click(result):.4f}"]
    widths = [max(len(c), len(v)) for c, v in zip(cols, vals)]
    lines = [head, "  " + "  ".join(c.rjust(w) for c, w in zip(cols, widths)),
             "  " + "  ".join(v.rjust(w) for v, w in zip(vals, widths))]
    n = row["n_clicks"]
    for start in range(1, n + 1, 5):
        ks = range(start, min(n, start + 4) + 1)
        lines.append("  " + "  ".join(f"mIoU@{k}={m[f'mIoU@{k}']:.4f}" for k in ks))
    return "\n".join(lines)


def evaluate_checkpoint(checkpoint: str | Path, datasets: dict[str, str], cfg: EvalConfig,
                        out_dir: str | Path, device: str = "cpu") -> list[dict]:
    """Evaluate ``checkpoint`` on every ``name -> shard dir`` under ``cfg``'s protocols.

    Writes ``out_dir/results.jsonl`` (rows as a run's, experiment = the checkpoint's file
    stem, epoch 0; appended, never rewritten) and, per dataset and protocol,
    ``<dataset>.<protocol>.ious.npy``: the (instances, draws, clicks) IoU array, with the
    instance names in ``<dataset>.<protocol>.instances.json``. Prints one table each.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, path in datasets.items():
        if not (Path(path) / "manifest.json").exists():
            raise FileNotFoundError(f"dataset {name!r}: {path} has no manifest.json (not a shard directory)")
    predictor = Predictor(load_checkpoint(checkpoint, device), device)
    experiment = Path(checkpoint).stem
    rows = []
    for name, path in datasets.items():
        for protocol, curve in protocols_of(cfg):
            result = evaluate_dataset(predictor, path, protocol, name, cfg.max_instances)
            row = make_row(experiment, 0, name, protocol, curve, result, str(checkpoint))
            label = row["protocol"]
            np.save(out / f"{name}.{label}.ious.npy", result.ious)
            (out / f"{name}.{label}.instances.json").write_text(json.dumps(result.names))
            append_result(out, row)
            rows.append(row)
            if result.ious.size:
                print(format_table(name, label, row, result) + "\n", flush=True)
            else:
                print(f"{name} [{label}]: no instances ({result.skipped_empty} empty skipped)\n", flush=True)
    return rows
