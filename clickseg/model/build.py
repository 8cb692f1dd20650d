"""Named SegNext sizes and the builder (one registry, plain constructor arguments)."""
from __future__ import annotations

from dataclasses import dataclass

from clickseg.model.decoder import MaskDecoder
from clickseg.model.image_encoder import ImageEncoder, is_global_block
from clickseg.model.prompt_encoder import PromptEncoder
from clickseg.model.segnext import SegNext


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
}


def build_segnext(arch: str | Architecture, input_size: int) -> SegNext:
    a = ARCHITECTURES[arch] if isinstance(arch, str) else arch
    return SegNext(
        ImageEncoder(input_size, a.embed_dim, a.depth, a.num_heads, a.mlp_ratio, a.global_atten_freq),
        PromptEncoder(a.embed_dim, norm_radius=a.norm_radius),
        MaskDecoder(a.embed_dim, a.num_heads, a.fusion_depth, a.mlp_ratio, list(a.neck_dims), a.head_channels),
    )
