"""``launch.py shard ... --submit CONFIG``: a conversion as a job array, one task per output shard.

The array's tasks each write one shard (``launch.py shard ... --only K``); a last job, started
only after every task succeeded (``afterok``; cancelled if one fails), checks all shards and
writes the manifest. Tasks run on one node without GPUs whatever the config's training resources
(``executor.cpus_per_task``, partition, account, qos, time limit and extra options apply). A task
of a rerun finds its shard finished (matching record) and keeps it.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from clickseg.config import ConfigError, load_config
from jobs.executor import make_executor
from shards.converter import ConversionError


def shard_task(argv: list[str], index: int | None) -> int:
    """Run one conversion command line in a job (``index``: the shard, None: the manifest)."""
    from shards.cli import main

    code = main(argv + (["--only", str(index)] if index is not None else []))
    if code:
        raise RuntimeError(f"launch.py shard {' '.join(argv)}{'' if index is None else f' --only {index}'} "
                           f"failed with exit status {code}")
    return code


def submit_conversion(argv: list[str], config: str | None, overrides: list[str]) -> dict:
    """Submit the conversion ``argv`` (the ``launch.py shard`` arguments) with the config's executor."""
    from shards.cli import plan_shards

    if any(not o.startswith("executor.") for o in overrides):
        raise ConfigError("launch.py shard --submit: only executor.* overrides apply to a conversion")
    cfg = load_config(config, overrides) if config else load_config(None, overrides)
    resources = dataclasses.replace(cfg.executor, nodes=1, gpus_per_node=0)
    n, out = plan_shards(argv)
    if n == 0:
        raise ConversionError(f"launch.py shard {' '.join(argv)}: no source items, nothing to submit")
    logs = Path(out) / ".submitit"
    executor = make_executor(resources, logs, name="shards")
    argv = [*argv, "--workers", "0"]  # one process per task (the last --workers wins)
    tasks = executor.map_array(shard_task, [argv] * n, list(range(n)))
    array_id = tasks[0].job_id.split("_")[0]
    if resources.type == "slurm":
        after = dataclasses.replace(resources, additional={**resources.additional, "dependency": f"afterok:{array_id}",
                                                           "kill-on-invalid-dep": "yes"})
        final = make_executor(after, logs, name="shards-manifest")
    else:  # the local executor has no dependencies: wait here for the tasks
        final = make_executor(resources, logs, name="shards-manifest")
        for t in tasks:
            t.result()
    manifest_job = final.submit(shard_task, argv, None)
    info = {"shards": n, "array": array_id, "manifest_job": manifest_job.job_id, "logs": str(logs)}
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "jobs.json").write_text(json.dumps(info, indent=1))
    return info


def main(argv: list[str]) -> int:
    """Split ``--submit CONFIG`` and ``executor.key=value`` from the conversion's own arguments."""
    i = argv.index("--submit")
    config = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("-") and "=" not in argv[i + 1] else None
    rest = argv[:i] + argv[i + (2 if config else 1):]
    overrides = [a for a in rest if a.startswith("executor.") or ("=" in a and a.split("=")[0].count(".") == 1
                                                                  and not a.startswith(("-", "/", ".")))]
    conversion = [a for a in rest if a not in overrides]
    try:
        info = submit_conversion(conversion, config, overrides)
    except (ConfigError, ConversionError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"submitted {info['shards']} shard task(s) as array {info['array']} and the manifest job "
          f"{info['manifest_job']} (after all of them); logs in {info['logs']}")
    return 0
