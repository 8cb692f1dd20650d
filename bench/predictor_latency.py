"""Interactive latency of the Predictor on one image, next to its references.

For each (architecture, input size): the first click (image features + prompt path),
each later click (prompt path only, features reused), and K prompts decoded as one
batch (``predict_batch``) against the same K prompts as K single calls, with the ratio.

    python bench/predictor_latency.py                                  # tiny and ViT-B at 448, 512, 1024
    python bench/predictor_latency.py --cases tiny:448 --k 8 --repeats 3
    python bench/predictor_latency.py --segnext ~/SegNext --cases vit_base_sax2:512 vit_base_sax2:1024

With ``--segnext DIR`` (a SegNext checkout; see bench/_segnext.py) it times SegNext's own
``BasePredictor`` instead, side by side: the same weights, image and clicks, the two predictors
alternated in each repeat; ``set_image`` and a later click (the mean of clicks 2..5, each its
best of the repeats); the largest difference of their probabilities is printed with each row.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

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


def bench_segnext(arch: str, size: int, repeats: int, image_hw=(480, 854)) -> dict[str, float]:
    """Seconds of set_image and of a later click for clickseg's Predictor and SegNext's BasePredictor."""
    from isegm.inference.clicker import Click, Clicker
    from isegm.inference.predictor import BasePredictor

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench._segnext import segnext_twin

    torch.manual_seed(0)
    model = build_segnext(arch, size).eval()
    ours, ref = Predictor(model), BasePredictor(segnext_twin(model).eval())
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*image_hw, 3), dtype=np.uint8)
    clicks = [(int(rng.integers(image_hw[0])), int(rng.integers(image_hw[1])), bool(i % 2 == 0)) for i in range(5)]

    def ref_click(n: int) -> np.ndarray:
        clicker = Clicker()
        for y, x, positive in clicks[:n]:
            clicker.add_click(Click(is_positive=positive, coords=(y, x)))
        return ref.predict(clicker)

    times = {k: [] for k in ("ours_image", "ref_image", "ours_click", "ref_click")}
    diff = 0.0
    with torch.no_grad():
        for r in range(repeats + 1):  # the first round warms up
            run = {}
            for side, predictor, click in (("ours", ours, lambda n: ours.predict(clicks[:n])), ("ref", ref, ref_click)):
                t0 = time.perf_counter()
                predictor.set_image(image)
                t1 = time.perf_counter()
                probs = [click(1)]
                later = []
                for n in range(2, len(clicks) + 1):
                    t2 = time.perf_counter()
                    probs.append(click(n))
                    later.append(time.perf_counter() - t2)
                run[side] = probs
                if r:
                    times[f"{side}_image"].append(t1 - t0)
                    times[f"{side}_click"].append(float(np.mean(later)))
            diff = max(diff, max(float(np.abs(a - b).max()) for a, b in zip(run["ours"], run["ref"])))
    out = {k: min(v) for k, v in times.items()}
    out["diff"] = diff
    return out


def main_segnext(args) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench._segnext import import_segnext

    import_segnext(args.segnext)
    print(f"image 480x854, torch threads {torch.get_num_threads()}; seconds, best of {args.repeats} alternated rounds")
    print("| model | T | set_image clickseg | set_image SegNext | ratio | click clickseg | click SegNext | ratio "
          "| max prob difference |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case in args.cases:
        arch, size = case.split(":")
        r = bench_segnext(arch, int(size), args.repeats)
        print(f"| {arch} | {size} | {r['ours_image']:.3f} | {r['ref_image']:.3f} | {r['ours_image'] / r['ref_image']:.2f} "
              f"| {r['ours_click']:.3f} | {r['ref_click']:.3f} | {r['ours_click'] / r['ref_click']:.2f} "
              f"| {r['diff']:.1e} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=DEFAULT_CASES, help="arch:input_size")
    ap.add_argument("--k", type=int, default=8, help="prompts in the batched call")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many timings")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--segnext", help="a SegNext checkout: time its BasePredictor side by side")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.segnext:
        return main_segnext(args)
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
