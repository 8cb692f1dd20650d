"""How fast ``launch.py sweep`` submits a large grid to Slurm, and that it is ONE array.

Submits a 48-point grid (4 input sizes x 3 click modes x 4 learning rates) of
configs/grid.yaml to the Slurm cluster on PATH with a begin time one hour
ahead (nothing runs), prints the table, then cancels the jobs. The reference
in the same run is the validation alone (expanding and checking all 48 points),
so the ratio shows what creating the sweep directory and ``sbatch`` cost.

    bash jobs/cluster/local_slurm.sh up && python bench/sweep_submit.py
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jobs.grid import expand  # noqa: E402


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        data = yaml.safe_load((REPO / "configs" / "grid.yaml").read_text())
        data["grid"] = {"model.input_size": [448, 512, 768, 1024], "clicks.mode": ["multi", "single_pos", "single_any"],
                        "train.lr": [1e-5, 2e-5, 5e-5, 1e-4]}
        data["executor"].update(partition="debug", gpus_per_node=0, mem_gb=0, cpus_per_task=1,
                                additional={"begin": "now+3600"})
        grid = Path(tmp) / "grid48.yaml"
        grid.write_text(yaml.safe_dump(data))
        t0 = time.perf_counter()
        _, experiments = expand(grid)
        t_validate = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, str(REPO / "launch.py"), "sweep", str(grid), "--root", f"{tmp}/sweeps"],
                             capture_output=True, text=True, cwd=REPO)
        t_sweep = time.perf_counter() - t0
        if out.returncode != 0:
            print(out.stdout, out.stderr, file=sys.stderr)
            return 1
        (sweep_dir,) = Path(tmp, "sweeps").iterdir()
        jobs = json.loads((sweep_dir / "sweep.json").read_text())["jobs"]
        arrays = sorted({j["train"].split("_")[0] for j in jobs.values()})
        subprocess.run([sys.executable, str(REPO / "launch.py"), "cancel", str(sweep_dir)], capture_output=True, cwd=REPO)
    print(f"| what | points | seconds | training arrays |")
    print(f"|---|---|---|---|")
    print(f"| validate the grid (reference) | {len(experiments)} | {t_validate:.2f} | - |")
    print(f"| launch.py sweep (validate + sweep dir + sbatch), whole process | {len(jobs)} | {t_sweep:.2f} | {len(arrays)} |")
    ok = t_sweep < 3.0 and len(arrays) == 1
    print(f"\ntarget: under 3 s and one array -> {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
