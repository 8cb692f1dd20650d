"""The SegNext builder: a named size (``clickseg.architectures``) to a model."""
from __future__ import annotations

from clickseg.architectures import ARCHITECTURES, Architecture
from clickseg.model.decoder import MaskDecoder
from clickseg.model.image_encoder import ImageEncoder
from clickseg.model.prompt_encoder import PromptEncoder
from clickseg.model.segnext import SegNext

__all__ = ["ARCHITECTURES", "Architecture", "build_segnext"]


def build_segnext(arch: str | Architecture, input_size: int) -> SegNext:
    a = ARCHITECTURES[arch] if isinstance(arch, str) else arch
    return SegNext(
        ImageEncoder(input_size, a.embed_dim, a.depth, a.num_heads, a.mlp_ratio, a.global_atten_freq, a.patch_size),
        PromptEncoder(a.embed_dim, patch_size=a.patch_size, norm_radius=a.norm_radius),
        MaskDecoder(a.embed_dim, a.num_heads, a.fusion_depth, a.mlp_ratio, list(a.neck_dims), a.head_channels),
        arch=a,
    )
