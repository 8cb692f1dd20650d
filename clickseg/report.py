"""Reports across experiments: table, deltas to a baseline with significance, config diffs, plots.

``write_report(out_dir, run_dirs, baseline)`` writes ``report.md``, ``report.csv`` and the PNG
plots (``miou.png``: mIoU@1 against epoch; ``iou_vs_clicks.png``; ``miou_vs_k.png`` when a run
has a scaling curve) and returns the Markdown. A delta compares a row with the baseline's row
of the same dataset and protocol (same epoch, else the baseline's last epoch); its interval and
significance come from a paired bootstrap over the instances both rows share, with draws
averaged within an instance (same protocol label, so the same click seeds).
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import yaml

from clickseg.eval.stats import bootstrap_ci, paired_bootstrap
from clickseg.rundir import CONFIG_FILE, read_results

IGNORED_CONFIG_KEYS = ("name", "run_dir")


def collect(run_dirs: list[str | Path]) -> list[dict]:
    """All result rows of the given runs, each with the ``run_dir`` it came from."""
    rows = []
    for run in run_dirs:
        for r in read_results(run):
            rows.append({**r, "run_dir": str(run)})
    return rows


def latest(rows: list[dict]) -> dict[tuple, dict]:
    """(experiment, epoch, dataset, protocol) -> row; a later row of the same key wins."""
    out: dict[tuple, dict] = {}
    for r in rows:
        out[(r["experiment"], r["epoch"], r["dataset"], r["protocol"])] = r
    return out


def first_click_ious(row: dict) -> dict[str, float]:
    """Instance name -> IoU after the first click (averaged over draws)."""
    names = row.get("instance_names") or []
    ious = row.get("ious") or []
    return {n: v[0] for n, v in zip(names, ious)}


def miou1_ci(row: dict) -> tuple[float, float] | None:
    ci = (row.get("ci") or {}).get("mIoU@1")
    if ci is not None:
        return tuple(ci)
    values = list(first_click_ious(row).values())
    return bootstrap_ci(values) if values else None


def compare(row: dict, ref: dict) -> dict | None:
    """Paired bootstrap of mIoU@1(row) - mIoU@1(ref) over the instances both rows hold; None when
    they share none. ``delta`` is the difference of the rows' own mIoU@1 when every instance
    is shared, else of the means over the shared instances (``paired`` says how many)."""
    a, b = first_click_ious(row), first_click_ious(ref)
    shared = [n for n in a if n in b]
    if not shared:
        return None
    out = paired_bootstrap([a[n] for n in shared], [b[n] for n in shared])
    if len(shared) == len(a) == len(b):
        out["delta"] = row["metrics"]["mIoU@1"] - ref["metrics"]["mIoU@1"]
    out["paired"] = len(shared)
    return out


def baseline_row(rows: dict[tuple, dict], baseline: str, epoch: int, dataset: str, protocol: str) -> dict | None:
    ref = rows.get((baseline, epoch, dataset, protocol))
    if ref is None:
        same = [v for k, v in rows.items() if k[0] == baseline and k[2] == dataset and k[3] == protocol]
        ref = max(same, key=lambda v: v["epoch"]) if same else None
    return ref


def table(rows: list[dict], baseline: str | None = None) -> list[dict]:
    """One record per (experiment, epoch, dataset, protocol) (scaling-curve rows excluded):
    mIoU@1 with its 95% CI, NoC@90 and, with a baseline, the delta, its paired CI, p and
    whether it is significant (the CI excludes 0)."""
    by_key = latest(rows)
    out = []
    for (exp, epoch, dataset, protocol), r in sorted(by_key.items(), key=lambda kv: kv[0]):
        if r.get("scaling_curve"):
            continue
        ci = miou1_ci(r)
        rec = {"experiment": exp, "epoch": epoch, "dataset": dataset, "protocol": protocol,
               "instances": r["instances"], "mIoU@1": r["metrics"].get("mIoU@1"),
               "mIoU@1 lo": None if ci is None else ci[0], "mIoU@1 hi": None if ci is None else ci[1],
               "NoC@90": r["metrics"].get("NoC@90")}
        if baseline is not None:
            ref = baseline_row(by_key, baseline, epoch, dataset, protocol)
            cmp = None if ref is None else compare(r, ref)
            rec.update({"baseline epoch": None if ref is None else ref["epoch"],
                        "delta mIoU@1": None if cmp is None else cmp["delta"],
                        "delta lo": None if cmp is None else cmp["lo"],
                        "delta hi": None if cmp is None else cmp["hi"],
                        "p": None if cmp is None else cmp["p"],
                        "significant": None if cmp is None else ("yes" if cmp["significant"] else "no")})
        out.append(rec)
    return out


def scaling_table(rows: list[dict]) -> list[dict]:
    """mIoU@1 against K (scaling-curve rows): one record per row."""
    out = []
    for (exp, epoch, dataset, protocol), r in sorted(latest(rows).items(), key=lambda kv: kv[0]):
        if not r.get("scaling_curve"):
            continue
        ci = miou1_ci(r)
        out.append({"experiment": exp, "epoch": epoch, "dataset": dataset, "protocol": protocol,
                    "K": r["options"]["scaling"], "mIoU@1": r["metrics"].get("mIoU@1"),
                    "mIoU@1 lo": None if ci is None else ci[0], "mIoU@1 hi": None if ci is None else ci[1],
                    "s/image": r.get("seconds_per_image")})
    return sorted(out, key=lambda x: (x["experiment"], x["dataset"], x["epoch"], x["K"]))


# --------------------------------------------------------------------------- config differences


def flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in data.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def run_configs(rows: list[dict]) -> dict[str, dict]:
    """Experiment -> flattened config.yaml of its run directory (runs without one are left out)."""
    out = {}
    for r in rows:
        path = Path(r["run_dir"]) / CONFIG_FILE
        if r["experiment"] not in out and path.exists():
            try:
                out[r["experiment"]] = flatten(yaml.safe_load(path.read_text()) or {})
            except yaml.YAMLError as e:
                raise ValueError(f"{path} is not valid YAML: {e}") from None
    return out


def config_diff(cfg: dict, base: dict) -> dict[str, tuple]:
    """Key -> (baseline value, value) for every flattened key that differs (name, run_dir ignored)."""
    keys = sorted((set(cfg) | set(base)) - set(IGNORED_CONFIG_KEYS))
    return {k: (base.get(k), cfg.get(k)) for k in keys if base.get(k) != cfg.get(k)}


def config_diffs(rows: list[dict], baseline: str) -> dict[str, dict[str, tuple]]:
    configs = run_configs(rows)
    if baseline not in configs:
        return {}
    return {exp: config_diff(cfg, configs[baseline]) for exp, cfg in sorted(configs.items()) if exp != baseline}


def diff_text(diff: dict[str, tuple]) -> str:
    return "; ".join(f"{k}: {a} -> {b}" for k, (a, b) in diff.items()) or "(same config)"


# --------------------------------------------------------------------------- output


def _num(v, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:+.4f}" if signed else f"{v:.4f}"
    return str(v)


def _interval(lo, hi, signed: bool = False) -> str:
    return "" if lo is None or hi is None else f"[{_num(lo, signed)}, {_num(hi, signed)}]"


def to_markdown(records: list[dict]) -> str:
    """Markdown table of :func:`table` or :func:`scaling_table` records; intervals in brackets."""
    if not records:
        return "(no results yet)\n"
    cols = []
    for c in records[0]:
        if c in ("mIoU@1 lo", "delta lo"):
            cols.append("95% CI")
        elif c not in ("mIoU@1 hi", "delta hi"):
            cols.append(c)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in records:
        cells = []
        for c in r:
            if c == "mIoU@1 lo":
                cells.append(_interval(r["mIoU@1 lo"], r["mIoU@1 hi"]))
            elif c == "delta lo":
                cells.append(_interval(r["delta lo"], r["delta hi"], signed=True))
            elif c in ("mIoU@1 hi", "delta hi"):
                continue
            elif c == "p":
                cells.append("" if r[c] is None else f"{r[c]:.3f}")
            else:
                cells.append(_num(r[c], signed=c.startswith("delta")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(records: list[dict]) -> str:
    buf = io.StringIO()
    if records:
        w = csv.DictWriter(buf, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)
    return buf.getvalue()


def _figure(n_panels: int):
    """A figure with ``n_panels`` axes side by side (no pyplot: no global state, no backend)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6 * max(1, n_panels), 4))
    axes = fig.subplots(1, max(1, n_panels), squeeze=False)
    return fig, axes[0]


def _integer_ticks(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _save(fig, axes, path) -> None:
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def miou_figure(records: list[dict], metric: str = "mIoU@1"):
    """``metric`` against epoch (integer ticks), one line per (experiment, protocol), one panel
    per dataset: (figure, axes)."""
    datasets = sorted({r["dataset"] for r in records})
    fig, axes = _figure(len(datasets))
    for ax, ds in zip(axes, datasets):
        for exp, protocol in sorted({(r["experiment"], r["protocol"]) for r in records if r["dataset"] == ds}):
            pts = sorted((r["epoch"], r[metric]) for r in records if r["experiment"] == exp and r["dataset"] == ds
                         and r["protocol"] == protocol and r[metric] is not None)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"{exp} ({protocol})")
        ax.set(title=ds, xlabel="epoch", ylabel=metric)
        _integer_ticks(ax)
    return fig, axes


def plot(records: list[dict], path: str | Path, metric: str = "mIoU@1") -> None:
    """PNG of :func:`miou_figure`."""
    _save(*miou_figure(records, metric), path)


def click_curves(rows: list[dict]) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """{dataset: {label: (clicks k, mIoU@k)}} at each (experiment, protocol)'s last epoch."""
    last: dict[tuple, dict] = {}
    for r in latest(rows).values():
        key = (r["dataset"], r["experiment"], r["protocol"])
        if not r.get("scaling_curve") and (key not in last or r["epoch"] >= last[key]["epoch"]):
            last[key] = r
    curves: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for (ds, exp, protocol), r in sorted(last.items()):
        n = r.get("n_clicks") or 0
        ks = [k for k in range(1, n + 1) if f"mIoU@{k}" in r["metrics"]]
        if ks:
            curves.setdefault(ds, {})[f"{exp} ({protocol}, epoch {r['epoch']})"] = (
                ks, [r["metrics"][f"mIoU@{k}"] for k in ks])
    return curves


def plot_clicks(rows: list[dict], path: str | Path) -> None:
    """PNG of mIoU@k against k (:func:`click_curves`), one panel per dataset."""
    curves = click_curves(rows)
    fig, axes = _figure(len(curves))
    for ax, (ds, by_label) in zip(axes, sorted(curves.items())):
        for label, (ks, values) in by_label.items():
            ax.plot(ks, values, marker=".", label=label)
        ax.set(title=ds, xlabel="clicks", ylabel="mIoU")
        _integer_ticks(ax)
    _save(fig, axes, path)


def plot_scaling(records: list[dict], path: str | Path) -> None:
    """PNG of mIoU@1 against K (log2 axis) from :func:`scaling_table` records, last epoch of each run."""
    last_epoch: dict[tuple, int] = {}
    for r in records:
        key = (r["experiment"], r["dataset"])
        last_epoch[key] = max(last_epoch.get(key, r["epoch"]), r["epoch"])
    datasets = sorted({r["dataset"] for r in records})
    fig, axes = _figure(len(datasets))
    for ax, ds in zip(axes, datasets):
        for exp in sorted({r["experiment"] for r in records if r["dataset"] == ds}):
            pts = sorted((r["K"], r["mIoU@1"], r["s/image"]) for r in records if r["experiment"] == exp
                         and r["dataset"] == ds and r["epoch"] == last_epoch[(exp, ds)])
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                    label=f"{exp} (epoch {last_epoch[(exp, ds)]})")
            for k, m, s in pts:
                if s is not None:
                    ax.annotate(f"{s:.2f}s", (k, m), fontsize=6, textcoords="offset points", xytext=(2, 4))
        ax.set_xscale("log", base=2)
        ax.set(title=f"{ds}: mIoU@1 against K (s/image noted)", xlabel="K (prompt variants)", ylabel="mIoU@1")
    _save(fig, axes, path)


def markdown_report(rows: list[dict], baseline: str | None = None) -> tuple[str, list[dict]]:
    """(Markdown text, table records) of the rows."""
    if baseline is not None and not any(r["experiment"] == baseline for r in rows):
        known = sorted({r["experiment"] for r in rows})
        raise ValueError(f"baseline experiment {baseline!r} has no results; experiments: {known}")
    records = table(rows, baseline)
    parts = []
    if baseline is not None:
        parts.append(f"Baseline: **{baseline}**. delta = mIoU@1 minus the baseline's (same dataset and protocol, "
                     "same epoch or its last); 95% CI and p from a paired bootstrap over the same instances "
                     "and click draws; significant when the CI excludes 0.\n")
    parts.append(to_markdown(records))
    if baseline is not None:
        diffs = config_diffs(rows, baseline)
        if diffs:
            parts.append(f"\nConfig keys that differ from {baseline}:\n")
            parts += [f"- {exp}: {diff_text(d)}" for exp, d in diffs.items()]
            parts.append("")
    scaling = scaling_table(rows)
    if scaling:
        parts.append("\nInference-time scaling: mIoU@1 against K (prompt variants per click), seconds per image:\n")
        parts.append(to_markdown(scaling))
    return "\n".join(parts), records


def write_report(out_dir: str | Path, run_dirs: list[str | Path], baseline: str | None = None) -> str:
    """Write report.md, report.csv and the plots into ``out_dir``; return the Markdown."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = collect(run_dirs)
    md, records = markdown_report(rows, baseline)
    if baseline is not None:
        diffs = config_diffs(rows, baseline)
        for rec in records:
            rec["config diff"] = "" if rec["experiment"] == baseline else diff_text(diffs.get(rec["experiment"], {}))
    (out_dir / "report.md").write_text(md)
    (out_dir / "report.csv").write_text(to_csv(records))
    if records:
        plot(records, out_dir / "miou.png")
        plot_clicks(rows, out_dir / "iou_vs_clicks.png")
    scaling = scaling_table(rows)
    if scaling:
        plot_scaling(scaling, out_dir / "miou_vs_k.png")
    return md
