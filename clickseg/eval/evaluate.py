"""Per-checkpoint evaluation of a run, appending to its results file and TensorBoard.

Each run directory holds ``results.jsonl``: one JSON row per (experiment,
epoch, dataset, protocol) with the summary metrics, their 95% bootstrap
intervals over instances and the per-instance IoU after every click (averaged
over draws; every draw in ``draw_ious`` when there are several). The
protocol of a row is a label of all the options that change its numbers
(``center``, ``center-target0.9``, ``random-c5-fliphv``, ``random-c5-K8r5``; scaling
curve points end in ``-K<k>r<radius>@1``), so a new option gives new rows and never
overwrites old ones. A checkpoint whose rows are all present is never evaluated
again, so ``evaluate_run`` can be called any number of times (and ``follow_run``
calls it until training has ended).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

import shards
from clickseg import rundir
from clickseg.config import Config, ConfigError, EvalConfig, load_config
from clickseg.eval.metrics import first_reaching
from clickseg.eval.protocols import Views, evaluate_views, label, options
from clickseg.eval.summary import summarize_draws
from clickseg.model import load_checkpoint
from clickseg.predictor import Predictor
from clickseg.rundir import ResultRow, append_result, read_results

@dataclass
class Instance:
    source: str
    object_id: int
    image: np.ndarray
    gt: np.ndarray  # H x W int: 1 object, 0 background


def instance_objects(dataset_dir: str | Path, limit: int = 0) -> Iterator[tuple[shards.Sample, shards.Object]]:
    """(sample, object) of every evaluation instance (non-stuff object, empty ones included) in
    source order, the first ``limit`` (0: all); an instance's position is its index (click seed)."""
    n = 0
    for sample in shards.open_dataset(dataset_dir):
        for obj in sample.objects:
            if obj.is_stuff:
                continue
            if limit and n >= limit:
                return
            n += 1
            yield sample, obj


def instances(dataset_dir: str, limit: int = 0) -> Iterator[Instance | None]:
    """Evaluation instances in source order (every non-stuff object); None for an empty object."""
    for sample, obj in instance_objects(dataset_dir, limit):
        yield Instance(sample.source, obj.id, sample.image, obj.mask.astype(np.int64)) if obj.mask.any() else None


@dataclass
class DatasetResult:
    ious: np.ndarray  # (instances, draws, clicks)
    skipped_empty: int
    names: list[str]
    images: int
    seconds: float
    clicks: int  # clicks predicted, over instances and draws (fewer than ious.size with target_iou)

    @property
    def mean_ious(self) -> np.ndarray:
        """(instances, clicks): IoU after each click averaged over draws."""
        return self.ious.mean(axis=1)


def evaluate_dataset(predictor: Predictor, dataset_dir: str, cfg: EvalConfig,
                     dataset: str | None = None, max_instances: int | None = None) -> DatasetResult:
    """Every instance of a dataset under the protocol ``cfg``.

    ``dataset`` (default: the directory's name) enters the click seeds, with the instance's
    index among the dataset's objects (empty ones included, so ``max_instances`` never changes
    the clicks of an instance). Each image is encoded once per view and shared by consecutive
    instances of the same image. Empty objects are skipped and counted.
    """
    limit = max_instances if max_instances is not None else cfg.max_instances
    dataset = dataset if dataset is not None else Path(dataset_dir).name
    views = Views(predictor, cfg.flips)
    rows, names, skipped, sources = [], [], 0, []
    t0 = time.perf_counter()
    for index, inst in enumerate(instances(dataset_dir, limit)):
        if inst is None:
            skipped += 1
            continue
        if not sources or sources[-1] != inst.source:
            views.set_image(inst.image)
            sources.append(inst.source)
        rows.append(evaluate_views(views, inst.gt, cfg, dataset, index))
        names.append(f"{inst.source}#{inst.object_id}")
    ious = np.asarray(rows, dtype=np.float64).reshape(-1, cfg.draws, cfg.n_clicks)
    clicks = int(first_reaching(ious, cfg.target_iou)[1].sum()) if cfg.target_iou else ious.size
    return DatasetResult(ious, skipped, names, len(set(sources)), time.perf_counter() - t0, clicks)


def protocols_of(cfg: EvalConfig) -> list[tuple[EvalConfig, bool]]:
    """(protocol, is a scaling-curve point) pairs that ``cfg`` asks for: ``cfg`` itself, then
    mIoU@1 (one click, where ``target_iou`` changes nothing) at each K of ``scaling_curve``."""
    out = [(cfg, False)]
    out += [(replace(cfg, scaling=k, n_clicks=1, target_iou=0.0), True) for k in cfg.scaling_curve]
    return out


def row_label(cfg: EvalConfig, curve: bool) -> str:
    """``label(cfg)``; for a scaling-curve point, the label at K = 1 then ``-K<k>r<radius>@1``."""
    if not curve:
        return label(cfg)
    return f"{label(replace(cfg, scaling=1))}-K{cfg.scaling}r{cfg.jitter_radius}@1"


def tb_tag(dataset: str, label: str, metric: str) -> str:
    return f"eval/{dataset}/{metric}" if label == "center" else f"eval/{dataset}/{label}/{metric}"


def make_row(experiment: str, epoch: int, dataset: str, protocol: EvalConfig, curve: bool, result: DatasetResult,
             checkpoint_path: str, max_instances: int = 0) -> ResultRow:
    """One results.jsonl row: summary with CIs, per-instance IoUs (draw mean) and, for several
    draws, the IoU of every draw."""
    metrics, ci = summarize_draws(result.ious) if len(result.ious) else ({}, {})
    row = ResultRow(experiment=experiment, epoch=epoch, dataset=dataset, protocol=row_label(protocol, curve),
                    clicker=protocol.protocol, options=options(protocol), scaling_curve=curve,
                    threshold=protocol.threshold, n_clicks=protocol.n_clicks, draws=protocol.draws,
                    seed=protocol.seed, max_instances=max_instances, instances=len(result.ious),
                    skipped_empty=result.skipped_empty, checkpoint=checkpoint_path,
                    seconds=round(result.seconds, 3),
                    seconds_per_image=round(result.seconds / max(1, result.images), 4),
                    metrics=metrics, ci=ci, instance_names=result.names, ious=result.mean_ious.round(6).tolist())
    if protocol.draws > 1:
        row["draw_ious"] = result.ious.round(6).tolist()
    return row


def evaluate_run(run_dir: str | Path, cfg: Config | None = None, device: str = "cpu",
                 overrides: Sequence[str] = ()) -> list[dict]:
    """Evaluate every checkpoint of ``run_dir`` under every protocol of ``cfg.eval`` not
    evaluated yet; append the new rows to results.jsonl and TensorBoard and return them.

    ``overrides`` (``eval.key=value``, applied to the run's config.yaml when ``cfg`` is None)
    change the protocol of this call only, e.g. ``["eval.protocol=random", "eval.draws=5"]``;
    the config file is not changed.
    """
    run_dir = Path(run_dir)
    bad = [o for o in overrides if not o.startswith("eval.")]
    if bad:
        raise ConfigError(f"evaluation overrides must set eval.* keys, got {bad}")
    cfg = cfg or load_config(rundir.config_path(run_dir), list(overrides))
    with rundir.evaluation_lock(run_dir):
        return _evaluate_new(run_dir, cfg, device)


def _evaluate_new(run_dir: Path, cfg: Config, device: str) -> list[dict]:
    # A row counts as done for the same protocol label, click budget and instance limit; a new
    # budget or limit adds rows (the report uses the latest row of a label).
    done = {(r["epoch"], r["dataset"], r["protocol"], r.get("n_clicks"), r.get("max_instances", 0))
            for r in read_results(run_dir)}
    plan = protocols_of(cfg.eval)
    limit = cfg.eval.max_instances
    new_rows = []
    writer = None
    for epoch, path in rundir.list_checkpoints(run_dir):
        todo = [(name, d, p, curve) for name, d in cfg.data.eval.items() for p, curve in plan
                if (epoch, name, row_label(p, curve), p.n_clicks, limit) not in done]
        if not todo:
            continue
        predictor = Predictor(load_checkpoint(path, device), device)
        for name, dataset_dir, protocol, curve in todo:
            result = evaluate_dataset(predictor, dataset_dir, protocol, name, limit)
            row = make_row(cfg.name, epoch, name, protocol, curve, result, str(path), limit)
            append_result(run_dir, row)
            done.add((epoch, name, row["protocol"], protocol.n_clicks, limit))
            new_rows.append(row)
            if writer is None:
                from torch.utils.tensorboard import SummaryWriter
                writer = SummaryWriter(str(run_dir / "tb" / "eval"))
            metrics = row["metrics"]
            for key in ("mIoU@1", "mIoU@5", "NoC@85", "NoC@90", "NoC@95", "NoF@90"):
                if key in metrics:
                    writer.add_scalar(tb_tag(name, row["protocol"], key), metrics[key], epoch)
            writer.add_scalar(tb_tag(name, row["protocol"], "seconds_per_image"), row["seconds_per_image"], epoch)
            lo, hi = row["ci"].get("mIoU@1", (float("nan"), float("nan")))
            print(f"[eval] {cfg.name} epoch {epoch} {name} {row['protocol']}: mIoU@1 "
                  f"{metrics.get('mIoU@1', float('nan')):.4f} [{lo:.4f}, {hi:.4f}] "
                  f"NoC@90 {metrics.get('NoC@90', float('nan')):.2f} ({row['instances']} instances, "
                  f"{row['skipped_empty']} empty skipped, {row['seconds_per_image']} s/image)", flush=True)
    if writer is not None:
        writer.close()
    return new_rows


def follow_run(run_dir: str | Path, poll_s: float = 5.0, device: str = "cpu", timeout_s: float | None = None,
               overrides: Sequence[str] = ()) -> int:
    """Evaluate checkpoints as they appear until training is done or failed; return rows written."""
    # Its own CPUs in a Slurm job; one thread next to a local training.
    torch.set_num_threads(int(os.environ.get("SLURM_CPUS_PER_TASK", "1")))
    cfg = load_config(rundir.config_path(run_dir), list(overrides))
    start, total = time.time(), 0
    while True:
        state = rundir.read_state(run_dir)  # read before evaluating, so the last checkpoint is never missed
        total += len(evaluate_run(run_dir, cfg, device))
        if state is not None and state.status.ended:
            return total
        if timeout_s is not None and time.time() - start > timeout_s:
            raise TimeoutError(f"training of {run_dir} did not finish within {timeout_s} s")
        time.sleep(poll_s)
