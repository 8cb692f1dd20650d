"""Pictures of clicks and masks for TensorBoard and reports."""
from __future__ import annotations

import cv2
import numpy as np
import torch

POSITIVE = (0.1, 0.9, 0.1)
NEGATIVE = (0.95, 0.1, 0.1)


def _overlay(image: np.ndarray, mask: np.ndarray, color=(0.2, 0.5, 1.0), alpha=0.5) -> np.ndarray:
    out = image.copy()
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color, dtype=np.float32)
    return out


def _draw_clicks(image: np.ndarray, clicks: np.ndarray) -> np.ndarray:
    image = np.ascontiguousarray(image)
    radius = max(2, image.shape[0] // 64)
    for y, x, label in clicks:
        if label < 0:
            continue
        color = POSITIVE if label > 0 else NEGATIVE
        cv2.circle(image, (int(x), int(y)), radius, color, -1)
        cv2.circle(image, (int(x), int(y)), radius, (1.0, 1.0, 1.0), 1)
    return image


def click_overlay(images: torch.Tensor, gt: torch.Tensor, probs: torch.Tensor, clicks: torch.Tensor,
                  thr: float = 0.49) -> np.ndarray:
    """(K, 3, T, 3T) float array in [0, 1]: image with clicks | ground truth | prediction with clicks."""
    rows = []
    for img, g, p, c in zip(images.float().cpu(), gt.cpu(), probs.cpu(), clicks.cpu()):
        img = img.permute(1, 2, 0).numpy().astype(np.float32)
        c = c.numpy()
        panels = [_draw_clicks(img, c), _overlay(img, g[0].numpy() > 0.5, (1.0, 0.8, 0.1)),
                  _draw_clicks(_overlay(img, p[0].numpy() > thr), c)]
        rows.append(np.concatenate(panels, axis=1).transpose(2, 0, 1))
    return np.clip(np.stack(rows), 0, 1)
