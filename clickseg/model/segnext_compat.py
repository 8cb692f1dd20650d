"""SegNext's checkpoint layout <-> clickseg's modules: the one place weights are renamed and
SegNext's serialised model config is read or written.

A SegNext checkpoint is ``{'state_dict': ..., 'config': {'class': ..., 'params': {name:
{'type': 'builtin', 'value': ..., 'specified': bool}}}}``.
"""
from __future__ import annotations

from typing import Any

import torch

from clickseg.architectures import Architecture
from clickseg.model.segnext import IMAGENET_MEAN, IMAGENET_STD

SEGNEXT_CLASS = "isegm.model.is_plainvit_model.PlainVitModel"

# clickseg prefix -> SegNext prefix
PREFIXES = (
    ("image_encoder.", "backbone."),
    ("prompt_encoder.", "visual_prompts_encoder."),
    ("decoder.fusion_blocks.", "fusion_blocks."),
    ("decoder.neck.", "neck."),
    ("decoder.head.", "head."),
)


class SegNextConfigError(ValueError):
    """A SegNext model config that clickseg cannot rebuild exactly; the message names the key."""


def _rename(key: str, pairs) -> str:
    for src, dst in pairs:
        if key.startswith(src):
            return dst + key[len(src):]
    raise KeyError(f"no counterpart for state-dict key '{key}'")


def to_segnext_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """clickseg state dict -> SegNext's key layout."""
    return {_rename(k, PREFIXES): v for k, v in state.items()}


def from_segnext_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SegNext state dict -> clickseg's key layout (a key outside SegNext's modules is an error)."""
    return {_rename(k, [(b, a) for a, b in PREFIXES]): v for k, v in state.items()}


def is_segnext_checkpoint(ckpt: Any) -> bool:
    return isinstance(ckpt, dict) and "state_dict" in ckpt and isinstance(ckpt.get("config"), dict) \
        and "params" in ckpt["config"]


def _params(config: dict) -> dict[str, Any]:
    out = {}
    for name, entry in config.get("params", {}).items():
        out[name] = entry["value"] if isinstance(entry, dict) and "value" in entry else entry
    return out


def _pair(value, key: str) -> int:
    """An int or a square (a, a) pair as SegNext writes sizes; anything else is an error."""
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
        return int(value[0])
    raise SegNextConfigError(f"SegNext config key '{key}': {value!r} is not square; clickseg models are square")


def architecture_from_config(config: dict) -> tuple[Architecture, int]:
    """(architecture, input size T) of a SegNext ``PlainVitModel`` config, checked field by field."""
    cls = config.get("class", SEGNEXT_CLASS)
    if cls != SEGNEXT_CLASS:
        raise SegNextConfigError(f"SegNext config key 'class': {cls!r}; only {SEGNEXT_CLASS} is supported")
    p = _params(config)

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise SegNextConfigError(f"SegNext config key '{key}': {msg}")

    for name in ("backbone_params", "neck_params", "head_params", "fusion_params"):
        need(isinstance(p.get(name), dict), f"params.{name}", "missing")
    bb, neck, head, fusion = p["backbone_params"], p["neck_params"], p["head_params"], p["fusion_params"]
    size = _pair(bb.get("img_size", 224), "backbone_params.img_size")
    patch = _pair(bb.get("patch_size", 16), "backbone_params.patch_size")
    need(patch == 16, "backbone_params.patch_size", f"{patch}; only 16 is supported")
    need(bb.get("in_chans", 3) == 3, "backbone_params.in_chans", "only 3 is supported")
    need(bb.get("qkv_bias", True) is True, "backbone_params.qkv_bias", "only True is supported")
    dim, heads = int(bb.get("embed_dim", 768)), int(bb.get("num_heads", 12))
    mlp_ratio = float(bb.get("mlp_ratio", 4.0))
    need(neck.get("in_dim", 768) == dim, "neck_params.in_dim", f"{neck.get('in_dim', 768)} != embed_dim {dim}")
    out_dims = tuple(int(d) for d in neck.get("out_dims", (128, 256, 512, 1024)))
    need(len(out_dims) == 4, "neck_params.out_dims", f"{out_dims}: need 4 scales")
    need(tuple(head.get("in_channels", ())) == out_dims, "head_params.in_channels",
         f"{head.get('in_channels')} must equal neck_params.out_dims {list(out_dims)}")
    need(list(head.get("in_select_index", [0, 1, 2, 3])) == [0, 1, 2, 3], "head_params.in_select_index",
         "only [0, 1, 2, 3] is supported")
    need(head.get("num_classes", 1) == 1, "head_params.num_classes", "only 1 is supported")
    need(fusion.get("type") == "self_attention", "fusion_params.type",
         f"{fusion.get('type')!r}; only 'self_attention' is supported")
    fp = fusion.get("params", {})
    need(fp.get("dim", dim) == dim, "fusion_params.params.dim", f"must equal embed_dim {dim}")
    need(fp.get("num_heads", 8) == heads, "fusion_params.params.num_heads", f"must equal num_heads {heads}")
    need(float(fp.get("mlp_ratio", 4.0)) == mlp_ratio, "fusion_params.params.mlp_ratio",
         f"must equal backbone_params.mlp_ratio {mlp_ratio}")
    need(fp.get("qkv_bias", False) is True, "fusion_params.params.qkv_bias", "only True is supported")
    need(p.get("use_disks", False) is True, "params.use_disks",
         "only disk click maps (True) are supported, as in every released SegNext model")
    mean_std = p.get("norm_mean_std", (IMAGENET_MEAN, IMAGENET_STD))
    need([list(map(float, m)) for m in mean_std] == [list(IMAGENET_MEAN), list(IMAGENET_STD)],
         "params.norm_mean_std", f"{mean_std}; only ImageNet's mean/std is supported")
    arch = Architecture(
        embed_dim=dim, depth=int(bb.get("depth", 12)), num_heads=heads,
        global_atten_freq=int(bb.get("global_atten_freq", 1)), fusion_depth=int(fusion.get("depth", 1)),
        neck_dims=out_dims, head_channels=int(head.get("out_channels", 256)), mlp_ratio=mlp_ratio,
        norm_radius=int(p.get("norm_radius", 5)))
    return arch, size


def segnext_config(arch: Architecture, input_size: int) -> dict:
    """The ``config`` entry SegNext's ``load_model`` rebuilds this architecture from."""
    def entry(value, specified=True):
        return {"type": "builtin", "value": value, "specified": specified}

    if arch.patch_size != 16:
        raise ValueError(f"SegNext checkpoints are checked for 16-pixel patches only; this model uses {arch.patch_size}")
    dims = list(arch.neck_dims)
    return {"class": SEGNEXT_CLASS, "params": {
        "backbone_params": entry({
            "img_size": [input_size, input_size], "patch_size": [16, 16], "in_chans": 3,
            "embed_dim": arch.embed_dim, "depth": arch.depth, "global_atten_freq": arch.global_atten_freq,
            "num_heads": arch.num_heads, "mlp_ratio": arch.mlp_ratio, "qkv_bias": True}),
        "neck_params": entry({"in_dim": arch.embed_dim, "out_dims": dims}),
        "head_params": entry({"in_channels": dims, "in_select_index": [0, 1, 2, 3], "dropout_ratio": 0.1,
                              "num_classes": 1, "out_channels": arch.head_channels}),
        "fusion_params": entry({"type": "self_attention", "depth": arch.fusion_depth, "params": {
            "dim": arch.embed_dim, "num_heads": arch.num_heads, "mlp_ratio": arch.mlp_ratio, "qkv_bias": True}}),
        "use_disks": entry(True),
        "norm_radius": entry(arch.norm_radius),
        "cpu_dist_maps": entry(False, False),
        "norm_mean_std": entry([list(IMAGENET_MEAN), list(IMAGENET_STD)], False),
    }}
