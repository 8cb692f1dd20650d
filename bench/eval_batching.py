"""Batched evaluation (draws x variants x views of one image as batches against features
computed once per view) against two loops, at random clicks with c draws and K variants.

"batched" uses ``max_batch`` 0 (8 prompts per decode on CPU, 64 on GPU); "one batch" decodes
all c x K prompts of a click in one call. References, in the same run and on the same instances:
- "singles": the same evaluator with ``max_batch=1`` (one prompt per decode, features
  still shared): the IoUs must be the same, only the batching differs;
- "per-draw": one evaluation per draw (c = 1, K variants), the image encoded again for each
  draw, as running a one-draw evaluator c times does.

    python bench/eval_batching.py                                   # tiny and ViT-B at 448, c=5, K=8
    python bench/eval_batching.py --cases tiny:224 --images 4 --clicks 5
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from clickseg.config import EvalConfig
from clickseg.eval.protocols import evaluate_image_instance
from clickseg.model import build_segnext
from clickseg.predictor import Predictor


def samples(n: int, hw=(240, 320)):
    rng = np.random.default_rng(0)
    out = []
    yy, xx = np.mgrid[:hw[0], :hw[1]]
    for _ in range(n):
        image = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
        cy, cx, r = rng.uniform(60, 180), rng.uniform(80, 240), rng.uniform(25, 60)
        gt = (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).astype(np.int64)
        out.append((image, gt))
    return out


def run(predictor, data, protocol: EvalConfig, per_draw: bool = False) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    results = []
    for i, (image, gt) in enumerate(data):
        if per_draw:
            one = replace(protocol, draws=1)
            results.append(np.concatenate([evaluate_image_instance(predictor, image, gt, one, "bench", i * 1000 + d)
                                           for d in range(protocol.draws)]))
        else:
            results.append(evaluate_image_instance(predictor, image, gt, protocol, "bench", i))
    return time.perf_counter() - t0, np.stack(results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["tiny:448", "vit_base_sax2:448"], help="arch:input_size")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--clicks", type=int, default=3)
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--flips", default="none")
    args = ap.parse_args()
    data = samples(args.images)
    protocol = EvalConfig(protocol="random", n_clicks=args.clicks, draws=args.draws, scaling=args.k, flips=args.flips)
    print(f"{args.images} images 240x320, random clicks, c={args.draws}, K={args.k}, flips {args.flips}, "
          f"{args.clicks} clicks; torch threads {torch.get_num_threads()}; seconds per image")
    head = f"{'arch':<15}{'T':>6}{'batched':>10}{'one batch':>11}{'singles':>10}{'per-draw':>10}" \
           f"{'singles/batched':>17}{'per-draw/batched':>18}{'max |dIoU| singles':>20}"
    print(head)
    print("-" * len(head))
    for case in args.cases:
        arch, size = case.split(":")
        torch.manual_seed(0)
        predictor = Predictor(build_segnext(arch, int(size)).eval())
        run(predictor, data[:1], replace(protocol, n_clicks=1))  # warm-up
        t_batch, ious = run(predictor, data, protocol)
        t_one, _ = run(predictor, data, replace(protocol, max_batch=args.draws * args.k))
        t_single, ious_single = run(predictor, data, replace(protocol, max_batch=1))
        t_draw, _ = run(predictor, data, protocol, per_draw=True)
        n = len(data)
        print(f"{arch:<15}{int(size):>6}{t_batch / n:>10.2f}{t_one / n:>11.2f}{t_single / n:>10.2f}{t_draw / n:>10.2f}"
              f"{t_single / t_batch:>17.2f}{t_draw / t_batch:>18.2f}"
              f"{float(np.abs(ious - ious_single).max()):>20.2e}", flush=True)


if __name__ == "__main__":
    main()
