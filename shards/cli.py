"""``launch.py shard ...``: convert a source dataset to shards, or write synthetic sources.

    launch.py shard cocolvis --root DIR --out DIR [--split train|val]
    launch.py shard davis    --root DIR --out DIR
    launch.py shard hqseg44k --root DIR --out DIR [--split train|val] [--subsets NAME ...]
    launch.py shard folder   (--images DIR --masks DIR | --root DIR) --out DIR
    launch.py shard cocolvis-build --lvis JSON --panoptic-json JSON --panoptic-dir DIR --images DIR --out DIR
    launch.py shard synth    --out DIR [--train-images N] [--eval-images M] [--seed S] [--size PX]

Common options: ``--samples-per-shard N``, ``--workers N`` (0 = in-process),
``--max-skip-fraction F`` (bad inputs only; items left out by a dataset's rules do
not count), ``--follow-links`` (read source files that link outside the root; by
default they are skipped as ``outside_root``). Exit status 1 when too many items
were skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from .converter import Converter

__all__ = ["main"]


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _add_follow_links(p: argparse.ArgumentParser) -> None:
    p.add_argument("--follow-links", action="store_true",
                   help="read source files whose links lead outside the root (default: skip them as outside_root)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="launch.py shard", description="Convert datasets to webdataset shards.")
    sub = parser.add_subparsers(dest="command", required=True)
    for fmt, help_text in (
        ("cocolvis", "COCO+LVIS (RITM layout: <root>/<split>/images, masks, hannotation.pickle)"),
        ("davis", "DAVIS layout: <root>/img/*.jpg, <root>/gt/*.png"),
        ("hqseg44k", "HQSeg-44K: every subset of the split (DIS5K, ThinObject5K, COIFT, HRSOD, cascade_psp)"),
        ("folder", "any image folder + mask folder paired by file stem"),
    ):
        p = sub.add_parser(fmt, help=help_text, description=help_text)
        p.add_argument("--root", type=Path, required=fmt != "folder", help="dataset root")
        if fmt == "folder":
            p.add_argument("--images", type=Path, help="images folder (default <root>/img)")
            p.add_argument("--masks", type=Path, help="masks folder (default <root>/gt)")
        p.add_argument("--out", type=Path, required=True, help="output folder for shards and manifest.json")
        p.add_argument("--split", choices=("train", "val"), default="train" if fmt == "cocolvis" else "val")
        if fmt == "hqseg44k":
            p.add_argument("--subsets", nargs="+", default=(), metavar="NAME",
                           help="only these subsets of the split (default: all of them)")
        p.add_argument("--samples-per-shard", type=int, default=1000)
        p.add_argument("--workers", type=int, default=_default_workers(), help="processes (0 or 1: in-process)")
        p.add_argument("--max-skip-fraction", type=float, default=0.1,
                       help="fail if more items than this are skipped as bad input")
        p.add_argument("--only", type=int, metavar="K",
                       help="write only output shard K (one task of a job array); a run without it writes the manifest")
        _add_follow_links(p)
    from .cocolvis_build import BuildOptions

    help_text = "build COCO+LVIS as RITM did, from LVIS v1 json + COCO 2017 panoptic json/PNGs + COCO images"
    p = sub.add_parser("cocolvis-build", help=help_text, description=help_text)
    p.add_argument("--lvis", type=Path, required=True, help="lvis_v1_train.json (or _val)")
    p.add_argument("--panoptic-json", type=Path, required=True, help="panoptic_train2017.json (or val2017)")
    p.add_argument("--panoptic-dir", type=Path, required=True, help="folder of the panoptic PNGs")
    p.add_argument("--images", type=Path, required=True, help="COCO images of the same split (train2017/)")
    p.add_argument("--out", type=Path, required=True, help="output folder for shards and manifest.json")
    p.add_argument("--split", choices=("train", "val"), default="train")
    for name, value in BuildOptions().__dict__.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value,
                       help=f"RITM's value: {value}")
    p.add_argument("--samples-per-shard", type=int, default=1000)
    p.add_argument("--workers", type=int, default=_default_workers(), help="processes (0 or 1: in-process)")
    p.add_argument("--max-skip-fraction", type=float, default=0.1,
                   help="fail if more items than this are skipped as bad input")
    p.add_argument("--only", type=int, metavar="K", help="write only output shard K (one task of a job array)")
    _add_follow_links(p)
    p = sub.add_parser("synth", help="write small synthetic cocolvis (train) and davis sources")
    p.add_argument("--out", type=Path, required=True, help="writes <out>/cocolvis and <out>/davis")
    p.add_argument("--train-images", type=int, default=200)
    p.add_argument("--eval-images", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "synth":
        from .synthetic import write_cocolvis, write_davis

        write_cocolvis(args.out / "cocolvis", args.train_images, size=args.size, seed=args.seed, split="train")
        write_davis(args.out / "davis", args.eval_images, seed=args.seed, size=args.size)
        print(f"wrote {args.train_images} cocolvis train images to {args.out / 'cocolvis'} "
              f"and {args.eval_images} davis images to {args.out / 'davis'}")
        return 0

    from .converter import ConversionError
    from .writer import convert

    try:
        converter = _converter(args)
        convert(
            converter,
            args.out,
            workers=args.workers,
            max_skip_fraction=args.max_skip_fraction,
            samples_per_shard=args.samples_per_shard,
            progress=args.only is None,
            only=args.only,
        )
    except (ConversionError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def plan_shards(argv: Sequence[str]) -> tuple[int, Path]:
    """(number of output shards, output folder) of a conversion command line; lists the source once."""
    from .writer import work_items

    args = _parser().parse_args(argv)
    if args.command == "synth":
        raise ValueError("synth writes sources, not shards")
    return len(work_items(_converter(args), args.out, args.samples_per_shard)), args.out


def _converter(args: argparse.Namespace) -> "Converter":
    from .cocolvis import CocoLvisConverter
    from .folder import FolderConverter, HQSeg44kConverter

    if args.command == "cocolvis":
        return CocoLvisConverter(root=args.root, split=args.split, follow_links=args.follow_links)
    if args.command == "cocolvis-build":
        from .cocolvis_build import BuildOptions, CocoLvisBuildConverter

        opts = BuildOptions(**{k: getattr(args, k) for k in BuildOptions().__dict__})
        return CocoLvisBuildConverter(lvis_json=args.lvis, panoptic_json=args.panoptic_json,
                                      panoptic_dir=args.panoptic_dir, images=args.images, split=args.split, build=opts,
                                      follow_links=args.follow_links)
    if args.command == "hqseg44k":
        return HQSeg44kConverter(root=args.root, split=args.split, subsets=tuple(args.subsets),
                                 follow_links=args.follow_links)
    if args.command == "folder" and (args.images or args.masks):
        if not (args.images and args.masks):
            _parser().error("folder: give both --images and --masks (or --root with img/ and gt/)")
        return FolderConverter(images=args.images, masks=args.masks, root=args.root, split=args.split,
                               follow_links=args.follow_links)
    if args.root is None:
        _parser().error("folder: give --images and --masks, or --root with img/ and gt/")
    return FolderConverter(images=args.root / "img", masks=args.root / "gt", root=args.root, split=args.split,
                           format=args.command, follow_links=args.follow_links)


if __name__ == "__main__":
    sys.exit(main())
