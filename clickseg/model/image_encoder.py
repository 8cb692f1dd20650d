"""Plain ViT image encoder with SegNext's window attention (computed once per image)."""
from __future__ import annotations

from functools import partial

import torch
from torch import nn
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block

from clickseg.architectures import is_global_block, window_layout


class ImageEncoder(nn.Module):
    """Patch embedding + position embedding + ``depth`` timm blocks; no final norm.

    Output: tokens of shape (B, grid*grid, embed_dim), row-major over the grid.
    """

    def __init__(self, input_size: int, embed_dim: int, depth: int, num_heads: int,
                 mlp_ratio: float = 4.0, global_atten_freq: int = 1, patch_size: int = 16):
        super().__init__()
        self.input_size = input_size
        self.grid = input_size // patch_size
        self.depth = depth
        self.global_atten_freq = global_atten_freq
        self.patch_embed = PatchEmbed(input_size, patch_size, 3, embed_dim)
        # Row 0 is the unused cls slot of MAE/SegNext checkpoints, kept so weights load unchanged.
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid + 1, embed_dim))
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm) for _ in range(depth)])
        self.fc_norm = norm(embed_dim)  # present in SegNext checkpoints, never applied
        self.fc_norm.requires_grad_(False)  # so DDP does not wait for gradients that never come
        self.windows = window_layout(input_size, patch_size) if not all(
            is_global_block(i, depth, global_atten_freq) for i in range(1, depth + 1)) else (1, self.grid)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(image) + self.pos_embed[:, 1:]
        split = False
        for i, block in enumerate(self.blocks, start=1):
            want_split = not is_global_block(i, self.depth, self.global_atten_freq)
            if want_split != split:
                x = self._split(x) if want_split else self._merge(x)
                split = want_split
            x = block(x)
        return self._merge(x) if split else x

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(B, g*g, C) -> (B*n*n, s*s, C) with n windows of s tokens a side."""
        b, _, c = x.shape
        n, s = self.windows
        x = x.view(b, n, s, n, s, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b * n * n, s * s, c)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        n, s = self.windows
        c = x.shape[-1]
        b = x.shape[0] // (n * n)
        x = x.view(b, n, n, s, s, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b, n * s * n * s, c)
