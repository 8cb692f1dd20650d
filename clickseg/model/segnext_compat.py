"""Key names of SegNext's checkpoints <-> clickseg's modules (the one place weights are renamed)."""
from __future__ import annotations

import torch

# clickseg prefix -> SegNext prefix
PREFIXES = (
    ("image_encoder.", "backbone."),
    ("prompt_encoder.", "visual_prompts_encoder."),
    ("decoder.fusion_blocks.", "fusion_blocks."),
    ("decoder.neck.", "neck."),
    ("decoder.head.", "head."),
)


def _rename(key: str, pairs) -> str:
    for src, dst in pairs:
        if key.startswith(src):
            return dst + key[len(src):]
    raise KeyError(f"no SegNext counterpart for state-dict key '{key}'")


def to_segnext_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """clickseg state dict -> SegNext's key layout."""
    return {_rename(k, PREFIXES): v for k, v in state.items()}


def from_segnext_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SegNext state dict -> clickseg's key layout."""
    return {_rename(k, [(b, a) for a, b in PREFIXES]): v for k, v in state.items()}
