"""Import SegNext's own code from a user's checkout, for the side-by-side benchmarks.

``import_segnext(DIR)`` puts the checkout's ``segnext/`` folder (the one holding ``isegm``) on
``sys.path``. SegNext's head imports ``mmcv.cnn.ConvModule``; when mmcv is not installed, a
stand-in with the same computation (1x1 conv with bias, then ReLU, attribute ``conv``) is put on
the path. ``isegm.data.datasets`` (albumentations and the dataset readers) is replaced by an
empty module: the model, the predictor and the trainer's step do not need it. Nothing of SegNext
is copied here.
"""
from __future__ import annotations

import sys
import tempfile
import types
from pathlib import Path

CONV_MODULE_STANDIN = '''
import torch.nn as nn


class ConvModule(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, bias=True)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.activate(self.conv(x))
'''


def segnext_package_dir(path: str | Path) -> Path:
    """The folder holding ``isegm``: ``path`` itself or its ``segnext/`` (a checkout's root)."""
    path = Path(path).expanduser()
    for candidate in (path, path / "segnext"):
        if (candidate / "isegm").is_dir():
            return candidate
    raise SystemExit(f"{path}: no isegm/ here or in {path / 'segnext'}; pass a SegNext checkout")


def import_segnext(path: str | Path) -> None:
    try:
        import mmcv.cnn  # noqa: F401
    except ImportError:
        shim = Path(tempfile.mkdtemp()) / "mmcv"
        (shim / "cnn").mkdir(parents=True)
        (shim / "__init__.py").write_text("")
        (shim / "cnn" / "__init__.py").write_text(CONV_MODULE_STANDIN)
        sys.path.insert(0, str(shim.parent))
    sys.path.insert(0, str(segnext_package_dir(path)))
    datasets = types.ModuleType("isegm.data.datasets")
    datasets.__getattr__ = lambda name: None
    sys.modules["isegm.data.datasets"] = datasets


def segnext_twin(model):
    """SegNext's ``PlainVitModel`` holding the weights of a clickseg ``SegNext`` (its key names via
    ``clickseg.model.segnext_compat``), in the same train/eval mode. Call after import_segnext."""
    from isegm.model.is_plainvit_model import PlainVitModel

    from clickseg.model.segnext_compat import segnext_config, to_segnext_keys

    params = {k: v["value"] for k, v in segnext_config(model.arch, model.input_size)["params"].items()}
    twin = PlainVitModel(**params)
    twin.load_state_dict(to_segnext_keys(model.state_dict()))
    return twin.train(model.training)
