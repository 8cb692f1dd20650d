"""What only a GPU shows, in one run: training speed at 512 and 1024 px (fp32, bf16, bf16 +
torch.compile) with the click simulation, peak memory, the attention kernel in use, the latency of
a click at 1024, and the agreement of CUDA's outputs with the CPU's.

    bash bench/gpu_check.sh                      # ViT-B sax2 (SegNext's COCO+LVIS model)
    python bench/gpu_check.py --arch tiny_p8 --sizes 64 --device cpu --steps 2   # a dry run anywhere

Training steps are the project's (``clickseg.train``'s pieces: the recipe's ``multi`` click
simulation, the normalized focal loss, Adam) on random images with a random object per sample.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from clickseg.config import load_config
from clickseg.losses import normalized_focal_loss
from clickseg.model import ARCHITECTURES, build_segnext
from clickseg.predictor import Predictor
from clickseg.simulate import ClickSimulation
from clickseg.train import make_optimizer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batch(size: int, n: int, device: torch.device, rng: np.random.Generator):
    """Random images, one elliptic object each, and its initial click (the recipe's row layout)."""
    images = torch.rand(n, 3, size, size, device=device)
    yy, xx = np.mgrid[:size, :size]
    gt = np.zeros((n, 1, size, size), np.float32)
    clicks = torch.full((n, 48, 3), -1.0)
    for i in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        ry, rx = rng.uniform(0.1, 0.25, 2) * size
        gt[i, 0] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        clicks[i, 0] = torch.tensor([cy, cx, 1.0])
    return images, torch.from_numpy(gt).to(device), clicks.to(device)


def train_speed(arch: str, size: int, n: int, steps: int, device: torch.device, precision: str,
                compiled: bool) -> tuple[float, float]:
    """(samples/s, peak GiB) of full training steps."""
    torch.manual_seed(0)
    cfg = load_config(None, ["clicks.mode=multi"])
    module = build_segnext(arch, size).to(device).train()
    if compiled:  # as train.compile does: the parts in place, the click simulation eager
        for part in (module.image_encoder, module.prompt_encoder, module.decoder):
            part.compile()
    model = module
    opt = make_optimizer(module, cfg)
    rng = np.random.default_rng(0)
    data = batch(size, n, device, rng)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step():
        images, gt, clicks = data
        with autocast:
            prompts = ClickSimulation(gt, cfg.clicks, rng)
            loss = normalized_focal_loss(model(images, clicks, torch.zeros_like(gt), simulate=prompts).float(), gt).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):  # warm-up (and compilation)
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return n * steps / seconds, peak


def attention_backend(device: torch.device, dtype: torch.dtype, head_dim: int) -> str:
    """The first scaled-dot-product attention kernel that runs for the model's head size."""
    if device.type != "cuda":
        return "cpu (math/flash-cpu)"
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.rand(1, 12, 256, head_dim, device=device, dtype=dtype)
    for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                    SDPBackend.MATH):
        try:
            with sdpa_kernel(backend):
                torch.nn.functional.scaled_dot_product_attention(q, q, q)
            return backend.name
        except RuntimeError:
            continue
    return "none"


def click_latency(arch: str, size: int, device: torch.device, repeats: int = 10) -> tuple[float, float]:
    """(set_image seconds, median seconds of a later click) of the Predictor."""
    torch.manual_seed(0)
    predictor = Predictor(build_segnext(arch, size).eval(), device)
    image = (np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8)
    predictor.set_image(image)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    predictor.set_image(image)
    sync(device)
    encode = time.perf_counter() - t0
    clicks = [(size // 2, size // 2, True)]
    predictor.predict(clicks)
    times = []
    for k in range(repeats):
        clicks.append((size // 3 + k, size // 3, False))
        sync(device)
        t0 = time.perf_counter()
        predictor.predict(clicks)
        sync(device)
        times.append(time.perf_counter() - t0)
    return encode, statistics.median(times)


def agreement(arch: str, size: int, device: torch.device) -> tuple[float, float]:
    """(max |probability difference|, IoU of the two masks) of one prediction on ``device`` vs CPU."""
    torch.manual_seed(0)
    model = build_segnext(arch, size).eval()
    images, _, clicks = batch(size, 1, torch.device("cpu"), np.random.default_rng(1))
    prev = torch.zeros(1, 1, size, size)
    with torch.no_grad():
        cpu = torch.sigmoid(model(images, clicks, prev))
        other = torch.sigmoid(model.to(device)(images.to(device), clicks.to(device), prev.to(device))).cpu()
    a, b = cpu > 0.49, other > 0.49
    iou = float((a & b).sum() / max(1, int((a | b).sum())))
    return float((cpu - other).abs().max()), iou


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="vit_base_sax2")
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--batch", type=int, nargs="+", default=[8, 2], help="per size")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here (use --device cpu for a dry run)")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, {args.arch}")
    a = ARCHITECTURES[args.arch]
    head_dim = a.embed_dim // a.num_heads
    print(f"attention kernel (bf16, head dim {head_dim}): {attention_backend(device, torch.bfloat16, head_dim)}")
    print("\n| input | batch | precision | samples/s | peak GiB |\n|---|---|---|---|---|")
    for size, n in zip(args.sizes, args.batch * len(args.sizes)):
        for precision, compiled in (("fp32", False), ("bf16", False), ("bf16", True)):
            label = precision + (" + compile" if compiled else "")
            try:
                speed, peak = train_speed(args.arch, size, n, args.steps, device, precision, compiled)
                print(f"| {size} | {n} | {label} | {speed:.2f} | {peak:.2f} |", flush=True)
            except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
                print(f"| {size} | {n} | {label} | failed: {str(e).splitlines()[0][:80]} | |", flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    size = max(args.sizes)
    encode, click = click_latency(args.arch, size, device)
    print(f"\nclick latency at {size}: set_image {encode * 1000:.1f} ms, a later click {click * 1000:.1f} ms (median)")
    if device.type != "cpu":
        diff, iou = agreement(args.arch, min(args.sizes), device)
        print(f"{device.type} vs CPU at {min(args.sizes)} px: max |dp| {diff:.2e}, mask IoU {iou:.6f}")


if __name__ == "__main__":
    main()
