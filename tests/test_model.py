"""The SegNext architecture: checkpoint layout, window attention, prompts, feature reuse."""
from pathlib import Path

import numpy as np
import pytest
import torch

from clickseg.architectures import window_layout
from clickseg.config import ConfigError, load_config
from clickseg.model import build_segnext
from clickseg.model.build import Architecture
from clickseg.model.io import export_segnext
from clickseg.model.prompt_encoder import click_maps, disk_offsets
from clickseg.model.segnext_compat import from_segnext_keys, to_segnext_keys

DATA = Path(__file__).parent / "data"


def _reference_keys(name: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in (DATA / name).read_text().splitlines():
        key, shape, _ = line.split("\t")
        out[key] = tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())
    return out


@pytest.mark.parametrize("arch,keys,n_params", [
    ("vit_base_sax2", "segnext_vitb_sax2_keys.txt", 113_789_633),
    ("vit_base_sax1", "segnext_vitb_sax1_keys.txt", 106_701_761),
])
def test_state_dict_matches_segnext_layout(arch, keys, n_params):
    with torch.device("meta"):
        model = build_segnext(arch, 1024)
    ours = {k: tuple(v.shape) for k, v in to_segnext_keys(model.state_dict()).items()}
    assert ours == _reference_keys(keys)
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert set(from_segnext_keys(to_segnext_keys(model.state_dict()))) == set(model.state_dict())


@pytest.mark.parametrize("size,layout", [(1024, (4, 16)), (512, (2, 16)), (448, (2, 14)), (224, (1, 14)),
                                         (256, (1, 16))])
def test_window_layout_matches_segnext(size, layout):
    assert window_layout(size, 16) == layout


@pytest.mark.parametrize("size,near", [(160, "224"), (464, "448 or 480"), (1008, "960 or 1024")])
def test_window_layout_rejects_impossible_sizes(size, near):
    """The model raises its own ValueError, naming the nearest sizes; the config names its key."""
    with pytest.raises(ValueError, match=f"input size {size} .*nearest sizes that can: {near}$") as err:
        window_layout(size, 16)
    assert not isinstance(err.value, ConfigError)
    with pytest.raises(ValueError, match=f"input size {size}"):
        build_segnext("tiny", size)
    with pytest.raises(ConfigError, match=f"config key 'model.input_size': input size {size} .*{near}"):
        load_config(None, ["model.arch=tiny", f"model.input_size={size}"])


def test_windowed_blocks_only_mix_tokens_within_windows():
    arch = Architecture(32, 2, 2, 2, 1, (8, 8, 8, 8), 8)  # block 1 windowed, block 2 (last) global
    enc = build_segnext(arch, 512).image_encoder.eval()
    enc.blocks = enc.blocks[:1]  # keep only the windowed block
    enc.depth = 2  # so block 1 stays windowed
    x = torch.randn(1, 3, 512, 512)
    base = enc(x)
    y = x.clone()
    y[..., :16, :16] += 5.0  # changes token (0, 0), in window (0, 0)
    diff = (enc(y) - base).abs().sum(-1).view(32, 32)
    assert diff[:16, :16].max() > 0
    assert diff[16:, :].max() == 0 and diff[:, 16:].max() == 0


def test_disks_have_81_pixels_and_labels_go_to_their_channel():
    assert len(disk_offsets(5)) == 81
    clicks = torch.tensor([[[20, 30, 1], [50, 50, 0], [-1, -1, -1]]], dtype=torch.float32)
    maps = click_maps(clicks, 64, 5)
    assert maps[0, 0].sum() == 81 and maps[0, 1].sum() == 81
    yy, xx = np.mgrid[:64, :64]
    expect = ((yy - 20) ** 2 + (xx - 30) ** 2 <= 25)
    assert np.array_equal(maps[0, 0].numpy().astype(bool), expect)
    border = click_maps(torch.tensor([[[0, 0, 1]]], dtype=torch.float32), 64, 5)
    assert border.sum() == sum(1 for dy, dx in disk_offsets(5).tolist() if dy >= 0 and dx >= 0)


def test_features_reused_for_every_prompt():
    torch.manual_seed(0)
    model = build_segnext("tiny", 224).eval()
    img = torch.rand(1, 3, 300, 200)
    clicks = torch.tensor([[[100, 100, 1]], [[50, 60, 0]]], dtype=torch.float32)
    prev = torch.rand(2, 1, 224, 224)
    with torch.no_grad():
        feats = model.encode_image(img)
        batched = model.decode(feats, clicks, prev)
        single = torch.cat([model(img, clicks[i:i + 1], prev[i:i + 1]) for i in range(2)])
    assert batched.shape == (2, 1, 224, 224)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_patch_size_sets_token_grid_prompt_tokens_and_input_check(tmp_path):
    """An 8-pixel-patch model (the demo's ``tiny_p8``): an 8 x 8 token grid at 64 px, each click
    moves only its own patch's prompt token, and input sizes must be multiples of 8, not 16."""
    torch.manual_seed(0)
    model = build_segnext("tiny_p8", 64).eval()
    assert model.image_encoder.grid == 8
    img = torch.rand(1, 3, 100, 150)
    with torch.no_grad():
        tokens = model.encode_image(img)
        assert tokens.shape == (1, 64, model.arch.embed_dim)
        assert model(img, torch.tensor([[[10.0, 20.0, 1.0]]]), torch.zeros(1, 1, 64, 64)).shape == (1, 1, 64, 64)
        prev = torch.zeros(1, 1, 64, 64)
        empty = model.prompt_encoder(torch.full((1, 1, 3), -1.0), prev)
        model.prompt_encoder.norm_radius = 0  # one-pixel clicks: each lies in exactly one patch
        for y, x in [(0, 0), (27, 44), (63, 63), (40, 9)]:
            moved = (model.prompt_encoder(torch.tensor([[[float(y), float(x), 1.0]]]), prev) - empty).abs().sum(-1)
            assert moved[0].nonzero().flatten().tolist() == [(y // 8) * 8 + x // 8]
    assert load_config(None, ["model.arch=tiny_p8", "model.input_size=72"]).model.input_size == 72
    for arch, size in [("tiny_p8", 60), ("tiny_global", 72)]:
        with pytest.raises(ConfigError, match="'model.input_size'.*patch size"):
            load_config(None, [f"model.arch={arch}", f"model.input_size={size}"])
    with pytest.raises(ValueError, match="16-pixel patches"):
        export_segnext(model, tmp_path / "p8.pth")
    assert not (tmp_path / "p8.pth").exists()


def test_head_per_scale_fusion_equals_segnext_head_with_gradients():
    """The head applies each scale's slice of the fusion convolution before resizing; outputs and
    the gradients of every head parameter and input equal SegNext's order (resize, concatenate,
    fuse) within float rounding, in training mode (dropout drawn alike)."""
    import torch.nn.functional as F

    from clickseg.model.decoder import SegHead, resize

    torch.manual_seed(0)
    head = SegHead([8, 16, 16, 32], 12).train()
    shapes = [(2, 8, 24, 24), (2, 16, 12, 12), (2, 16, 6, 6), (2, 32, 3, 3)]

    def segnext_order(feats):
        size = feats[0].shape[-2:]
        outs = [resize(conv(f), size) for conv, f in zip(head.convs, feats)]
        return head.seg_conv(head.dropout(head.fusion_conv(torch.cat(outs, dim=1))))

    results = []
    for forward in (head.forward, segnext_order):
        torch.manual_seed(1)
        feats = [torch.randn(s, requires_grad=True) for s in shapes]
        head.zero_grad()
        torch.manual_seed(2)
        out = forward(feats)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), [f.grad for f in feats], {k: p.grad.clone() for k, p in head.named_parameters()}))
    (o1, g1, p1), (o2, g2, p2) = results
    assert o1.shape == (2, 1, 24, 24) and o1.std() > 0
    torch.testing.assert_close(o1, o2, rtol=1e-5, atol=1e-6)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert p1.keys() == p2.keys()
    for k in p1:
        torch.testing.assert_close(p1[k], p2[k], rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")
