"""Loading models from checkpoint files (always ``weights_only=True``)."""
from __future__ import annotations

from pathlib import Path

import torch

from clickseg.model.build import build_segnext
from clickseg.model.segnext import SegNext


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> SegNext:
    """The model of a clickseg checkpoint, in eval mode on ``device``."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"refusing to load {path}: it cannot be read with weights_only=True ({e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != "clickseg":
        raise ValueError(f"{path} is not a clickseg checkpoint (no 'format': 'clickseg' entry)")
    model_cfg = ckpt["config"]["model"]
    model = build_segnext(model_cfg["arch"], model_cfg["input_size"])
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: state dict does not match {model_cfg['arch']}: "
                         f"missing {missing}, unexpected {unexpected}")
    return model.to(device).eval()
