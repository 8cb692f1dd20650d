"""Dense prompt encoding: previous mask + click disks -> patch tokens."""
from __future__ import annotations

import torch
from torch import nn


def disk_offsets(radius: int) -> torch.Tensor:
    """Integer offsets (dy, dx) with dy^2 + dx^2 <= radius^2 (81 of them for radius 5)."""
    r = torch.arange(-radius, radius + 1)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    keep = dy * dy + dx * dx <= radius * radius
    return torch.stack([dy[keep], dx[keep]], dim=1)


def click_maps(clicks: torch.Tensor, size: int, radius: int) -> torch.Tensor:
    """Rasterise clicks into positive and negative disk maps.

    Args:
        clicks: (B, P, 3) float or int tensor of (y, x, label) in model pixels; label 1
            positive, 0 negative, -1 padding. Coordinates must already be integers.
        size: side T of the square maps.
    Returns:
        (B, 2, T, T) float32 maps: channel 0 positive disks, channel 1 negative disks.
    """
    b, p, _ = clicks.shape
    out = torch.zeros(b * 2 * size * size, device=clicks.device)
    if p == 0:
        return out.view(b, 2, size, size)
    offsets = disk_offsets(radius).to(clicks.device)
    yx = clicks[..., :2].round().long()
    label = clicks[..., 2].round().long()
    pts = yx[:, :, None, :] + offsets[None, None]  # (B, P, K, 2)
    valid = (label[:, :, None] >= 0) & (pts >= 0).all(-1) & (pts < size).all(-1)
    channel = (1 - label).clamp(0, 1)[:, :, None].expand_as(valid)
    batch = torch.arange(b, device=clicks.device)[:, None, None].expand_as(valid)
    flat = ((batch * 2 + channel) * size + pts[..., 0]) * size + pts[..., 1]
    out[flat[valid]] = 1.0
    return out.view(b, 2, size, size)


class PromptEncoder(nn.Module):
    """Three prompt channels ``[prev_mask, positive disks, negative disks]`` -> 16x16 patch tokens."""

    def __init__(self, embed_dim: int, patch_size: int = 16, norm_radius: int = 5):
        super().__init__()
        self.norm_radius = norm_radius
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, clicks: torch.Tensor, prev_mask: torch.Tensor) -> torch.Tensor:
        """clicks: (B, P, 3) in model pixels; prev_mask: (B, 1, T, T) probabilities."""
        maps = click_maps(clicks, prev_mask.shape[-1], self.norm_radius).to(prev_mask.dtype)
        x = self.proj(torch.cat([prev_mask, maps], dim=1))
        return x.flatten(2).transpose(1, 2)
