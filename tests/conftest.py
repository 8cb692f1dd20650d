import sys
import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope="session")
def repo_root() -> str:
    return os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


@pytest.fixture(scope="session")
def builtin_dirs(tmp_path_factory):
    from builtin_data import small_builtin

    return small_builtin(tmp_path_factory.mktemp("builtin"))
