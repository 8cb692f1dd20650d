"""Record reference outputs of SegNext's own code for tests/test_segnext_exact.py.

Usage (from the repository root, with a checkout of uncbiag/SegNext elsewhere):

    python tests/data/record_segnext.py --segnext /path/to/SegNext/segnext --out tests/data/segnext_ref

For each case it builds SegNext's ``PlainVitModel`` (small sizes, seeded weights), saves
it exactly as SegNext saves checkpoints (``{'state_dict', 'config': model._config}``),
and runs SegNext's evaluation loop (``isegm.inference``: ``Clicker``, ``BasePredictor``,
``get_iou``, threshold 0.49) on seeded images and masks. It records every click, the
IoU after every click, and the probabilities on a strided pixel grid (stride 7; 23 on the
two large images); ``stride/<image>`` holds each image's stride. SegNext is imported by
``bench/_segnext.py`` (with its mmcv stand-in when mmcv is not installed).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

# name -> (input size, embed dim, depth, heads, global_atten_freq, fusion depth, neck dims, head channels)
CASES = {
    "sax2_512": (512, 32, 4, 2, 2, 2, [16, 32, 32, 64], 16),   # 2 x 2 windows of 16 x 16 tokens
    "sax1_448": (448, 32, 3, 2, 3, 1, [16, 16, 32, 32], 16),   # 2 x 2 windows of 14 x 14 tokens
    # the ViT-B 1024 layout: 4 x 4 windows of 16 x 16 tokens; 8 wide, as its position embedding
    # (64 x 64 tokens) dominates the checkpoint's size
    "sax2_1024": (1024, 8, 4, 2, 2, 2, [8, 8, 16, 16], 8),
}
# images: (H, W, stride of the stored probability grid, pixel block size of the random image).
# Odd sizes exercise the float32 click rounding and non-square resizing. The first three are
# smaller than every input size; (480, 854) is a DAVIS frame, and it and (700, 520) are larger
# than the 448 and 512 inputs (and resized unevenly on the two axes for 1024). The large ones
# use a coarser grid and larger blocks to keep the recording small.
IMAGES = [(300, 200, 7, 8), (97, 131, 7, 8), (180, 320, 7, 8), (480, 854, 23, 16), (700, 520, 23, 16)]
CASE_IMAGES = {"sax2_1024": [1, 3, 4]}  # the images each case is run on; default: all
N_CLICKS = 6


def make_model(PlainVitModel, size, dim, depth, heads, freq, fusion_depth, neck, head_ch, seed):
    import torch

    torch.manual_seed(seed)
    model = PlainVitModel(
        backbone_params=dict(img_size=(size, size), patch_size=(16, 16), in_chans=3, embed_dim=dim, depth=depth,
                             global_atten_freq=freq, num_heads=heads, mlp_ratio=4, qkv_bias=True),
        neck_params=dict(in_dim=dim, out_dims=neck),
        head_params=dict(in_channels=neck, in_select_index=[0, 1, 2, 3], dropout_ratio=0.1, num_classes=1,
                         out_channels=head_ch),
        fusion_params=dict(type="self_attention", depth=fusion_depth,
                           params=dict(dim=dim, num_heads=heads, mlp_ratio=4, qkv_bias=True)),
        use_disks=True, norm_radius=5)
    with torch.no_grad():  # random, non-degenerate weights: every parameter moves, prompts matter a lot
        for name, p in sorted(model.named_parameters()):
            p.add_(torch.randn_like(p) * 0.05)
        model.visual_prompts_encoder.proj.weight.mul_(60.0)
        model.head.seg_conv.weight.mul_(12.0)
    return model.eval()


def make_sample(h: int, w: int, seed: int, block: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A blocky random image and a mask (1 object: ellipse + bar, -1 ignore band, 0 background)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(h // block + 1, w // block + 1, 3), dtype=np.uint8)
    image = np.ascontiguousarray(np.repeat(np.repeat(blocks, block, axis=0), block, axis=1)[:h, :w])
    yy, xx = np.mgrid[:h, :w]
    cy, cx = h * rng.uniform(0.3, 0.6), w * rng.uniform(0.3, 0.6)
    gt = np.zeros((h, w), np.int32)
    gt[((yy - cy) / max(3, h // 4)) ** 2 + ((xx - cx) / max(3, w // 5)) ** 2 <= 1] = 1
    gt[int(h * 0.7): int(h * 0.78), int(w * 0.1): int(w * 0.9)] = 1
    gt[:, int(w * 0.85): int(w * 0.88)] = -1
    return image, gt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segnext", required=True, help="the 'segnext' folder of a SegNext checkout (holds isegm/)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "segnext_ref"))
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench._segnext import import_segnext  # the mmcv stand-in and the dataset stub

    import_segnext(args.segnext)
    import torch
    from isegm.inference.clicker import Clicker
    from isegm.inference.predictor import BasePredictor
    from isegm.inference.utils import get_iou
    from isegm.model.is_plainvit_model import PlainVitModel

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for k, (name, spec) in enumerate(CASES.items()):
        model = make_model(PlainVitModel, *spec, seed=k)
        torch.save({"state_dict": model.state_dict(), "config": model._config}, out / f"{name}.pth")
        predictor = BasePredictor(model)
        for j in CASE_IMAGES.get(name, range(len(IMAGES))):
            h, w, stride, block = IMAGES[j]
            image, gt = make_sample(h, w, seed=j, block=block)
            clicker = Clicker(gt_mask=gt)
            pred_mask = np.zeros_like(gt)
            clicks, ious, probs = [], [], []
            with torch.no_grad():
                predictor.set_image(image)
                for _ in range(N_CLICKS):
                    clicker.make_next_click(pred_mask)
                    prob = predictor.predict(clicker)
                    pred_mask = prob > 0.49
                    c = clicker.clicks_list[-1]
                    clicks.append((int(c.coords[0]), int(c.coords[1]), int(bool(c.is_positive))))
                    ious.append(get_iou(gt, pred_mask))
                    probs.append(prob[::stride, ::stride].astype(np.float32))
            key = f"{name}/{j}"
            arrays[f"image/{j}"], arrays[f"gt/{j}"], arrays[f"stride/{j}"] = image, gt, np.int64(stride)
            arrays[f"{key}/clicks"] = np.array(clicks, np.int64)
            arrays[f"{key}/ious"] = np.array(ious, np.float32)
            arrays[f"{key}/probs"] = np.stack(probs)
            print(f"{key}: {h}x{w} clicks {clicks} ious {np.round(ious, 4).tolist()} "
                  f"prob range {float(np.min(probs)):.3f}-{float(np.max(probs)):.3f}")
    np.savez_compressed(out / "reference.npz", **arrays)


if __name__ == "__main__":
    main()
