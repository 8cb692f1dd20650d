"""Config schema: YAML + overrides, errors that name the key, grids validated before anything runs."""
import pytest

from clickseg.config import Config, ConfigError, load_config
from jobs.grid import expand


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  arch: tiny\n  input_size: 224\ntrain:\n  epochs: 2\n")
    cfg = load_config(path, ["train.lr=0.001", "clicks.mode=single_pos", "data.eval={a: x, b: y}",
                             "train.lr_milestones=[1, 2]"])
    assert isinstance(cfg, Config)
    assert (cfg.model.arch, cfg.model.input_size, cfg.train.epochs) == ("tiny", 224, 2)
    assert cfg.train.lr == 0.001 and cfg.clicks.mode == "single_pos"
    assert cfg.data.eval == {"a": "x", "b": "y"} and cfg.train.lr_milestones == [1, 2]


@pytest.mark.parametrize("text,value", [("1e-4", 1e-4), ("3E-5", 3e-5), ("+2e3", 2000.0), (".5e1", 5.0),
                                        ("1.0e-4", 1e-4), ("7", 7.0)])
def test_float_keys_accept_exponents_without_a_dot(text, value):
    """YAML 1.1 reads ``1e-4`` as a string; a float key takes it as the number a researcher meant."""
    assert load_config(None, [f"train.lr={text}"]).train.lr == value


@pytest.mark.parametrize("override,key", [
    ("train.lr=1e-4x", "train.lr"),
    ("train.lr=e-4", "train.lr"),
    ("train.epochz=3", "train.epochz"),
    ("modle.arch=tiny", "modle"),
    ("train.epochs=three", "train.epochs"),
    ("train.epochs=1.5", "train.epochs"),
    ("train.lr_milestones=5", "train.lr_milestones"),
    ("model.input_size=500", "model.input_size"),
    ("model.input_size=160", "model.input_size"),
    ("clicks.mode=double", "clicks.mode"),
    ("model.arch=vit_huge", "model.arch"),
    ("eval.threshold=1.5", "eval.threshold"),
    ("eval.target_iou=1.5", "eval.target_iou"),
    ("eval.flips=diagonal", "eval.flips"),
    ("executor.type=kubernetes", "executor.type"),
    ("data.stuff_prob=2", "data.stuff_prob"),
    ("executor.gpus_per_node=8", "train.num_processes"),  # 8 GPUs but one process
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.arch=vit_base_sax2", override])
    assert f"'{key}" in str(err.value)


def test_real_configs_are_valid(repo_root):
    for name in ("demo.yaml", "grid.yaml"):
        base, experiments = expand(f"{repo_root}/configs/{name}")
        assert len(experiments) == 6
        assert {e.config.clicks.mode for e in experiments} == {"multi", "single_pos", "single_any"}
        assert len({e.config.model.input_size for e in experiments}) == 2
    grid = {e.name: e.config for e in expand(f"{repo_root}/configs/grid.yaml")[1]}
    assert grid["input_size-512_mode-single_any"].model.arch == "vit_base_sax2"
    assert grid["input_size-512_mode-single_any"].model.input_size == 512


def test_grid_point_errors_name_point_and_key(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("model: {arch: tiny}\ngrid:\n  model.input_size: [224, 200]\n")
    with pytest.raises(ConfigError, match=r"input_size-200.*'model.input_size'"):
        expand(path)
    path.write_text("model: {arch: tiny}\ngrid:\n  clicks.mdoe: [multi]\n")
    with pytest.raises(ConfigError, match="'clicks.mdoe'"):
        expand(path)


def test_a_key_given_twice_on_the_command_line_is_refused():
    with pytest.raises(ConfigError, match="override key 'train.lr' is given more than once"):
        load_config(None, ["train.lr=0.1", "train.epochs=2", "train.lr=0.2"])
    with pytest.raises(ConfigError, match=r"the value of 'train.betas' is not valid YAML"):
        load_config(None, ["train.betas=[0.9, 0.999"])


def test_a_bare_no_is_read_as_the_word():
    """YAML 1.1 reads ``no`` as false; a string key takes it as written (SegNext: mixed_precision=no)."""
    assert load_config(None, ["train.mixed_precision=no"]).train.mixed_precision == "no"
    with pytest.raises(ConfigError, match="train.mixed_precision"):
        load_config(None, ["train.mixed_precision=yes"])
