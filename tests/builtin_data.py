"""Small built-in datasets shared by the tests (made once per test session)."""
from pathlib import Path

from shards.builtin import prepare_builtin


def small_builtin(root: Path, train_images: int = 120, eval_images: int = 12) -> dict[str, Path]:
    return prepare_builtin(root, train_images=train_images, eval_images=eval_images, seed=0, size=224,
                           samples_per_shard=20)


def tiny_overrides(dirs: dict[str, Path], run_dir: Path, **extra) -> list[str]:
    """Overrides for a quick tiny-model run on the small built-in data."""
    base = {
        "model.arch": "tiny", "model.input_size": 224, "run_dir": str(run_dir), "name": run_dir.name,
        "data.train": str(dirs["cocolvis-train"]), "data.eval": "{davis: %s}" % dirs["davis"],
        "data.shuffle_buffer": 8, "data.min_object_area": 100,
        "train.epochs": 2, "train.samples_per_epoch": 16, "train.batch_size": 4, "train.lr": 1e-3,
        "train.log_every": 1, "train.num_vis": 2, "eval.n_clicks": 3,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]
