"""submitit executors built from the ``executor`` section of a config."""
from __future__ import annotations

from pathlib import Path

import submitit

from clickseg.config import ExecutorConfig


def make_executor(cfg: ExecutorConfig, folder: str | Path, tasks_per_node: int = 1,
                  name: str = "clickseg") -> submitit.Executor:
    """A local or Slurm executor writing its logs under ``folder/%j``.

    The cluster is always named explicitly: submitit's auto-detection picks
    Slurm whenever ``srun`` is on PATH.
    """
    cluster = "local" if cfg.type == "local" else "slurm"
    executor = submitit.AutoExecutor(folder=str(Path(folder) / "%j"), cluster=cluster,
                                     slurm_max_num_timeout=cfg.max_requeues)
    params = dict(name=name, timeout_min=cfg.time_min, cpus_per_task=cfg.cpus_per_task,
                  nodes=cfg.nodes, tasks_per_node=tasks_per_node)
    if cfg.type == "slurm":
        if cfg.gpus_per_node:
            params["gpus_per_node"] = cfg.gpus_per_node
        if cfg.mem_gb:
            params["mem_gb"] = cfg.mem_gb
        if cfg.partition:
            params["slurm_partition"] = cfg.partition
        params["slurm_array_parallelism"] = cfg.array_parallelism
        params["slurm_signal_delay_s"] = cfg.signal_delay_s
        extra = dict(cfg.additional)
        if cfg.account:
            extra["account"] = cfg.account
        if cfg.qos:
            extra["qos"] = cfg.qos
        if extra:
            params["slurm_additional_parameters"] = extra
    executor.update_parameters(**params)
    return executor
