"""Training speed (samples/s) of SegNext sizes on this machine, next to a reference.

For each (architecture, input size) it times full training steps (forward,
normalized focal loss, backward, the configured optimizer: Adam by default) on random data, and the same for
timm's stock VisionTransformer of the same width/depth at the same input size
(global attention, no prompt/decoder): the ratio shows what SegNext's window
attention, prompt encoder and decoder add or save.

    python bench/train_speed.py                       # nano_p8@64 ... vit_base_sax2@512
    python bench/train_speed.py --cases vit_base_sax2:1024 --batch 1 --steps 2
"""
from __future__ import annotations

import argparse
import time

import torch
from timm.models.vision_transformer import VisionTransformer

from clickseg.config import load_config
from clickseg.losses import normalized_focal_loss
from clickseg.model import ARCHITECTURES, build_segnext
from clickseg.train import make_optimizer


def _time(step, steps: int) -> float:
    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def bench(arch: str, size: int, batch: int, steps: int) -> tuple[float, float]:
    torch.manual_seed(0)
    model = build_segnext(arch, size).train()
    cfg = load_config(None, ["train.lr=1e-4"])
    opt = make_optimizer(model, cfg)  # as training makes it (fused where torch has it)
    images = torch.rand(batch, 3, size, size)
    gt = (torch.rand(batch, 1, size, size) > 0.5).float()
    clicks = torch.tensor([[[size // 2, size // 2, 1], [size // 4, size // 4, 0]]] * batch, dtype=torch.float32)
    prev = torch.zeros(batch, 1, size, size)

    def segnext_step():
        loss = normalized_focal_loss(model(images, clicks, prev), gt).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()

    a = ARCHITECTURES[arch]
    ref = VisionTransformer(img_size=size, patch_size=a.patch_size, embed_dim=a.embed_dim, depth=a.depth,
                            num_heads=a.num_heads, mlp_ratio=a.mlp_ratio, num_classes=0, global_pool="avg").train()
    ref_opt = make_optimizer(ref, cfg)

    def vit_step():
        ref(images).pow(2).mean().backward()
        ref_opt.step()
        ref_opt.zero_grad()

    return batch / _time(segnext_step, steps), batch / _time(vit_step, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+",
                        default=["nano_p8:64", "tiny_p8:64", "tiny_global:128", "tiny:224", "vit_base_sax2:512"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, CPU")
    print(f"| model | input | SegNext samples/s | timm ViT (same size) samples/s | ratio |")
    print("|---|---|---|---|---|")
    for case in args.cases:
        arch, size = case.split(":")
        ours, ref = bench(arch, int(size), args.batch, args.steps)
        print(f"| {arch} | {size} | {ours:.2f} | {ref:.2f} | {ours / ref:.2f} |", flush=True)


if __name__ == "__main__":
    main()
