"""Fusion of image and prompt tokens, SimpleFPN neck and segmentation head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from timm.models.vision_transformer import Block


class SimpleFPN(nn.Module):
    """Four scales (4x, 2x, 1x and 1/2x the token grid; strides 4, 8, 16, 32 with 16-pixel patches)
    from the token map, as SegNext's neck."""

    def __init__(self, in_dim: int, out_dims: list[int]):
        super().__init__()
        c4 = max(out_dims[0] * 2, in_dim // 2)
        c8 = max(out_dims[1], in_dim // 2)
        c32 = max(out_dims[3], in_dim * 2)
        self.down_4 = nn.Sequential(
            nn.ConvTranspose2d(in_dim, c4, 2, stride=2), nn.GroupNorm(1, c4), nn.GELU(),
            nn.ConvTranspose2d(c4, c4 // 2, 2, stride=2), nn.GroupNorm(1, c4 // 2),
            nn.Conv2d(c4 // 2, out_dims[0], 1), nn.GroupNorm(1, out_dims[0]), nn.GELU())
        self.down_8 = nn.Sequential(
            nn.ConvTranspose2d(in_dim, c8, 2, stride=2), nn.GroupNorm(1, c8),
            nn.Conv2d(c8, out_dims[1], 1), nn.GroupNorm(1, out_dims[1]), nn.GELU())
        self.down_16 = nn.Sequential(
            nn.Conv2d(in_dim, out_dims[2], 1), nn.GroupNorm(1, out_dims[2]), nn.GELU())
        self.down_32 = nn.Sequential(
            nn.Conv2d(in_dim, c32, 2, stride=2), nn.GroupNorm(1, c32),
            nn.Conv2d(c32, out_dims[3], 1), nn.GroupNorm(1, out_dims[3]), nn.GELU())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.down_4(x), self.down_8(x), self.down_16(x), self.down_32(x)]


class ConvReLU(nn.Module):
    """1x1 conv + ReLU (named ``conv`` so SegNext's ``head.convs.i.conv`` keys map directly)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x))


class SegHead(nn.Module):
    """Per-scale 1x1 conv, upsample to the finest scale, concat, fuse, dropout, 1x1 conv to one logit."""

    def __init__(self, in_channels: list[int], channels: int, dropout: float = 0.1):
        super().__init__()
        self.convs = nn.ModuleList(ConvReLU(c, channels) for c in in_channels)
        self.fusion_conv = ConvReLU(channels * len(in_channels), channels)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.seg_conv = nn.Conv2d(channels, 1, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """SegNext's head computes ``fusion_conv(cat(resize(conv_i(f_i))))`` at the finest scale. A
        1x1 convolution and a bilinear resize commute (both linear, one across channels, one
        across pixels), so each scale's slice of the fusion convolution is applied at that
        scale's own resolution and the results are resized and summed: the same function with a
        quarter of the fusion convolution's work at 4 scales (about 10% of a click at 512 px)."""
        size = feats[0].shape[-2:]
        conv = self.fusion_conv.conv
        slices = conv.weight.split([c.conv.out_channels for c in self.convs], dim=1)
        fused = None
        for head_conv, f, w in zip(self.convs, feats, slices):
            part = resize(F.conv2d(head_conv(f), w), size)
            fused = part if fused is None else fused.add_(part)  # in place: the finest maps are large
        return self.seg_conv(self.dropout(F.relu(fused.add_(conv.bias.view(1, -1, 1, 1)))))


def resize(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Bilinear resize (half-pixel centres). At the same size that is exactly the identity, so it
    is skipped: on CPU the no-op interpolation and its backward cost a fifth of a small model's step."""
    if x.shape[-2:] == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class MaskDecoder(nn.Module):
    """Image tokens + prompt tokens -> global fusion blocks -> neck -> head -> logits at 4x the token grid."""

    def __init__(self, embed_dim: int, num_heads: int, fusion_depth: int, mlp_ratio: float,
                 neck_dims: list[int], head_channels: int, dropout: float = 0.1):
        super().__init__()
        # PyTorch's default LayerNorm eps (1e-5) here, unlike the backbone's 1e-6, as in SegNext.
        self.fusion_blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm)
            for _ in range(fusion_depth)])
        self.neck = SimpleFPN(embed_dim, neck_dims)
        self.head = SegHead(neck_dims, head_channels, dropout)

    def forward(self, image_tokens: torch.Tensor, prompt_tokens: torch.Tensor, grid: int) -> torch.Tensor:
        x = self.fusion_blocks(image_tokens + prompt_tokens)
        b, n, c = x.shape
        x = x.transpose(1, 2).reshape(b, c, grid, grid)
        return self.head(self.neck(x))
