import sys
import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope="session", autouse=True)
def shard_hash_cache(tmp_path_factory):
    """The tests' shard hash cache, not the user's (inherited by the trainings they start)."""
    os.environ["CLICKSEG_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def repo_root() -> str:
    return os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


@pytest.fixture(scope="session")
def builtin_dirs(tmp_path_factory):
    from builtin_data import small_builtin

    return small_builtin(tmp_path_factory.mktemp("builtin"))


@pytest.fixture(scope="session")
def demo_run(builtin_dirs, tmp_path_factory):
    """The demo model evaluated on the small built-in data (tests/trained_run.py)."""
    from trained_run import demo_runs

    return demo_runs(builtin_dirs, tmp_path_factory.mktemp("demo_run"))
