"""Training prompts: ``multi`` correction clicks follow the model's own predictions."""
import numpy as np
import torch

from clickseg.config import ClickConfig
from clickseg.eval.clickers import center_click
from clickseg.model import build_segnext
from clickseg.simulate import prepare_prompts


def _batch(b: int = 3, t: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(b, 3, t, t, generator=gen)
    gt = torch.zeros(b, 1, t, t)
    for i in range(b):
        gt[i, 0, 10 + 3 * i:40 + 2 * i, 12:50 - 4 * i] = 1
    clicks = torch.full((b, 4, 3), -1.0)
    clicks[:, 0] = torch.tensor([25.0, 30.0, 1.0])
    clicks[:, 1] = torch.tensor([55.0, 5.0, 0.0])
    return images, gt, clicks


def test_multi_correction_clicks_are_center_clicks_of_each_prediction():
    torch.manual_seed(0)
    model = build_segnext("tiny_p8", 64).train()
    images, gt, initial = _batch()
    cfg = ClickConfig(mode="multi", max_correction_clicks=3)
    for seed in (11, 1, 4, 0):  # 0, 1, 2 and 3 correction clicks
        n_extra = int(np.random.default_rng(seed).integers(0, cfg.max_correction_clicks + 1))
        clicks, prev = prepare_prompts(model, images, gt, initial, cfg, np.random.default_rng(seed))
        assert model.training  # the simulation leaves the model as it found it
        assert clicks.shape == (3, 4 + n_extra, 3)
        assert torch.equal(clicks[:, :4], initial)
        # Reference: one full forward pass per correction click, as a user would see them.
        ref_clicks, ref_prev = initial.clone(), torch.zeros(3, 1, 64, 64)
        model.eval()
        with torch.no_grad():
            for _ in range(n_extra):
                ref_clicks = torch.cat([ref_clicks, torch.full((3, 1, 3), -1.0)], 1)
                ref_prev = torch.sigmoid(model(images, ref_clicks, ref_prev))
                for j in range(3):
                    pred = ref_prev[j, 0].numpy() > 0.49
                    g = gt[j, 0].numpy() > 0.5
                    c = center_click(g.astype(np.int64), pred, np.ones_like(pred))
                    ref_clicks[j, -1] = torch.tensor([c.y, c.x, float(c.is_positive)])
        model.train()
        assert torch.equal(clicks, ref_clicks)
        torch.testing.assert_close(prev, ref_prev, rtol=0, atol=1e-6)
        assert n_extra == 0 and not prev.any() or n_extra > 0 and prev.any()
