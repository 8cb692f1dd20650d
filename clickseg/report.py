"""Tables and plots of results across experiments (experiment x epoch x dataset)."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from clickseg.eval.evaluate import read_results


def collect(run_dirs: list[str | Path]) -> list[dict]:
    """All result rows of the given runs, without per-instance data."""
    rows = []
    for run in run_dirs:
        for r in read_results(run):
            rows.append({k: v for k, v in r.items() if k not in ("ious", "instance_names")})
    return rows


def table(rows: list[dict], metrics: tuple[str, ...] = ("mIoU@1", "NoC@90"),
          baseline: str | None = None) -> list[dict]:
    """One record per (experiment, epoch, dataset, protocol), with the delta of mIoU@1 to
    ``baseline``'s row of the same epoch, dataset and protocol (or its last epoch when absent)."""
    latest: dict[tuple, dict] = {}
    for r in rows:  # later rows of the same key win (re-evaluation)
        latest[(r["experiment"], r["epoch"], r["dataset"], r["protocol"])] = r
    base_rows = {k: v for k, v in latest.items() if k[0] == baseline}
    out = []
    for (exp, epoch, dataset, protocol), r in sorted(latest.items()):
        rec = {"experiment": exp, "epoch": epoch, "dataset": dataset, "protocol": protocol,
               "instances": r["instances"]}
        for m in metrics:
            rec[m] = r["metrics"].get(m)
        if baseline is not None:
            ref = base_rows.get((baseline, epoch, dataset, protocol))
            if ref is None:
                same = [v for k, v in base_rows.items() if k[2] == dataset and k[3] == protocol]
                ref = max(same, key=lambda v: v["epoch"]) if same else None
            rec["delta mIoU@1"] = None if ref is None else r["metrics"]["mIoU@1"] - ref["metrics"]["mIoU@1"]
        out.append(rec)
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:+.4f}" if v < 0 else f"{v:.4f}"
    return "" if v is None else str(v)


def to_markdown(records: list[dict]) -> str:
    if not records:
        return "(no results yet)\n"
    cols = list(records[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in records]
    return "\n".join(lines) + "\n"


def to_csv(records: list[dict]) -> str:
    buf = io.StringIO()
    if records:
        w = csv.DictWriter(buf, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)
    return buf.getvalue()


def plot(records: list[dict], path: str | Path, metric: str = "mIoU@1") -> None:
    """PNG of ``metric`` against epoch, one line per experiment, one panel per dataset."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in records})
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(6 * max(1, len(datasets)), 4), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        for exp in sorted({r["experiment"] for r in records}):
            pts = sorted((r["epoch"], r[metric]) for r in records
                         if r["experiment"] == exp and r["dataset"] == ds and r[metric] is not None)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=exp)
        ax.set(title=ds, xlabel="epoch", ylabel=metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(out_dir: str | Path, run_dirs: list[str | Path], baseline: str | None = None) -> str:
    """Write report.md, report.csv and miou.png into ``out_dir``; return the Markdown table."""
    out_dir = Path(out_dir)
    records = table(collect(run_dirs), baseline=baseline)
    md = to_markdown(records)
    (out_dir / "report.md").write_text(md)
    (out_dir / "report.csv").write_text(to_csv(records))
    if records:
        plot(records, out_dir / "miou.png")
    return md
