"""The reference side of bench/data_speed.py: SegNext's own COCO+LVIS training-data pipeline, timed.

It imports SegNext from the user's checkout (``--segnext DIR``, whose ``segnext/`` folder holds
``isegm``) and builds the training dataset the way the SegNext model file does (default
``segnext/models/default/plainvit_base1024_cocolvis_sax2.py``): the ``cfg.<key> = <constant>``
lines, ``train_augmentator``, ``points_sampler`` and ``trainset`` assignments of its ``train()``
are read from that file and evaluated with ``cfg.img_size`` set to each input size and the
dataset path set to ``--root``. Nothing of SegNext is copied here. Each (size, workers) cell is
timed through a torch DataLoader and printed as one JSON line (see :func:`time_loader`).

It runs under the reference python (albumentations==1.4.2 and SegNext's data imports), started by
data_speed.py; :func:`time_loader` is shared with data_speed.py and needs only the standard library.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

MODEL_FILE = "models/default/plainvit_base1024_cocolvis_sax2.py"
DATASET_NAMES = ("train_augmentator", "points_sampler", "trainset")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (Linux /proc; 0 for one that is gone)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all processes, all CPUs; Linux /proc/stat)."""
    with open("/proc/stat") as fh:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fh.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def time_loader(loader, batch: int, warmup: int, batches: int) -> dict[str, float]:
    """Time ``batches`` batches of ``batch`` samples after ``warmup`` batches: samples per second, samples
    per CPU second of this process and its loader workers, and the CPUs other processes kept busy meanwhile."""
    it = iter(loader)
    try:
        for _ in range(warmup):
            next(it)
        pids = [os.getpid()] + [w.pid for w in getattr(it, "_workers", [])]
        cpu0, busy0, t0 = cpu_seconds(pids), busy_seconds(), time.perf_counter()
        for _ in range(batches):
            next(it)
        wall, cpu = time.perf_counter() - t0, cpu_seconds(pids) - cpu0
        others = max(0.0, busy_seconds() - busy0 - cpu) / wall
        n = batches * batch
        return {"samples_per_s": n / wall, "samples_per_cpu_s": n / max(cpu, 1e-9), "other_cpus": others}
    finally:
        del it  # shuts the worker processes down before the next cell starts


def set_threads(*_) -> None:
    """One OpenCV and one torch thread in this process (also the DataLoader's worker_init_fn)."""
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def train_statements(model_file: Path) -> list[ast.stmt]:
    """The ``cfg.<key> = <constant>`` and dataset assignments of ``train()`` in a SegNext model file, in order."""
    tree = ast.parse(model_file.read_text(), str(model_file))
    train = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train"), None)
    if train is None:
        raise SystemExit(f"{model_file}: no train() function")
    keep = []
    for node in train.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if isinstance(target, ast.Name) and target.id in DATASET_NAMES:
            keep.append(node)
        elif (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
              and target.value.id == "cfg" and isinstance(node.value, ast.Constant)):
            keep.append(node)
    missing = set(DATASET_NAMES) - {n.targets[0].id for n in keep if isinstance(n.targets[0], ast.Name)}
    if missing:
        raise SystemExit(f"{model_file}: train() does not assign {', '.join(sorted(missing))}")
    return keep


class _Cfg(SimpleNamespace):
    """The model file's ``cfg``: its constants as they are assigned; every ``cfg.*PATH`` is the source root."""

    def __getattr__(self, name: str):
        if name.endswith("PATH"):
            return self.root
        raise AttributeError(name)


def build_trainset(statements: list[ast.stmt], root: str, size: int, min_len: int):
    """SegNext's training dataset at input size ``size`` on the COCO+LVIS source at ``root``."""
    import albumentations
    import isegm.data.transforms as seg_transforms
    from isegm.data.datasets.coco_lvis import CocoLvisDataset
    from isegm.data.points_sampler import MultiPointSampler

    cfg = _Cfg(img_size=size, root=root)
    names = {k: v for k, v in vars(albumentations).items() if not k.startswith("_")}
    names.update({k: v for k, v in vars(seg_transforms).items() if not k.startswith("_")})
    names.update(cfg=cfg, CocoLvisDataset=CocoLvisDataset, MultiPointSampler=MultiPointSampler)
    for node in statements:
        exec(compile(ast.Module(body=[node], type_ignores=[]), "<segnext train()>", "exec"), names)
    trainset = names["trainset"]
    trainset.epoch_len = max(trainset.epoch_len, min_len)  # never runs out within one cell
    return trainset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segnext", required=True, help="SegNext checkout (its segnext/ folder holds isegm)")
    parser.add_argument("--model-file", default=MODEL_FILE, help="relative to DIR/segnext")
    parser.add_argument("--root", required=True, help="COCO+LVIS-layout source (root/train/...)")
    parser.add_argument("--sizes", type=int, nargs="+", required=True)
    parser.add_argument("--workers", type=int, nargs="+", required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--batches", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True, help="warm-up batches per worker process")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    code = Path(args.segnext).resolve() / "segnext"
    sys.path.insert(0, str(code))
    import random

    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    set_threads()
    statements = train_statements(code / args.model_file)
    for size in args.sizes:
        for workers in args.workers:
            random.seed(args.seed)
            np.random.seed(args.seed)
            torch.manual_seed(args.seed)
            need = ((args.warmup + 2) * max(workers, 1) + args.batches) * args.batch
            dataset = build_trainset(statements, args.root, size, need)
            loader = DataLoader(dataset, args.batch, shuffle=True, drop_last=True, num_workers=workers,
                                worker_init_fn=set_threads if workers else None)
            result = time_loader(loader, args.batch, args.warmup * max(workers, 1), args.batches)
            print(json.dumps({"size": size, "workers": workers, **result}), flush=True)


if __name__ == "__main__":
    main()
