"""Training-data throughput (samples/s) of clickseg's TrainStream, next to SegNext's own pipeline.

A COCO+LVIS-layout source of COCO-sized images is written with the project's generator
(shards.synthetic.write_cocolvis) and converted to shards (kept under --work and reused). clickseg
side: TrainStream with the default config (only data.train, model.input_size and data.num_workers
set) through a torch DataLoader. Reference in the same run, with --segnext: SegNext's own training
dataset (CocoLvisDataset with the train_augmentator, MultiPointSampler and dataset arguments of its
plainvit_base1024_cocolvis_sax2 model file, read from your checkout) on the same source images,
through a DataLoader with the same batch and worker counts, run by bench/_segnext_data_worker.py
under the reference python. Images with no object are left out of the source (SegNext's reader
cannot load an image without a mask layer; COCO+LVIS images all have objects).

Every process uses one OpenCV and one torch thread, so "per core" is samples/s per worker process
(in-process loading counts as one core). "per CPU-s" divides by the CPU time the loading process
and its workers actually used, and "other load" is how many CPUs other processes kept busy
meanwhile: on a shared machine per CPU-s is the figure to compare. Warm-up batches (which for
clickseg include filling data.shuffle_buffer) are not timed.

    python bench/data_speed.py                                  # clickseg only
    python bench/data_speed.py --segnext ~/SegNext --segnext-python /tmp/segnext-venv/bin/python
    python bench/data_speed.py --sizes 1024 --workers 2 --samples 480

The reference python (SegNext pins albumentations 1.4.2 and OpenCV 4.9, built for numpy 1.x):

    python3 -m venv /tmp/segnext-venv
    /tmp/segnext-venv/bin/pip install torch torchvision "numpy<2" albumentations==1.4.2 \\
        opencv-python-headless==4.9.0.80 tensorboard
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import torch
from torch.utils.data import DataLoader

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

import shards  # noqa: E402
from _segnext_data_worker import set_threads, time_loader  # noqa: E402
from clickseg.config import load_config  # noqa: E402
from clickseg.data.stream import TrainStream  # noqa: E402
from shards.cocolvis import CocoLvisConverter  # noqa: E402
from shards.synthetic import write_cocolvis  # noqa: E402

WORKER = BENCH / "_segnext_data_worker.py"


def parse_side(text: str) -> tuple[int, int]:
    """``640`` -> (640, 640); ``480:640`` -> (480, 640): the range each image side is drawn from."""
    lo, _, hi = text.partition(":")
    return int(lo), int(hi or lo)


def drop_thingless(split_dir: Path) -> int:
    """Remove the generator's images without any object (no mask layer, or stuff only); return how many are left."""
    path = split_dir / "hannotation.pickle"
    annotation = pickle.loads(path.read_bytes())
    kept = {k: v for k, v in annotation.items() if v["num_instance_masks"] > 0}
    for image_id in annotation.keys() - kept.keys():
        (split_dir / "images" / f"{image_id}.jpg").unlink()
        (split_dir / "masks" / f"{image_id}.pickle").unlink()
    path.write_bytes(pickle.dumps(kept, protocol=3))
    return len(kept)


def prepare_data(work: Path, images: int, side: tuple[int, int], seed: int, per_shard: int) -> tuple[Path, Path]:
    """The COCO+LVIS source and its shards under ``work``, written unless they exist for these parameters."""
    source, shard_dir, stamp = work / "source", work / "shards", work / "params.json"
    params = {"images": images, "side": list(side), "seed": seed, "samples_per_shard": per_shard}
    if stamp.exists() and json.loads(stamp.read_text()) == params and (shard_dir / "manifest.json").exists():
        print(f"reusing the data in {work}")
        return source, shard_dir
    stamp.unlink(missing_ok=True)
    for d in (source, shard_dir):
        shutil.rmtree(d, ignore_errors=True)
    print(f"writing {images} COCO+LVIS-layout images of {side[0]}..{side[1]} px per side to {source} ...", flush=True)
    write_cocolvis(source, images, size=(side, side), seed=seed, split="train")
    kept = drop_thingless(source / "train")
    print(f"kept {kept} images with at least one object (SegNext's reader needs a mask layer; COCO+LVIS "
          "images all have objects)", flush=True)
    shards.convert(CocoLvisConverter(root=source, split="train"), shard_dir, samples_per_shard=per_shard,
                   progress=False)
    stamp.write_text(json.dumps(params))
    return source, shard_dir


def clickseg_config(shard_dir: Path, size: int, workers: int):
    return load_config(None, [f"data.train={shard_dir}", f"model.input_size={size}", f"data.num_workers={workers}"])


def clickseg_speed(shard_dir: Path, size: int, workers: int, batch: int, warmup: int,
                   batches: int) -> dict[str, float]:
    """clickseg's training stream through a DataLoader with ``workers`` processes, timed by time_loader."""
    cfg = clickseg_config(shard_dir, size, workers)
    loader = DataLoader(TrainStream(cfg, 0, 1, 0), batch_size=batch, num_workers=workers,
                        worker_init_fn=set_threads if workers else None)
    return time_loader(loader, batch, warmup * max(workers, 1), batches)


def segnext_speeds(args: argparse.Namespace, source: Path, batches: int) -> dict[tuple[int, int], dict[str, float]]:
    """SegNext's pipeline per (size, workers), run by the helper under the reference python."""
    cmd = [args.segnext_python, str(WORKER), "--segnext", args.segnext, "--root", str(source),
           "--sizes", *map(str, args.sizes), "--workers", *map(str, args.workers), "--batch", str(args.batch),
           "--batches", str(batches), "--warmup", str(args.warmup), "--seed", str(args.seed)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    print("reference:", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        print(f"the SegNext reference failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
    speeds = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            speeds[r.pop("size"), r.pop("workers")] = r
    return speeds


def print_table(ours: dict, ref: dict | None) -> None:
    """One row per (T, workers): samples/s, per core (samples/s / worker processes), per CPU-second used,
    SegNext's same figures and the ratios when ``ref`` is given, and the CPUs other processes kept busy."""
    head = ["T", "workers", "clickseg samples/s", "per core", "per CPU-s"]
    if ref is not None:
        head += ["SegNext samples/s", "per core", "per CPU-s", "ratio samples/s", "ratio per CPU-s"]
    head.append("other load (CPUs)")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for (size, workers), c in ours.items():
        cores = max(workers, 1)
        cells = [size, workers, f"{c['samples_per_s']:.1f}", f"{c['samples_per_s'] / cores:.1f}",
                 f"{c['samples_per_cpu_s']:.1f}"]
        load = f"{c['other_cpus']:.1f}"
        if ref is not None:
            r = ref.get((size, workers))
            if r:
                cells += [f"{r['samples_per_s']:.1f}", f"{r['samples_per_s'] / cores:.1f}",
                          f"{r['samples_per_cpu_s']:.1f}", f"{c['samples_per_s'] / r['samples_per_s']:.2f}",
                          f"{c['samples_per_cpu_s'] / r['samples_per_cpu_s']:.2f}"]
                load += f" / {r['other_cpus']:.1f}"
            else:
                cells += ["failed"] + ["-"] * 4
        print("| " + " | ".join(map(str, cells + [load])) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/clickseg-data-bench"), help="data dir (reused)")
    parser.add_argument("--images", type=int, default=200, help="source images")
    parser.add_argument("--image-side", type=parse_side, default=(480, 640), help="side range in px, e.g. 480:640")
    parser.add_argument("--samples-per-shard", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="input sizes T")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader worker counts")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--samples", type=int, default=240, help="timed samples per cell")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches per worker process")
    parser.add_argument("--segnext", help="SegNext checkout whose segnext/ folder holds isegm (the reference)")
    parser.add_argument("--segnext-python", default=sys.executable,
                        help="python with albumentations==1.4.2 and SegNext's data imports")
    args = parser.parse_args()
    set_threads()
    batches = max(1, args.samples // args.batch)

    source, shard_dir = prepare_data(args.work, args.images, args.image_side, args.seed, args.samples_per_shard)
    data = clickseg_config(shard_dir, args.sizes[0], 0).data
    n_images = len(list(source.glob("train/images/*.jpg")))
    print(f"torch {torch.__version__}, OpenCV {cv2.__version__}, {os.cpu_count()} CPU(s), 1 thread per process; "
          f"{n_images} source images of {args.image_side[0]}..{args.image_side[1]} px, batch {args.batch}, "
          f"{batches * args.batch} timed samples per cell")
    shown = {k: v for k, v in dataclasses.asdict(data).items() if k not in ("train", "eval", "num_workers")}
    print("clickseg data defaults:", ", ".join(f"{k} {v}" for k, v in shown.items()), flush=True)
    ours = {}
    for size in args.sizes:
        for workers in args.workers:
            ours[size, workers] = clickseg_speed(shard_dir, size, workers, args.batch, args.warmup, batches)
            speed = ours[size, workers]["samples_per_s"]
            print(f"clickseg T={size} workers={workers}: {speed:.1f} samples/s", flush=True)
    ref = segnext_speeds(args, source, batches) if args.segnext else None
    print()
    if ref is None:
        print("reference not run (give --segnext DIR and --segnext-python PY for SegNext's pipeline)")
    print_table(ours, ref)
    print("per CPU-s: samples per CPU second of the loading process and its workers; other load: CPUs kept busy "
          "by other processes meanwhile" + ("; ratio = clickseg / SegNext" if ref is not None else ""))


if __name__ == "__main__":
    main()
