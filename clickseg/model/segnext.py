"""SegNext: composes the image encoder, the prompt encoder and the mask decoder."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from clickseg.architectures import Architecture
from clickseg.model.decoder import MaskDecoder
from clickseg.model.image_encoder import ImageEncoder
from clickseg.model.prompt_encoder import PromptEncoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SegNext(nn.Module):
    """Click-prompted segmentation at a square input size T.

    All tensors here live in model space (T x T). Mapping images, clicks and
    masks from and to the original image size is the predictor's job
    (``clickseg.predictor``); training feeds T x T crops directly.
    """

    def __init__(self, image_encoder: ImageEncoder, prompt_encoder: PromptEncoder, decoder: MaskDecoder,
                 arch: Architecture | None = None):
        super().__init__()
        self.arch = arch  # the sizes it was built from (needed to export a SegNext config)
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.decoder = decoder
        self.input_size = image_encoder.input_size
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) floats in [0, 1] -> normalised, bilinearly resized to T x T (aspect ignored)."""
        x = (images - self.pixel_mean) / self.pixel_std
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return x

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Image tokens (B, N, C), computed once per image and reused for every click."""
        return self.image_encoder(self.preprocess(images))

    def decode(self, image_tokens: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1, T, T) for B prompts.

        Args:
            image_tokens: (B, N, C), or (1, N, C) shared by all B prompts.
            clicks: (B, P, 3) (y, x, label) in model pixels, label 1/0/-1 (pos/neg/padding).
            prev_mask: (B, 1, T, T) previous probabilities (zeros before the first click).
        """
        prompt_tokens = self.prompt_encoder(clicks, prev_mask)
        if image_tokens.shape[0] != prompt_tokens.shape[0]:
            image_tokens = image_tokens.expand(prompt_tokens.shape[0], -1, -1)
        logits = self.decoder(image_tokens, prompt_tokens, self.image_encoder.grid)
        return F.interpolate(logits, size=(self.input_size, self.input_size), mode="bilinear", align_corners=True)

    def forward(self, images: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor,
                simulate: Callable | None = None) -> torch.Tensor:
        """Logits (B, 1, T, T) for images (B, 3, T, T) in [0, 1].

        ``simulate(model, image_tokens, clicks, prev_mask) -> (clicks, prev_mask)``, when given, runs
        on this batch's image tokens (detached) before the final decode: training's click
        simulation (``clickseg.simulate.ClickSimulation``), which thus reuses the features of the
        step, as SegNext's trainer does, inside the one forward a DDP wrapper sees.
        """
        image_tokens = self.encode_image(images)
        if simulate is not None:
            clicks, prev_mask = simulate(self, image_tokens.detach(), clicks, prev_mask)
        return self.decode(image_tokens, clicks, prev_mask)
