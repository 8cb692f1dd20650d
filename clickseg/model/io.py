"""Loading models from checkpoint files (always ``weights_only=True``) and exporting them
in SegNext's layout.

Two formats load: clickseg training checkpoints (``{'format': 'clickseg', 'model': ...,
'config': ...}``) and SegNext checkpoints (``{'state_dict': ..., 'config': ...}``, the
released models and those of a SegNext fork), whose architecture is rebuilt from the
serialised config.
"""
from __future__ import annotations

from pathlib import Path

import torch

from clickseg.architectures import Architecture
from clickseg.checkpoint import atomic_save
from clickseg.model.build import build_segnext
from clickseg.model.segnext import SegNext
from clickseg.model.segnext_compat import (architecture_from_config, from_segnext_keys, is_segnext_checkpoint,
                                           segnext_config, to_segnext_keys)


def _read(path: str | Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler's refusal of non-tensor objects, or a damaged file
        raise ValueError(f"refusing to load {path}: it cannot be read with weights_only=True, i.e. it holds "
                         f"more than tensors and builtins, or it is damaged ({e})") from e


def check_state(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: str) -> None:
    """Raise one error listing every missing, unexpected and mis-shaped key of ``state``."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"missing keys {missing}" if missing else "", f"unexpected keys {unexpected}" if unexpected else "",
                 f"shape mismatches {shapes}" if shapes else ""]
        raise ValueError(f"{source}: state dict does not match the model: " + "; ".join(p for p in parts if p))


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> SegNext:
    """The model of a clickseg or SegNext checkpoint, in eval mode on ``device``."""
    ckpt = _read(path)
    if isinstance(ckpt, dict) and ckpt.get("format") == "clickseg":
        model_cfg = ckpt["config"]["model"]
        model = build_segnext(model_cfg["arch"], model_cfg["input_size"])
        check_state(model.state_dict(), ckpt["model"], f"{path} (clickseg checkpoint, arch {model_cfg['arch']})")
        model.load_state_dict(ckpt["model"])
    elif is_segnext_checkpoint(ckpt):
        arch, size = architecture_from_config(ckpt["config"])
        model = build_segnext(arch, size)
        # compared in the file's own key names, so the error lists keys as the file spells them
        check_state(to_segnext_keys(model.state_dict()), ckpt["state_dict"], f"{path} (SegNext checkpoint)")
        model.load_state_dict(from_segnext_keys(ckpt["state_dict"]))
    else:
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is neither a clickseg checkpoint ('format': 'clickseg') nor a SegNext one "
                         f"('state_dict' + 'config'); top-level keys: {keys}")
    return model.to(device).eval()


def export_segnext(model: SegNext, path: str | Path, arch: Architecture | None = None) -> None:
    """Write ``model`` as a SegNext checkpoint that SegNext's own ``load_is_model`` reads."""
    arch = arch or model.arch
    if arch is None:
        raise ValueError("export_segnext needs the model's Architecture (build it with build_segnext)")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_save({"state_dict": to_segnext_keys(state), "config": segnext_config(arch, model.input_size)}, path)
