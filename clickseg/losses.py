"""Normalized focal loss (RITM / SegNext training loss)."""
from __future__ import annotations

import torch


def normalized_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.5,
                          gamma: float = 2.0, eps: float = 1e-12, ignore_value: float = -1.0) -> torch.Tensor:
    """Focal loss whose per-image focal weights are rescaled to sum to the number of valid pixels.

    Args:
        logits: (B, 1, H, W) raw scores.
        target: (B, 1, H, W) with 1 object, 0 background, ``ignore_value`` ignored.
    Returns:
        (B,) loss per image (mean over its valid pixels).
    """
    valid = (target != ignore_value).to(logits.dtype)
    prob = torch.sigmoid(logits)
    positive = target > 0.5
    weight_alpha = torch.where(positive, alpha * valid, (1 - alpha) * valid)
    pt = torch.where(valid.bool(), 1.0 - (target - prob).abs(), torch.ones_like(prob))
    beta = (1.0 - pt) ** gamma
    n_valid = valid.sum(dim=(-2, -1), keepdim=True)
    scale = (n_valid / (beta.sum(dim=(-2, -1), keepdim=True) + eps)).detach()
    loss = -weight_alpha * beta * scale * torch.log(pt.clamp(min=eps))
    loss = (loss * valid).sum(dim=(-2, -1)) / (n_valid.squeeze(-1).squeeze(-1) + eps)
    return loss.flatten()
