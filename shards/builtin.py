"""The built-in datasets: synthetic sources in the real on-disk layouts, converted like real data.

``prepare_builtin(out)`` writes ``out/source/cocolvis`` (training, COCO+LVIS
layout) and ``out/source/davis`` (evaluation, DAVIS layout) with the seeded
generator, then converts both with the same converters real datasets use into
``out/shards/cocolvis-train`` and ``out/shards/davis``. Nothing is redone when
the shards for the same parameters already exist.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from shards.cocolvis import CocoLvisConverter
from shards.folder import davis_converter
from shards.synthetic import write_cocolvis, write_davis
from shards.writer import convert


def prepare_builtin(out: str | Path, train_images: int = 600, eval_images: int = 60, seed: int = 0,
                    size: int = 256, samples_per_shard: int = 100, workers: int = 0) -> dict[str, Path]:
    """Generate and shard the built-in data; return the shard directories by name."""
    out = Path(out)
    params = {"train_images": train_images, "eval_images": eval_images, "seed": seed, "size": size,
              "samples_per_shard": samples_per_shard}
    stamp = out / "builtin.json"
    dirs = {"cocolvis-train": out / "shards" / "cocolvis-train", "davis": out / "shards" / "davis"}
    if stamp.exists() and json.loads(stamp.read_text()) == params and all(
            (d / "manifest.json").exists() for d in dirs.values()):
        print(f"built-in data ready in {out}")
        return dirs
    for d in (out / "source", out / "shards"):
        shutil.rmtree(d, ignore_errors=True)
    # Training and evaluation draw from different seeds: the evaluation set is held out.
    write_cocolvis(out / "source" / "cocolvis", train_images, size=size, seed=seed, split="train")
    write_davis(out / "source" / "davis", eval_images, seed=seed + 1, size=size)
    convert(CocoLvisConverter(root=out / "source" / "cocolvis", split="train"), dirs["cocolvis-train"],
            workers=workers, samples_per_shard=samples_per_shard)
    convert(davis_converter(out / "source" / "davis"), dirs["davis"], workers=workers,
            samples_per_shard=samples_per_shard)
    stamp.write_text(json.dumps(params))
    return dirs
