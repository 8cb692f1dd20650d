"""The local 2-node Slurm cluster for tests (``jobs/cluster/local_slurm.sh up --nodes 2``).

Import the fixture into a test module and use the environment it returns::

    from multinode_cluster import slurm_2node  # noqa: F401  (a pytest fixture)

    def test_two_nodes(slurm_2node, monkeypatch, tmp_path):
        subprocess.run(["srun", "-N2", "hostname"], env={**os.environ, **slurm_2node}, ...)
        monkeypatch.setenv("SLURM_CONF", slurm_2node["SLURM_CONF"])  # for submitit in this process

``slurm_2node`` is ``{"SLURM_CONF": ...}``: without it, Slurm commands (and submitit) reach the
single-node cluster. Jobs inherit it, so ``srun`` inside them stays on this cluster. Nodes are
``clickseg-node1`` and ``clickseg-node2`` (partition ``debug``); they see the same filesystem,
so jobs can run this project's python. The fixture starts the cluster if it is not up (``up`` is
idempotent: well under a second when it already runs) and skips, with the reason, where that is
impossible. Bound every wait: without accounting a submitit result can block forever; and use a
fresh submitit folder (``tmp_path``): job ids restart at 1 when the cluster's state is wiped.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "jobs" / "cluster" / "local_slurm.sh"
NODES = 2
UP_TIMEOUT_S = 600  # the first `up` may install the Debian packages

_unavailable: dict[int, str] = {}  # nodes -> why the cluster could not start (tried once per session)


def multinode_env(nodes: int = NODES) -> dict[str, str]:
    """Start the local ``nodes``-node cluster if needed; return the environment its clients need.

    Raises ``RuntimeError`` saying why when it cannot run here.
    """
    if nodes in _unavailable:
        raise RuntimeError(_unavailable[nodes])
    try:
        return _start(nodes)
    except RuntimeError as e:
        _unavailable[nodes] = str(e)
        raise


def _start(nodes: int) -> dict[str, str]:
    if not sys.platform.startswith("linux"):
        raise RuntimeError("the local multi-node Slurm cluster needs Linux namespaces")
    if os.geteuid() != 0:
        raise RuntimeError("the local multi-node Slurm cluster needs root (network namespaces, bridge, daemons)")
    missing = [t for t in ("nsenter", "unshare", "flock") if shutil.which(t) is None]
    if missing:
        raise RuntimeError(f"the local multi-node Slurm cluster needs {', '.join(missing)} (util-linux)")
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        raise RuntimeError("Slurm is not installed and apt-get is not available to install it")
    cmd = ["bash", str(SCRIPT)]
    try:
        out = subprocess.run([*cmd, "up", "--nodes", str(nodes)], capture_output=True, text=True,
                             timeout=UP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the local {nodes}-node Slurm cluster did not start within {UP_TIMEOUT_S} s") from None
    if out.returncode != 0:
        raise RuntimeError(f"the local {nodes}-node Slurm cluster could not be started: {out.stderr[-1500:]}")
    printed = subprocess.run([*cmd, "env", "--nodes", str(nodes)], capture_output=True, text=True, timeout=60,
                             check=True).stdout
    env = {}
    for line in printed.splitlines():  # "export NAME=VALUE"
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value
    if not env.get("SLURM_CONF"):
        raise RuntimeError(f"`local_slurm.sh env --nodes {nodes}` printed no SLURM_CONF: {printed!r}")
    return env


@pytest.fixture(scope="session")
def slurm_2node() -> dict[str, str]:
    """``{"SLURM_CONF": ...}`` of the running local 2-node cluster; skips (saying why) if it cannot run."""
    try:
        return multinode_env(NODES)
    except RuntimeError as e:
        pytest.skip(str(e))
