"""Initialising the image encoder from MAE / timm ViT weights given as a local file."""
from __future__ import annotations

import torch
from timm.layers import resample_abs_pos_embed

from clickseg.model.segnext import SegNext


def load_mae_weights(model: SegNext, path: str, antialias: bool = False) -> str:
    """Load ``{'model': vit_state_dict}`` (or a bare state dict) into ``model.image_encoder``.

    The position embedding is resampled to the encoder's grid with timm's
    ``resample_abs_pos_embed``, bicubic, without antialiasing unless ``antialias`` (SegNext
    resizes without). Returns a report of loaded, new and unused keys.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else ckpt
    encoder = model.image_encoder
    own = encoder.state_dict()
    loaded, unused = {}, []
    for key, value in state.items():
        if key == "pos_embed" and value.shape != own[key].shape:
            value = resample_abs_pos_embed(value, [encoder.grid, encoder.grid], num_prefix_tokens=1,
                                           interpolation="bicubic", antialias=antialias)
        if key in own and own[key].shape == value.shape:
            loaded[key] = value
        else:
            unused.append(key)
    encoder.load_state_dict(loaded, strict=False)
    new = sorted(set(own) - set(loaded))
    return (f"loaded {len(loaded)} tensors from {path} into the image encoder; "
            f"new (not in file): {new or 'none'}; unused from file: {sorted(unused) or 'none'}")
