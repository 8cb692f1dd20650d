"""Named SegNext sizes and the token geometry they imply: plain data with no torch import, so
configs validate in milliseconds (``launch.py sweep`` checks every grid point before submitting)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

# SegNext splits the token grid into windows of about 224 px (14 tokens of 16 px) a side.
WINDOW_TOKENS = 14


def is_global_block(index: int, depth: int, global_atten_freq: int) -> bool:
    """Whether 1-based block ``index`` attends globally (else within windows)."""
    if global_atten_freq <= 1:
        return True
    return index % global_atten_freq == 0 or index == depth


def _splits(grid: int) -> bool:
    return grid >= WINDOW_TOKENS and grid % (grid // WINDOW_TOKENS) == 0


def window_layout(input_size: int, patch_size: int) -> tuple[int, int]:
    """(windows per side, window side in tokens) of SegNext's window attention at ``input_size``.

    Raises ValueError when the token grid cannot be split into equal windows of about
    ``WINDOW_TOKENS`` tokens; the message names the nearest sizes that can.
    """
    grid = input_size // patch_size
    if not _splits(grid):
        below = next((g for g in range(grid - 1, WINDOW_TOKENS - 1, -1) if _splits(g)), None)
        above = next(g for g in itertools.count(max(grid + 1, WINDOW_TOKENS)) if _splits(g))
        near = " or ".join(str(g * patch_size) for g in (below, above) if g is not None)
        raise ValueError(
            f"input size {input_size} gives a {grid}x{grid} token grid ({patch_size}-pixel patches) that cannot be "
            f"split into equal windows of about {WINDOW_TOKENS} tokens (need grid >= {WINDOW_TOKENS} and divisible "
            f"by grid // {WINDOW_TOKENS}); the nearest sizes that can: {near}")
    per_side = grid // WINDOW_TOKENS
    return per_side, grid // per_side


@dataclass(frozen=True)
class Architecture:
    embed_dim: int
    depth: int
    num_heads: int
    global_atten_freq: int
    fusion_depth: int
    neck_dims: tuple[int, int, int, int]
    head_channels: int
    mlp_ratio: float = 4.0
    norm_radius: int = 5
    patch_size: int = 16
    """Side of an image patch (one token) in model pixels; SegNext's released models use 16."""

    @property
    def uses_windows(self) -> bool:
        return not all(is_global_block(i, self.depth, self.global_atten_freq) for i in range(1, self.depth + 1))


ARCHITECTURES: dict[str, Architecture] = {
    # SegNext's released models (ViT-B MAE backbone, 2 or 1 fusion blocks).
    "vit_base_sax2": Architecture(768, 12, 12, 3, 2, (128, 256, 512, 1024), 256),
    "vit_base_sax1": Architecture(768, 12, 12, 3, 1, (128, 256, 512, 1024), 256),
    "vit_large_sax2": Architecture(1024, 24, 16, 6, 2, (128, 256, 512, 1024), 256),
    # Small enough to train on a laptop CPU; same code paths (windows, fusion, neck, head).
    "tiny": Architecture(128, 4, 4, 2, 1, (32, 64, 128, 128), 64),
    # The same with global attention in every block: valid at any multiple of 16 (e.g. 128, 160).
    "tiny_global": Architecture(128, 4, 4, 1, 1, (32, 64, 128, 128), 64),
    # The same with 8-pixel patches, the demo's model: at 64 px it has tiny_global's 8 x 8 tokens
    # and costs the same, but learns faster from scratch (each token summarises 8 x 8 x 3 values,
    # not 16 x 16 x 3). Not exportable to SegNext, whose checkpoints are checked for 16.
    "tiny_p8": Architecture(128, 4, 4, 1, 1, (32, 64, 128, 128), 64, patch_size=8),
    # tiny_p8 slimmed for the CPU demo (3/4 the width, MLP ratio 2, half the neck and head channels):
    # 0.56M parameters against 1.35M, about 2x the training speed and about the same mIoU per sample.
    "nano_p8": Architecture(96, 4, 4, 1, 1, (16, 32, 64, 64), 32, mlp_ratio=2, patch_size=8),
}
