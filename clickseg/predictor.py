"""Interactive prediction on one image: features once, then one cheap decode per click."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from clickseg.model import SegNext

ClickLike = Sequence  # (y, x, is_positive)


class Predictor:
    """SegNext-style predictor.

    ``set_image(image)`` computes the image features once; ``predict(clicks)``
    returns an H x W float32 probability map at the image's original size and
    keeps it as the previous mask fed back with the next call; ``reset()``
    clears it. Clicks are ``(y, x, is_positive)`` in original image pixels, in
    the order the user placed them.
    """

    def __init__(self, model: SegNext, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.features: torch.Tensor | None = None
        self.size: tuple[int, int] | None = None
        self.prev: torch.Tensor | None = None

    @torch.no_grad()
    def set_image(self, image: np.ndarray) -> None:
        """image: H x W x 3 uint8 RGB."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"set_image expects an H x W x 3 uint8 array, got {image.shape} {image.dtype}")
        # channels first in memory before the float conversion: resizing a channels-last view is slower
        x = torch.from_numpy(image).to(self.device).permute(2, 0, 1).contiguous()[None].float() / 255.0
        self.features = self.model.encode_image(x)
        self.size = image.shape[:2]
        self.reset()

    def reset(self) -> None:
        """Forget the previous mask (the next click starts from an all-zero mask)."""
        self.prev = None

    def to_model_coords(self, clicks: Sequence[ClickLike]) -> torch.Tensor:
        """(P, 3) clicks in model pixels: ``floor(v * T / size + 0.5)`` computed in float32, as SegNext does."""
        h, w = self.size
        t = self.model.input_size
        if not clicks:
            return torch.full((0, 3), -1.0)
        arr = torch.tensor([[c[0], c[1]] for c in clicks], dtype=torch.float32)
        y = (arr[:, 0] * (t / h) + 0.5).floor()
        x = (arr[:, 1] * (t / w) + 0.5).floor()
        label = torch.tensor([1.0 if c[2] else 0.0 for c in clicks])
        return torch.stack([y, x, label], dim=1)

    @torch.no_grad()
    def predict(self, clicks: Sequence[ClickLike]) -> np.ndarray:
        """Probability map (H x W float32) for ``clicks``; becomes the previous mask."""
        prev = None if self.prev is None else self.prev[None]
        probs = self._run([clicks], prev)
        self.prev = probs[0]
        return probs[0].cpu().numpy()

    @torch.no_grad()
    def predict_batch(self, click_lists: Sequence[Sequence[ClickLike]],
                      prev_masks: np.ndarray | None = None) -> np.ndarray:
        """Evaluate several click lists against the same image features in one forward pass.

        Args:
            click_lists: N lists of clicks.
            prev_masks: (N, H, W) previous probability maps, or None for all-zero masks.
        Returns:
            (N, H, W) float32 probabilities. The predictor's own previous mask is not changed.
        """
        prev = None if prev_masks is None else torch.as_tensor(prev_masks, dtype=torch.float32, device=self.device)
        return self._run(click_lists, prev).cpu().numpy()

    def _run(self, click_lists: Sequence[Sequence[ClickLike]], prev: torch.Tensor | None) -> torch.Tensor:
        if self.features is None:
            raise RuntimeError("call set_image() before predict()")
        h, w = self.size
        t = self.model.input_size
        n = len(click_lists)
        coords = [self.to_model_coords(c) for c in click_lists]
        clicks = torch.full((n, max(1, max(len(c) for c in coords)), 3), -1.0)
        for i, c in enumerate(coords):
            clicks[i, : len(c)] = c
        if prev is None:
            prev_t = torch.zeros(n, 1, t, t, device=self.device)
        else:
            prev_t = F.interpolate(prev.view(n, 1, h, w), size=(t, t), mode="bilinear", align_corners=False)
        logits = self.model.decode(self.features, clicks.to(self.device), prev_t)
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return torch.sigmoid(logits[:, 0].float())
