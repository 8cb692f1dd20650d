"""Shard conversion and training-pipeline speed, and conversion memory at 1x and 10x dataset size.

Each conversion runs in its own process with one worker, so "images/s" is per process and
"peak MB" is that process's peak resident memory. The reference in the same run is the bare
cost of reading and decoding the same source images (what no converter can avoid); memory
is flat when the 10x row's peak equals the 1x row's (for cocolvis-build, plus the json inputs,
which the listing holds in memory and which grow with the dataset). The training pipeline (shards -> SegNext's
recipe: whole-image augmentation -> clicks) is timed on one core, from the tar files and from the decoded
cache (``data.cache_mb``), next to plain shard decoding.

    python bench/shard_convert.py                 # 40 and 400 images of 384 px
    python bench/shard_convert.py --images 100 --size 640
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# VmHWM is this process's own peak (ru_maxrss would carry the launching process's over exec).
PEAK = r"""
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

CONVERT = PEAK + r"""
import json, sys, time
sys.path.insert(0, {repo!r})
import cv2
cv2.setNumThreads(1)
from shards.writer import convert
from shards.cocolvis import CocoLvisConverter
from shards.cocolvis_build import CocoLvisBuildConverter
kind, src, out = sys.argv[1:4]
if kind == "cocolvis":
    conv = CocoLvisConverter(root=src, split="train")
else:
    p = json.loads(open(src + "/paths.json").read())
    conv = CocoLvisBuildConverter(lvis_json=p["lvis"], panoptic_json=p["panoptic_json"],
                                  panoptic_dir=p["panoptic_dir"], images=p["images"])
t0 = time.perf_counter()
m = convert(conv, out, workers=0, samples_per_shard=50, progress=False, max_skip_fraction=1.0)
dt = time.perf_counter() - t0
print(json.dumps({{"images": m["totals"]["images"], "seconds": dt,
                   "peak_mb": peak_mb()}}))
"""

DECODE = PEAK + r"""
import json, sys, time
import cv2
import numpy as np
from pathlib import Path
cv2.setNumThreads(1)
files = sorted(Path(sys.argv[1]).rglob("*.jpg"))
t0 = time.perf_counter()
for f in files:
    cv2.imdecode(np.fromfile(f, np.uint8), cv2.IMREAD_COLOR)
print(json.dumps({"images": len(files), "seconds": time.perf_counter() - t0,
                  "peak_mb": peak_mb()}))
"""


def _run(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def lvis_panoptic_inputs(root: Path, n: int, size: int, seed: int = 0) -> None:
    """Random scenes as LVIS polygons (outer contours) + a panoptic PNG with half of the objects
    as COCO things (near-duplicates of LVIS) and the stuff regions."""
    import cv2
    import numpy as np

    from shards.synthetic import LvisPanopticImage, make_scene, write_lvis_panoptic

    specs = []
    for i in range(n):
        rng = np.random.default_rng([seed, 9, i])
        scene = make_scene(rng, size, size, int(rng.integers(2, 7)), with_stuff=True)
        lvis, panoptic = [], []
        for k, (mask, stuff) in enumerate(zip(scene.masks, scene.is_stuff)):
            if stuff:
                panoptic.append((mask, False, False))
                continue
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            polys = [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
            if polys:
                lvis.append(polys)
            if k % 2:
                panoptic.append((mask, True, False))
        specs.append(LvisPanopticImage(f"{i:012d}", size, size, lvis, panoptic))
    paths = write_lvis_panoptic(root, specs, seed=seed)
    (root / "paths.json").write_text(json.dumps({k: str(v) for k, v in paths.items()}))


def pipeline_speed(shard_dir: Path, samples: int, size: int, images: int) -> tuple[float, float, float]:
    """(training-pipeline samples/s, the same with the decoded cache warm, plain decode samples/s)
    on one core. The cached stream is timed after ``images`` items, by when it has read every shard."""
    import torch

    import shards
    from clickseg.config import load_config
    from clickseg.data.stream import TrainStream

    torch.set_num_threads(1)
    speeds = []
    for cache_mb, warm in ((0, 1), (4096, images)):
        cfg = load_config(None, [f"data.train={shard_dir}", f"model.input_size={size}", "model.arch=tiny",
                                 "clicks.mode=multi", "data.shuffle_buffer=16", f"data.cache_mb={cache_mb}"])
        stream = iter(TrainStream(cfg))
        for _ in range(warm):
            next(stream)
        t0 = time.perf_counter()
        for _ in range(samples):
            next(stream)
        speeds.append(samples / (time.perf_counter() - t0))
    t0 = time.perf_counter()
    n = sum(1 for _ in shards.open_dataset(shard_dir))
    return speeds[0], speeds[1], n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=40, help="images at 1x (10x is ten times that)")
    parser.add_argument("--size", type=int, default=384, help="image side in pixels")
    parser.add_argument("--input-size", type=int, default=448, help="training input size T for the pipeline")
    args = parser.parse_args()

    from shards.synthetic import write_cocolvis

    rows, generated = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for scale in (1, 10):
            n = args.images * scale
            src = tmp / f"cocolvis-{scale}x"
            t0 = time.perf_counter()
            write_cocolvis(src, n, size=args.size, seed=0, split="train")
            generated.append((n, time.perf_counter() - t0))
            lp = tmp / f"lvis-{scale}x"
            lvis_panoptic_inputs(lp, n, args.size)
            for kind, source in (("cocolvis", src), ("cocolvis-build", lp)):
                ref = _run(DECODE, str(source))  # the same converter's own source images
                r = _run(CONVERT.format(repo=str(REPO)), kind, str(source), str(tmp / f"out-{kind}-{scale}x"))
                rows.append((kind, f"{scale}x", n, r["images"] / r["seconds"], r["peak_mb"],
                             ref["images"] / ref["seconds"], ref["peak_mb"]))
        pipeline, cached, decode = pipeline_speed(tmp / "out-cocolvis-10x", 200, args.input_size, args.images * 10)

    print(f"conversion, one process, {args.size} px images (reference: read + decode the source JPEGs)")
    print(f"{'converter':<16} {'size':>4} {'images':>6} {'img/s':>8} {'peak MB':>8} {'ref img/s':>10} {'ref MB':>7}")
    for kind, scale, n, speed, mb, ref_speed, ref_mb in rows:
        print(f"{kind:<16} {scale:>4} {n:>6} {speed:>8.1f} {mb:>8.0f} {ref_speed:>10.1f} {ref_mb:>7.0f}")
    for kind in ("cocolvis", "cocolvis-build"):
        one, ten = (r[4] for r in rows if r[0] == kind)
        print(f"{kind}: peak memory 10x / 1x = {ten / one:.2f}")
    n, seconds = generated[-1]
    print(f"built-in data generator (cocolvis layout, {args.size} px): {n / seconds:.1f} images/s")
    print(f"training pipeline (T {args.input_size}, multi clicks), one core: {pipeline:.1f} samples/s; "
          f"with data.cache_mb (decoded once): {cached:.1f} samples/s; plain shard decoding: {decode:.1f} samples/s")


if __name__ == "__main__":
    main()
