"""The live view of a sweep: one line per experiment (:func:`format_line`) from the rows of
:func:`jobs.status.sweep_rows`. On a terminal the block of lines is redrawn in place; into a
file or a pipe the lines are printed plainly, with the time: an experiment's line when it
changes (state, evaluation state, an epoch or an evaluation done), and each ``every_s`` a
summary line and the lines of the experiments under way.
Used by the local sweep (``jobs.sweep.run_local``) and ``launch.py status --watch``.
"""
from __future__ import annotations

import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable, TextIO

from jobs.status import ENDED_STATES, ended, sweep_rows


def duration(seconds: float) -> str:
    """``45s``, ``3m05s``, ``2h03m``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def format_line(row: dict, name_width: int = 0) -> str:
    """One experiment: name, training state, epoch (the one in progress while running, else the
    epochs completed) and step of the whole training, speed, ETA, evaluation state and the
    latest mIoU@1 per evaluation dataset with the epoch it belongs to."""
    parts = [f"{row['experiment']:<{name_width}s}", f"{row['state']:<9s}"]
    if row["state"] not in ("PENDING", "NOT RUN", "STARTING") or row["step"]:
        epochs = row.get("epochs")
        epoch = row["epoch"] + 1 if row["state"] == "RUNNING" and epochs and row["epoch"] < epochs else row["epoch"]
        parts.append(f"ep {epoch}/{epochs or '?'}")
        parts.append(f"step {row['step']}/{row['total_steps'] or '?'}")
    if row.get("samples_per_s"):
        parts.append(f"{row['samples_per_s']:.0f} samples/s")
    elif row.get("steps_per_s"):
        parts.append(f"{row['steps_per_s']:.2f} steps/s")
    if row.get("eta_s") is not None:
        parts.append(f"ETA {duration(row['eta_s'])}")
    if row["eval_state"] != "-":
        parts.append(f"eval {row['eval_state']}")
    if row["mIoU@1"]:
        parts.append("mIoU@1 " + ", ".join(f"{ds} {v:.4f} (ep {row['eval_epoch'].get(ds, '?')})"
                                           for ds, v in row["mIoU@1"].items()))
    return "  ".join(parts).rstrip()


_ORDER = ("RUNNING", "STARTING", "PENDING", "COMPLETED", "FAILED")


def summary(rows: list[dict]) -> str:
    """Count of experiments per training state, e.g. ``2 RUNNING, 3 PENDING, 1 COMPLETED, 1
    evaluating`` (the last: trainings ended whose evaluation job still runs)."""
    counts = Counter(r["state"] for r in rows)
    states = [s for s in _ORDER if s in counts] + [s for s in counts if s not in _ORDER]
    parts = [f"{counts[s]} {s}" for s in states]
    evaluating = sum(1 for r in rows if r["state"] in ENDED_STATES and r["eval_state"] not in ENDED_STATES)
    if evaluating:
        parts.append(f"{evaluating} evaluating")
    return ", ".join(parts)


def final_line(sweep_name: str, rows: list[dict], seconds: float | None = None) -> str:
    took = f" in {duration(seconds)}" if seconds is not None else ""
    return f"sweep {sweep_name} done{took}: {summary(rows)}"


def _key(row: dict) -> tuple:
    return row["state"], row["eval_state"], row["epoch"], tuple(sorted(row["eval_epoch"].items()))


class View:
    """Shows successive row lists on ``stream``: redrawn in place on a terminal, plain lines
    otherwise (see the module docstring)."""

    def __init__(self, stream: TextIO, every_s: float = 30.0, tty: bool | None = None,
                 clock: Callable[[], float] = time.time, title: str = "") -> None:
        self.stream, self.every_s, self.clock, self.title = stream, every_s, clock, title
        self.tty = stream.isatty() if tty is None else tty
        self._keys: dict[str, tuple] = {}
        self._last_all: float | None = None
        self._drawn = 0  # lines of the block on the terminal
        self._lines: list[str] = []

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _block(self, rows: list[dict]) -> list[str]:
        width = max((len(r["experiment"]) for r in rows), default=0)
        head = f"{self.title + ': ' if self.title else ''}{summary(rows)}  ({time.strftime('%H:%M:%S')})"
        return [head] + [format_line(r, width) for r in rows]

    def _redraw(self) -> None:
        cols = max(20, shutil.get_terminal_size().columns - 1)  # no wrapping: the cursor moves by lines
        up = f"\x1b[{self._drawn}A\r" if self._drawn else ""  # cursor up to the block's first line
        self._write(up + "".join(f"\x1b[2K{line[:cols]}\n" for line in self._lines))
        self._drawn = len(self._lines)

    def update(self, rows: list[dict]) -> None:
        keys = {r["experiment"]: _key(r) for r in rows}
        if self.tty:
            self._lines = self._block(rows)
            self._redraw()
        else:
            now = self.clock()
            changed = [r for r in rows if self._keys.get(r["experiment"]) != keys[r["experiment"]]]
            stamp = time.strftime("%H:%M:%S", time.localtime(now))
            lines = []
            if self._last_all is None or now - self._last_all >= self.every_s:
                lines.append(f"{stamp} {self.title + ': ' if self.title else ''}{summary(rows)}")
                show = [r for r in rows if r in changed or not (ended(r) or r["state"] == "PENDING")]
                self._last_all = now
            else:
                show = changed
            width = max((len(r["experiment"]) for r in rows), default=0)
            lines += [f"{stamp} {format_line(r, width)}" for r in show]
            if lines:
                self._write("".join(line + "\n" for line in lines))
        self._keys = keys

    def message(self, text: str) -> None:
        """A line of its own: above the block on a terminal (which is drawn again below it)."""
        if self.tty and self._drawn:
            self._write(f"\x1b[{self._drawn}A\r\x1b[J{text}\n")  # clear the block, write, draw it below
            self._drawn = 0
            self._redraw()
        else:
            self._write(text + "\n")

    def close(self, text: str) -> None:
        """The last line, below the block."""
        self._write(text + "\n")
        self._drawn = 0


def watch(sweep_dir: str | Path, interval_s: float = 10.0, stream: TextIO | None = None,
          every_s: float = 30.0) -> int:
    """Show the sweep until all its experiments have ended (or Ctrl-C): 0 when none failed,
    1 when one did, 130 on Ctrl-C."""
    sweep = Path(sweep_dir)
    view = View(stream or sys.stdout, every_s=every_s, title=f"sweep {sweep.name}")
    try:
        while True:
            rows = sweep_rows(sweep)
            view.update(rows)
            if all(ended(r) for r in rows):
                break
            time.sleep(interval_s)
    except KeyboardInterrupt:
        view.close("stopped watching; the jobs go on")
        return 130
    view.close(final_line(sweep.name, rows))
    return 1 if any(r["state"] == "FAILED" or r["eval_state"] == "FAILED" for r in rows) else 0
