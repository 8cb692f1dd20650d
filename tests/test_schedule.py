"""Learning-rate schedules: exact multipliers per optimizer step."""
import math

import pytest
import torch

from clickseg.config import ConfigError, TrainConfig, load_config
from clickseg.schedule import lr_factor, make_scheduler


def test_multistep_matches_segnext_epoch_milestones():
    cfg = TrainConfig(epochs=4, lr_milestones=[2, 3], lr_gamma=0.1)
    factors = [lr_factor(s, 5, cfg) for s in range(20)]
    assert factors == [1.0] * 10 + [pytest.approx(0.1)] * 5 + [pytest.approx(0.01)] * 5


def test_warmup_is_linear_then_schedule():
    cfg = TrainConfig(epochs=2, lr_milestones=[1], lr_gamma=0.5, warmup_steps=4)
    assert [lr_factor(s, 10, cfg) for s in (0, 1, 2, 3, 4, 9, 10)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 0.5]


def test_cosine_goes_from_one_to_zero():
    cfg = TrainConfig(epochs=2, lr_schedule="cosine")
    assert lr_factor(0, 10, cfg) == 1.0
    assert lr_factor(10, 10, cfg) == pytest.approx(0.5)
    assert lr_factor(20, 10, cfg) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(5, 10, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_scheduler_state_resumes_at_the_same_step():
    cfg = TrainConfig(epochs=3, lr=1.0, lr_schedule="cosine", warmup_steps=3)

    def run(n, state=None):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
        sched = make_scheduler(opt, 4, cfg)
        if state:
            sched.load_state_dict(state)
        for _ in range(n):
            opt.step()
            sched.step()
        return sched, opt.param_groups[0]["lr"]

    first, _ = run(5)
    _, resumed_lr = run(4, first.state_dict())
    _, straight_lr = run(9)
    assert resumed_lr == straight_lr


def test_unknown_schedule_names_the_key():
    with pytest.raises(ConfigError, match="train.lr_schedule"):
        load_config(None, ["train.lr_schedule=linear"])
