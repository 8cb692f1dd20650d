#!/usr/bin/env python
"""clickseg command line: data, sweeps, evaluation, status and reports.

    python launch.py builtin-data [--out data/builtin]      # generate + shard the built-in datasets
    python launch.py shard FORMAT --root DIR --out DIR ...   # convert a dataset on disk to shards
    python launch.py shard FORMAT ... --submit CONFIG [executor.k=v]  # the same as a job array
    python launch.py sweep configs/demo.yaml [key=value ...] # run or submit a grid of experiments
    python launch.py eval RUN_DIR [--follow] [eval.k=v]      # evaluate every new checkpoint of a run
    python launch.py eval --checkpoint PATH --dataset NAME=SHARD_DIR [eval.k=v]  # one checkpoint
    python launch.py status [SWEEP_DIR] [--watch [--interval S]]  # where is my sweep
    python launch.py cancel SWEEP_DIR                        # stop all its jobs
    python launch.py report SWEEP_OR_RUN_DIRS... [--baseline EXP] [--gallery]  # tables, plots (+ gallery)
    python launch.py demo --checkpoint PATH [--images DIR | --dataset NAME=SHARD_DIR]  # click demo in the browser
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clickseg.config import ConfigError


def cmd_sweep(args: argparse.Namespace) -> int:
    from jobs.sweep import create_sweep, run_local, submit_slurm, write_index, read_index

    sweep_dir, experiments = create_sweep(args.grid, args.overrides, args.root)
    executor = experiments[0].config.executor.type
    print(f"sweep {sweep_dir.name}: {len(experiments)} experiments in {sweep_dir} ({executor} executor)")
    for e in experiments:
        print(f"  {e.name}")
    if executor == "slurm":
        index = read_index(sweep_dir)
        index["jobs"], index["arrays"] = submit_slurm(sweep_dir, experiments)
        write_index(sweep_dir, index)
        for array in index["arrays"]:
            ex = array["executor"]
            print(f"  array {array['train']} (eval {array['eval']}): {len(array['experiments'])} training(s), "
                  f"partition {ex['partition'] or '-'}, {ex['time_min']} min, {ex['nodes']} node(s), "
                  f"{ex['gpus_per_node']} GPU(s)/node, {ex['cpus_per_task']} CPU(s)/task")
        print(f"submitted; follow with: python launch.py status {sweep_dir} --watch")
        return 0
    from clickseg.report import write_report

    try:
        errors = run_local(sweep_dir, experiments)
    except KeyboardInterrupt:
        print(f"interrupted: every job was stopped; checkpoints and results so far are in {sweep_dir}",
              file=sys.stderr)
        return 130
    md = write_report(sweep_dir, [e.config.run_dir for e in experiments])
    print(f"\nmIoU@1 per experiment, epoch and dataset ({sweep_dir}/report.md, report.csv, miou.png):\n")
    print(md)
    for err in errors:
        print(f"FAILED: {err}", file=sys.stderr)
    return 1 if errors else 0


def cmd_eval(args: argparse.Namespace) -> int:
    overrides = [a for a in args.runs if "=" in a]
    runs = [a for a in args.runs if "=" not in a]
    bad = [o for o in overrides if not o.startswith("eval.")]
    if bad:
        raise ConfigError(f"evaluation overrides must set eval.* keys, got {bad}")
    if args.checkpoint:
        from clickseg.config import load_config
        from clickseg.eval.checkpoint_eval import evaluate_checkpoint

        if runs or not args.dataset:
            raise ConfigError("--checkpoint takes --dataset NAME=SHARD_DIR (one or more) and no run directories")
        datasets = {}
        for spec in args.dataset:
            name, sep, path = spec.partition("=")
            if not sep or not name or not path:
                raise ConfigError(f"--dataset {spec!r}: expected NAME=SHARD_DIR")
            datasets[name] = path
        cfg = load_config(None, overrides)
        out = args.out or str(Path("runs/eval") / Path(args.checkpoint).stem)
        evaluate_checkpoint(args.checkpoint, datasets, cfg.eval, out, args.device)
        print(f"results and per-instance IoUs in {out}")
        return _gallery(out, [out], None, args, datasets) if args.gallery else 0
    from clickseg.eval.evaluate import evaluate_run, follow_run

    if not runs:
        raise ConfigError("launch.py eval needs RUN_DIR(s), or --checkpoint PATH --dataset NAME=SHARD_DIR")
    for run in runs:
        follow_run(run, device=args.device, overrides=overrides) if args.follow else \
            evaluate_run(run, device=args.device, overrides=overrides)
    failed = [_gallery(run, [run], None, args) for run in runs] if args.gallery else []
    return max(failed, default=0)


def _gallery(out: str | Path, runs: list, baseline: str | None, args: argparse.Namespace,
             datasets: dict[str, str] | None = None) -> int:
    from clickseg.gallery import write_galleries

    pages, errors = write_galleries(out, runs, baseline, args.gallery_k, args.device, datasets)
    if pages:
        print(f"gallery: {len(pages)} page(s), {Path(out) / 'gallery' / 'index.html'}")
    for e in errors:
        print(f"not written: {e}", file=sys.stderr)
    return 1 if errors else 0


def _run_dirs(paths: list[str]) -> list[Path]:
    """Experiment directories named directly or listed in a sweep's index."""
    from jobs.sweep import read_index

    out = []
    for p in map(Path, paths):
        if (p / "sweep.json").exists():
            out += [Path(e["run_dir"]) for e in read_index(p)["experiments"]]
        else:
            out.append(p)
    return out


def cmd_report(args: argparse.Namespace) -> int:
    from clickseg.report import write_report

    out = Path(args.out or args.paths[0])
    print(write_report(out, _run_dirs(args.paths), baseline=args.baseline))
    # The report is written first and stands without its gallery; a page that could not be made
    # is named and makes the exit status 1, as for eval --gallery.
    return _gallery(out, _run_dirs(args.paths), args.baseline, args) if args.gallery else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from clickseg.app.server import serve

    return serve(args)


def _latest_sweep(args: argparse.Namespace) -> Path | None:
    if args.sweep:
        return Path(args.sweep)
    found = sorted(Path(args.root).glob("*/sweep.json"), key=lambda p: p.stat().st_mtime)
    return found[-1].parent if found else None


def cmd_status(args: argparse.Namespace) -> int:
    from jobs.status import format_status, sweep_rows

    sweep = _latest_sweep(args)
    if sweep is None:
        print(f"no sweep under {args.root}")
        return 1
    if args.watch:
        from jobs.watch import watch

        return watch(sweep, args.interval)
    rows = sweep_rows(sweep)
    print(format_status(sweep, rows))
    return 1 if any(r["state"] == "FAILED" for r in rows) else 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from jobs.status import cancel_sweep

    try:
        ids = cancel_sweep(args.sweep)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"cancelled {len(ids)} job(s) of {args.sweep}: {' '.join(ids)}")
    return 0


def cmd_resubmit(args: argparse.Namespace) -> int:
    from jobs.sweep import resubmit

    sweep = Path(args.sweep)
    try:
        names = resubmit(sweep, args.experiment or None)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not names:
        print(f"nothing to resubmit in {sweep}: every training completed or still has a job")
        return 0
    print(f"{len(names)} experiment(s) resubmitted, each resuming from its last checkpoint: {', '.join(names)}")
    print(f"follow with: python launch.py status {sweep} --watch")
    return 0


def cmd_builtin_data(args: argparse.Namespace) -> int:
    from shards.builtin import prepare_builtin

    prepare_builtin(args.out, train_images=args.train_images, eval_images=args.eval_images,
                    seed=args.seed, size=args.size)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "shard" and "--submit" in argv:
        from jobs.convert import main as submit_main
        return submit_main(argv[1:])
    if argv and argv[0] == "shard":
        from shards.cli import main as shard_main
        return shard_main(argv[1:]) or 0
    parser = argparse.ArgumentParser(prog="launch.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sweep", help="expand a grid and run (local) or submit (slurm) it")
    p.add_argument("grid")
    p.add_argument("overrides", nargs="*", help="key=value applied to every grid point")
    p.add_argument("--root", default="runs/sweeps", help="where sweep directories are created")
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("eval", help="evaluate every checkpoint of a run not evaluated yet, or one checkpoint")
    p.add_argument("runs", nargs="*", metavar="RUN_DIR | eval.key=value",
                   help="run directories, and eval.* overrides of the protocol (e.g. eval.protocol=random)")
    p.add_argument("--follow", action="store_true", help="keep evaluating new checkpoints until training ends")
    p.add_argument("--checkpoint", help="a clickseg or SegNext checkpoint file to evaluate instead of a run")
    p.add_argument("--dataset", action="append", default=[], metavar="NAME=SHARD_DIR",
                   help="with --checkpoint: a sharded evaluation set (repeatable)")
    p.add_argument("--out", help="with --checkpoint: results directory (default runs/eval/<checkpoint stem>)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--gallery", action="store_true", help="also write the gallery of the evaluated results")
    p.add_argument("--gallery-k", type=int, default=8, metavar="K", help="instances per gallery list")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("report", help="table and plot of results")
    p.add_argument("paths", nargs="+", help="sweep or run directories")
    p.add_argument("--baseline", help="experiment name to compare against")
    p.add_argument("--out", help="directory for report.md/csv/png (default: the first path)")
    p.add_argument("--gallery", action="store_true",
                   help="also write the gallery (gallery/ under --out): loads the checkpoints and predicts the "
                        "shown instances again, so it needs torch and takes minutes for large models on a CPU")
    p.add_argument("--gallery-k", type=int, default=8, metavar="K", help="instances per gallery list")
    p.add_argument("--device", default="cpu", help="where the gallery's instances are predicted again")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("demo", help="interactive click demo of a checkpoint in the browser (local web app)")
    p.add_argument("--checkpoint", required=True, help="a clickseg or SegNext checkpoint file")
    p.add_argument("--images", help="a folder of images to choose from")
    p.add_argument("--dataset", action="append", default=[], metavar="NAME=SHARD_DIR",
                   help="a sharded set whose instances (with ground truth) to choose from (repeatable)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("status", help="state of every experiment of a sweep")
    p.add_argument("sweep", nargs="?")
    p.add_argument("--root", default="runs/sweeps")
    p.add_argument("--watch", action="store_true",
                   help="one line per experiment, refreshed until every job has ended (Ctrl-C stops watching)")
    p.add_argument("--interval", type=float, default=10.0, metavar="S", help="with --watch: seconds between refreshes")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("cancel", help="stop every job of a sweep (scancel, or a local sweep's processes)")
    p.add_argument("sweep")
    p.set_defaults(func=cmd_cancel)
    p = sub.add_parser("resubmit", help="submit again the experiments whose jobs ended before their training "
                                        "completed (each resumes from its last checkpoint)")
    p.add_argument("sweep")
    p.add_argument("--experiment", action="append", help="only this experiment (repeatable)")
    p.set_defaults(func=cmd_resubmit)
    p = sub.add_parser("builtin-data", help="generate the built-in datasets and convert them to shards")
    p.add_argument("--out", default="data/builtin")
    p.add_argument("--train-images", type=int, default=600)
    p.add_argument("--eval-images", type=int, default=60)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_builtin_data)
    p = sub.add_parser("shard", help="convert a dataset to shards (see: launch.py shard --help)")
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
