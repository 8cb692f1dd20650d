"""Interactive latency of the Predictor on one image, next to its references.

For each (architecture, input size): the first click (image features + prompt path),
each later click (prompt path only, features reused), and K prompts decoded as one
batch (``predict_batch``) against the same K prompts as K single calls, with the ratio.

    python bench/predictor_latency.py                                  # tiny and ViT-B at 448, 512, 1024
    python bench/predictor_latency.py --cases tiny:448 --k 8 --repeats 3
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from clickseg.model import build_segnext
from clickseg.predictor import Predictor

DEFAULT_CASES = ["tiny:448", "tiny:512", "tiny:1024",
                 "vit_base_sax2:448", "vit_base_sax2:512", "vit_base_sax2:1024"]


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench(arch: str, size: int, k: int, repeats: int, image_hw=(480, 854)) -> dict[str, float]:
    torch.manual_seed(0)
    predictor = Predictor(build_segnext(arch, size).eval())
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*image_hw, 3), dtype=np.uint8)
    clicks = [(int(rng.integers(image_hw[0])), int(rng.integers(image_hw[1])), bool(i % 2 == 0)) for i in range(5)]

    def first():
        predictor.set_image(image)
        predictor.predict(clicks[:1])

    first()  # warm-up (allocations, kernel choice)
    t_first = _best(first, repeats)
    later = []
    for n in range(2, len(clicks) + 1):
        later.append(_best(lambda: predictor.predict(clicks[:n]), repeats))
    lists = [clicks[: 1 + i % len(clicks)] for i in range(k)]
    prev = np.zeros((k, *image_hw), np.float32)
    t_batch = _best(lambda: predictor.predict_batch(lists, prev), repeats)
    t_single = _best(lambda: [predictor.predict_batch([c], prev[:1]) for c in lists], repeats)
    return {"first": t_first, "later": float(np.mean(later)), "batch": t_batch, "single": t_single}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=DEFAULT_CASES, help="arch:input_size")
    ap.add_argument("--k", type=int, default=8, help="prompts in the batched call")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many timings")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"image 480x854, torch threads {torch.get_num_threads()}, K = {args.k}; seconds (best of {args.repeats})")
    head = f"{'arch':<15}{'T':>6}{'first click':>13}{'later click':>13}{'batch of K':>12}" \
           f"{'K singles':>11}{'singles/batch':>15}"
    print(head)
    print("-" * len(head))
    for case in args.cases:
        arch, size = case.split(":")
        r = bench(arch, int(size), args.k, args.repeats)
        print(f"{arch:<15}{int(size):>6}{r['first']:>13.3f}{r['later']:>13.3f}{r['batch']:>12.3f}"
              f"{r['single']:>11.3f}{r['single'] / r['batch']:>15.2f}", flush=True)


if __name__ == "__main__":
    main()
