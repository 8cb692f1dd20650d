"""Training speed (samples/s) of clickseg's training step, next to SegNext's own step in the same run.

A full step on both sides: the recipe's ``multi`` click simulation (n correction passes without
gradient on the step's image features, SegNext's click rule), the final forward, the normalized
focal loss, backward and Adam. clickseg's step is ``clickseg.train``'s (``ClickSimulation`` run by
the model's forward, ``make_optimizer``); SegNext's is its own ``ISTrainer.batch_forward`` and
its optimizer (``isegm.engine.optimizer.get_optimizer``, Adam, one parameter group per tensor) on
its ``PlainVitModel``, imported from your checkout (``--segnext DIR``; see bench/_segnext.py).
Both models hold the same weights (SegNext's key names via ``clickseg.model.segnext_compat``) and
get the same batch; the run first checks that their plain forwards agree within 1e-4. The number
of correction passes is drawn at random by both trainers; here both are forced through the same
cycle 0, 1, 2, 3 (the uniform distribution's mean), so each side does the same work.

Without ``--segnext`` the reference is timm's stock VisionTransformer of the same width and depth
(global attention, no prompts, no decoder, no click simulation).

Rounds alternate between the two sides (``--rounds``), each round one cycle of 4 steps per side
after a warm-up step; the table gives each side's best round.

    python bench/train_speed.py --segnext ~/SegNext                     # ViT-B sax2 at 512, batch 2
    python bench/train_speed.py --segnext ~/SegNext --cases tiny:224 vit_base_sax2:1024 --batch 1
    python bench/train_speed.py --cases nano_p8:64 tiny_p8:64           # no checkout: timm reference
"""
from __future__ import annotations

import argparse
import random
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._segnext import import_segnext, segnext_twin  # noqa: E402
from clickseg.config import ClickConfig, load_config  # noqa: E402
from clickseg.losses import normalized_focal_loss  # noqa: E402
from clickseg.model import ARCHITECTURES, build_segnext  # noqa: E402
from clickseg.simulate import ClickSimulation  # noqa: E402
from clickseg.train import make_optimizer  # noqa: E402

PASS_CYCLE = (0, 1, 2, 3)  # correction passes per step, the same on both sides


class ForcedPasses:
    """A numpy Generator whose next ``integers`` call (the trainer's draw of the number of
    correction passes) returns ``passes``; every other draw comes from ``rng``."""

    def __init__(self, rng: np.random.Generator):
        self.rng, self.passes = rng, None

    def integers(self, *args, **kwargs):
        if self.passes is not None:
            n, self.passes = self.passes, None
            return n
        return self.rng.integers(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.rng, name)


def make_batch(size: int, n: int, clicks_per_side: int = 24, seed: int = 0):
    """Random images, one elliptic object per sample, one positive click at its centre; clicks as
    clickseg lays them out (rows 0..23 positive, 24..47 negative; -1 padding)."""
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.random((n, 3, size, size), dtype=np.float32))
    yy, xx = np.mgrid[:size, :size]
    gt = np.zeros((n, 1, size, size), np.float32)
    clicks = torch.full((n, 2 * clicks_per_side, 3), -1.0)
    for i in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        ry, rx = rng.uniform(0.1, 0.25, 2) * size
        gt[i, 0] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        clicks[i, 0] = torch.tensor([float(int(cy)), float(int(cx)), 1.0])
    return images, torch.from_numpy(gt), clicks


def segnext_points(clicks: torch.Tensor) -> torch.Tensor:
    """clickseg's (y, x, label) rows -> SegNext's (y, x, index) rows (same halves; -1 padding)."""
    points = clicks.clone()
    valid = clicks[..., 2] >= 0
    points[..., 2] = torch.where(valid, torch.zeros_like(clicks[..., 2]), torch.full_like(clicks[..., 2], -1.0))
    return points


class ClicksegStep:
    def __init__(self, arch: str, size: int, batch):
        torch.manual_seed(0)
        self.model = build_segnext(arch, size).train()
        self.cfg = load_config(None, ["clicks.mode=multi"])
        self.click_cfg = ClickConfig(mode="multi", max_correction_clicks=3)
        self.optimizer = make_optimizer(self.model, self.cfg)
        self.rng = ForcedPasses(np.random.default_rng(0))
        self.images, self.gt, self.clicks = batch

    def __call__(self, passes: int) -> None:
        self.rng.passes = passes
        prompts = ClickSimulation(self.gt, self.click_cfg, self.rng)
        logits = self.model(self.images, self.clicks, torch.zeros_like(self.gt), simulate=prompts)
        normalized_focal_loss(logits.float(), self.gt).mean().backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


class SegNextStep:
    """SegNext's ``ISTrainer`` step: ``batch_forward`` called on a stand-in trainer holding what it
    reads (net, device, loss config, the click budget), then zero_grad, backward, step as in its
    training loop."""

    def __init__(self, ours: ClicksegStep, size: int, batch):
        from isegm.engine import trainer
        from isegm.engine.optimizer import get_optimizer
        from isegm.model.losses import NormalizedFocalLossSigmoid

        self.net = segnext_twin(ours.model).train()
        self.optimizer = get_optimizer(self.net, "adam", dict(lr=5e-5, betas=(0.9, 0.999), eps=1e-8))
        loss_cfg = {"instance_loss": NormalizedFocalLossSigmoid(alpha=0.5, gamma=2), "instance_loss_weight": 1.0}
        self.trainer = types.SimpleNamespace(
            net=self.net, device=torch.device("cpu"), max_num_next_clicks=3, prev_mask_drop_prob=0.0,
            train_metrics=[], val_metrics=[], is_master=False, loss_cfg=_AttrDict(loss_cfg), val_loss_cfg=None)
        self.trainer.add_loss = types.MethodType(trainer.ISTrainer.add_loss, self.trainer)
        self.batch_forward = trainer.ISTrainer.batch_forward
        self.module = trainer
        images, gt, clicks = batch
        self.batch = {"images": images, "instances": gt, "points": segnext_points(clicks)}

    def __call__(self, passes: int) -> None:
        # SegNext draws the pass count with random.randint(0, max_num_next_clicks): seed a
        # generator whose draw is the forced count.
        self.module.random = _FixedRandint(passes)
        batch = {k: v.clone() for k, v in self.batch.items()}
        loss, *_ = self.batch_forward(self.trainer, batch)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()


class _AttrDict(dict):
    __getattr__ = dict.get


class _FixedRandint:
    """Stands in for the ``random`` module in SegNext's trainer: ``randint`` returns ``n``."""

    def __init__(self, n: int):
        self.n = n

    def randint(self, a: int, b: int) -> int:
        return self.n

    def __getattr__(self, name):
        return getattr(random, name)


def check_agreement(ours: ClicksegStep, ref: SegNextStep) -> float:
    """Largest difference of the two models' logits (eval mode, the batch's clicks)."""
    images, gt, clicks = ours.images, ours.gt, ours.clicks
    ours.model.eval(), ref.net.eval()
    with torch.no_grad():
        a = ours.model(images, clicks, torch.zeros_like(gt))
        prompts = {"points": segnext_points(clicks), "prev_mask": torch.zeros_like(gt)}
        feats = ref.net.get_image_feats(images)
        b = ref.net(images.shape, feats, ref.net.get_prompt_feats(images.shape, prompts))["instances"]
    ours.model.train(), ref.net.train()
    return float((a - b).abs().max())


class TimmStep:
    def __init__(self, arch: str, size: int, batch):
        a = ARCHITECTURES[arch]
        self.model = VisionTransformer(img_size=size, patch_size=a.patch_size, embed_dim=a.embed_dim, depth=a.depth,
                                       num_heads=a.num_heads, mlp_ratio=a.mlp_ratio, num_classes=0,
                                       global_pool="avg").train()
        self.optimizer = make_optimizer(self.model, load_config(None, []))
        self.images = batch[0]

    def __call__(self, passes: int) -> None:
        self.model(self.images).pow(2).mean().backward()
        self.optimizer.step()
        self.optimizer.zero_grad()


def time_cycle(step) -> float:
    t0 = time.perf_counter()
    for passes in PASS_CYCLE:
        step(passes)
    return time.perf_counter() - t0


def bench(arch: str, size: int, n: int, rounds: int, segnext: bool) -> dict:
    batch = make_batch(size, n)
    ours = ClicksegStep(arch, size, batch)
    ref = SegNextStep(ours, size, batch) if segnext else TimmStep(arch, size, batch)
    agreement = check_agreement(ours, ref) if segnext else None
    ours(1), ref(1)  # warm-up
    best = {"ours": float("inf"), "ref": float("inf")}
    for _ in range(rounds):
        best["ours"] = min(best["ours"], time_cycle(ours))
        best["ref"] = min(best["ref"], time_cycle(ref))
    steps = len(PASS_CYCLE)
    return {"ours": n * steps / best["ours"], "ref": n * steps / best["ref"], "agreement": agreement,
            "ours_s": best["ours"] / steps, "ref_s": best["ref"] / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["vit_base_sax2:512"], help="arch:input_size")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--segnext", help="a SegNext checkout (its root or its segnext/ folder)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.segnext:
        import_segnext(args.segnext)
    ref_name = "SegNext" if args.segnext else "timm ViT (no prompts)"
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, CPU; steps with "
          f"{'/'.join(map(str, PASS_CYCLE))} correction passes, best of {args.rounds} alternated rounds")
    print(f"| model | input | clickseg samples/s | {ref_name} samples/s | clickseg s/step | {ref_name} s/step "
          f"| time ratio | max logit difference |")
    print("|---|---|---|---|---|---|---|---|")
    for case in args.cases:
        arch, size = case.split(":")
        r = bench(arch, int(size), args.batch, args.rounds, bool(args.segnext))
        diff = "-" if r["agreement"] is None else f"{r['agreement']:.1e}"
        print(f"| {arch} | {size} | {r['ours']:.3f} | {r['ref']:.3f} | {r['ours_s']:.2f} | {r['ref_s']:.2f} "
              f"| {r['ours_s'] / r['ref_s']:.2f} | {diff} |", flush=True)


if __name__ == "__main__":
    main()
