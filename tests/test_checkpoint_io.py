"""Loading SegNext and clickseg checkpoints, SegNext export, MAE initialisation."""
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from timm.layers import resample_abs_pos_embed

from clickseg.model import build_segnext, load_checkpoint
from clickseg.model.io import export_segnext
from clickseg.model.pretrained import load_mae_weights
from clickseg.model.segnext_compat import SegNextConfigError, architecture_from_config, segnext_config

DATA = Path(__file__).parent / "data"
REF = DATA / "segnext_ref"


def _listify(x):
    if isinstance(x, (list, tuple)):
        return [_listify(v) for v in x]
    if isinstance(x, dict):
        return {k: _listify(v) for k, v in x.items()}
    return x


def test_vitb_config_written_as_segnext_writes_it():
    arch, size = architecture_from_config(json.loads((DATA / "segnext_vitb_sax2_config.json").read_text()))
    assert size == 1024 and arch.fusion_depth == 2 and arch.global_atten_freq == 3
    assert segnext_config(arch, size) == json.loads((DATA / "segnext_vitb_sax2_config.json").read_text())


@pytest.mark.parametrize("case", ["sax2_512", "sax1_448"])
def test_segnext_file_loads_and_round_trips_through_export(case, tmp_path):
    """A checkpoint saved by SegNext's code loads; our export holds the same tensors and config."""
    original = torch.load(REF / f"{case}.pth", weights_only=True)
    model = load_checkpoint(REF / f"{case}.pth")
    assert not model.training
    export_segnext(model, tmp_path / "out.pth")
    exported = torch.load(tmp_path / "out.pth", weights_only=True)
    assert set(exported) == {"state_dict", "config"}
    assert exported["state_dict"].keys() == original["state_dict"].keys()
    assert all(torch.equal(exported["state_dict"][k], v) for k, v in original["state_dict"].items())
    assert _listify(exported["config"]) == _listify(original["config"])
    again = load_checkpoint(tmp_path / "out.pth")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))


def _segnext_file(tmp_path, edit) -> Path:
    ckpt = torch.load(REF / "sax1_448.pth", weights_only=True)
    edit(ckpt)
    path = tmp_path / "edited.pth"
    torch.save(ckpt, path)
    return path


def test_unknown_missing_and_misshaped_keys_are_listed(tmp_path):
    def extra(c):
        c["state_dict"]["backbone.extra_token"] = torch.zeros(3)
        del c["state_dict"]["head.seg_conv.bias"]
        c["state_dict"]["neck.down_16.0.weight"] = torch.zeros(1, 1, 1, 1)

    with pytest.raises(ValueError) as err:
        load_checkpoint(_segnext_file(tmp_path, extra))
    msg = str(err.value)
    assert "edited.pth" in msg and "backbone.extra_token" in msg and "head.seg_conv.bias" in msg
    assert "neck.down_16.0.weight: file (1, 1, 1, 1)" in msg

    def foreign(c):
        c["state_dict"]["decoder_extra.weight"] = torch.zeros(1)

    with pytest.raises(ValueError, match="decoder_extra.weight"):
        load_checkpoint(_segnext_file(tmp_path, foreign))


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_with_objects_is_refused(tmp_path, capsys):
    ckpt = torch.load(REF / "sax1_448.pth", weights_only=True)
    ckpt["extra"] = Payload()
    path = tmp_path / "evil.pth"
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_checkpoint(path)
    assert "this must never run" not in capsys.readouterr().out
    (tmp_path / "np.pth").write_bytes(pickle.dumps({"state_dict": np.zeros(3), "config": {}}))
    with pytest.raises(ValueError, match="refusing to load"):
        load_checkpoint(tmp_path / "np.pth")


@pytest.mark.parametrize("key,value,match", [
    (("fusion_params", "type"), "cross_attention", "fusion_params.type"),
    (("use_disks",), False, "params.use_disks"),
    (("backbone_params", "img_size"), [448, 512], "backbone_params.img_size"),
    (("head_params", "in_channels"), [1, 2, 3, 4], "head_params.in_channels"),
])
def test_unsupported_config_names_the_key(key, value, match):
    config = torch.load(REF / "sax1_448.pth", weights_only=True)["config"]
    entry = config["params"][key[0]]
    if len(key) == 1:
        entry["value"] = value
    else:
        entry["value"][key[1]] = value
    with pytest.raises(SegNextConfigError, match=match):
        architecture_from_config(config)


def test_neither_format_is_refused(tmp_path):
    torch.save({"model": {}}, tmp_path / "x.pth")
    with pytest.raises(ValueError, match="neither a clickseg checkpoint"):
        load_checkpoint(tmp_path / "x.pth")


def test_mae_weights_resampled_and_reported(tmp_path):
    """An MAE file at 224 px initialises a 448 px encoder: blocks copied, pos_embed resized as SegNext
    does (bicubic, no antialiasing: the grid reshaped and F.interpolate'd, the prefix token kept);
    with ``antialias=True`` it is timm's antialiased resampling instead."""
    torch.manual_seed(0)
    source = build_segnext("tiny", 224).image_encoder.state_dict()
    mae = {k: torch.randn_like(v) for k, v in source.items() if not k.startswith("fc_norm")}
    mae["cls_token"] = torch.randn(1, 1, 128)
    mae["norm.weight"] = torch.ones(128)
    torch.save({"model": mae}, tmp_path / "mae.pth")
    model = build_segnext("tiny", 448)
    report = load_mae_weights(model, str(tmp_path / "mae.pth"))
    enc = model.image_encoder.state_dict()
    grid = mae["pos_embed"][:, 1:].reshape(1, 14, 14, 128).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(grid, size=(28, 28), mode="bicubic", align_corners=False)
    segnext_way = torch.cat([mae["pos_embed"][:, :1], resized.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)
    assert torch.equal(enc["pos_embed"], segnext_way)
    aa = build_segnext("tiny", 448)
    load_mae_weights(aa, str(tmp_path / "mae.pth"), antialias=True)
    antialiased = resample_abs_pos_embed(mae["pos_embed"], [28, 28], num_prefix_tokens=1, antialias=True)
    assert torch.equal(aa.image_encoder.state_dict()["pos_embed"], antialiased)
    assert not torch.allclose(antialiased, segnext_way, atol=1e-3)
    assert enc["pos_embed"].shape == (1, 28 * 28 + 1, 128)
    assert all(torch.equal(enc[k], v) for k, v in mae.items() if k in enc and k != "pos_embed")
    assert "new (not in file): ['fc_norm.bias', 'fc_norm.weight']" in report
    assert "unused from file: ['cls_token', 'norm.weight']" in report
    assert f"loaded {len(mae) - 2} tensors" in report
