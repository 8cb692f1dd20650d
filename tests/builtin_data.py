"""Small built-in datasets shared by the tests (made once per test session)."""
import hashlib
import io
import json
import os
import tarfile
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


def corrupt_copy(src: Path, dst: Path) -> str:
    """Copy a shard directory, replacing the image of the 2nd sample of every shard with garbage."""
    dst.mkdir()
    manifest = json.loads((src / "manifest.json").read_text())
    for shard in manifest["shards"]:
        with tarfile.open(src / shard["name"]) as tin, tarfile.open(dst / shard["name"], "w") as tout:
            keys: list[str] = []
            for member in tin.getmembers():
                data = tin.extractfile(member).read()
                key = member.name.split(".", 1)[0]
                if key not in keys:
                    keys.append(key)
                if len(keys) == 2 and member.name.endswith((".jpg", ".png")):
                    data = b"\xff\xd8\xff" + os.urandom(200)
                    member.size = len(data)
                tout.addfile(member, io.BytesIO(data))
        # Shards written with a bad sample inside (their manifest agrees): verification passes,
        # decoding fails for that sample.
        shard["bytes"] = (dst / shard["name"]).stat().st_size
        shard["sha256"] = hashlib.sha256((dst / shard["name"]).read_bytes()).hexdigest()
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return manifest["shards"][0]["name"]
