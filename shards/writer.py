"""Conversion of a source dataset into shards, one independent work item per shard.

A :class:`~shards.converter.Converter` lists and loads the source items (the
contract, skip reasons and link rules are in :mod:`shards.converter`).
:func:`work_items` splits the listing into chunks of ``samples_per_shard``;
:func:`convert_shard` turns one chunk into one tar and returns its record;
:func:`convert` runs all chunks (in a process pool or in-process) and writes
``manifest.json``. The work items are picklable and self-contained, so a job
array can run :func:`convert_shard` per task and finish with
:func:`shards.manifest.build_manifest`.

Skipped items are recorded with their reason and kind; only ``bad_input``
skips count toward ``max_skip_fraction``; the manifest's ``skip_counts`` holds
``{kind: {reason: count}}``. An item whose files resolve outside the
converter's source roots is skipped unread as ``outside_root`` (the detail
names each link and its target) unless the converter's ``follow_links`` is set.

Reruns resume: next to each finished shard :func:`convert_shard` writes
``.records/<shard>.json`` (its record plus a fingerprint of the work item: the
item listing, the source files' sizes and modification times, the converter's
options). :func:`convert` keeps a shard whose record, fingerprint and sha256 all
match and redoes the others, so an interrupted run or a job array's tasks can be
finished by running the same command again.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import webdataset as wds

from .checksum import sha256_file
from .converter import SKIP_KINDS, ConversionError, Converter, SkipItem, links_outside, resolved_roots
from .format import encode_sample
from .manifest import build_manifest, write_manifest

__all__ = [
    "WorkItem",
    "convert",
    "convert_shard",
    "finished_record",
    "skip_counts",
    "skip_kind",
    "work_items",
]


@dataclass
class WorkItem:
    """One output shard: the converter, the shard path and its slice of the listing."""

    converter: Converter
    out_dir: str
    name: str
    start: int  # global index of the first item (sample keys are global indices)
    items: list[Any]


def work_items(converter: Converter, out_dir: str | os.PathLike[str], samples_per_shard: int = 1000) -> list[WorkItem]:
    """Split the converter's listing into shards named ``<format>-<split>-<k:06d>.tar``."""
    if samples_per_shard < 1:
        raise ValueError("samples_per_shard must be >= 1")
    items = converter.list_items()
    prefix = f"{converter.format}-{converter.split}"
    return [
        WorkItem(converter, os.fspath(out_dir), f"{prefix}-{k:06d}.tar", start, items[start : start + samples_per_shard])
        for k, start in enumerate(range(0, len(items), samples_per_shard))
    ]


def _account_sources(converter: Converter, files: Sequence[Path], source: dict[str, Any]) -> None:
    for path in files:
        try:
            size = path.stat().st_size
        except OSError:
            continue
        source["files"] += 1
        source["bytes"] += size
        if converter.checksum_sources:
            rel = Path(os.path.relpath(path, converter.root)).as_posix()
            source["sha256"][rel] = sha256_file(path)


RECORDS_DIR = ".records"


def fingerprint(work: WorkItem) -> str:
    """sha256 over what determines a shard's content (never the absolute root)."""
    conv = work.converter
    roots = resolved_roots(conv)
    h = hashlib.sha256()
    h.update(json.dumps([conv.format, conv.split, work.name, work.start, conv.options()], sort_keys=True, default=str).encode())
    for item in work.items:
        h.update(repr(item).encode())
        files = conv.item_files(item)
        outside = set() if conv.follow_links else {p for p, _ in links_outside(conv, files, roots)}
        for path in files:
            if path in outside:
                h.update(f"|outside:{os.path.realpath(path)}".encode())
                continue
            try:
                st = path.stat()
                h.update(f"|{st.st_size}:{st.st_mtime_ns}".encode())
            except OSError:
                h.update(b"|missing")
    return h.hexdigest()


def _record_path(work: WorkItem) -> Path:
    return Path(work.out_dir) / RECORDS_DIR / f"{work.name}.json"


def finished_record(work: WorkItem) -> dict[str, Any] | None:
    """The record of an already written shard for this work item, or None when it must be (re)done."""
    try:
        record = json.loads(_record_path(work).read_text(encoding="utf-8"))
        shard = Path(work.out_dir) / work.name
        if record.pop("fingerprint") != fingerprint(work) or record["bytes"] != shard.stat().st_size:
            return None
        return record if sha256_file(shard) == record["sha256"] else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_record(work: WorkItem, record: dict[str, Any]) -> None:
    path = _record_path(work)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({**record, "fingerprint": fingerprint(work)}), encoding="utf-8")
    os.replace(tmp, path)


def convert_shard(work: WorkItem) -> dict[str, Any]:
    """Write one shard atomically, save its record under ``.records/`` and return the record.

    The record holds ``name, samples, sha256, bytes, totals{images, instances,
    stuff}, skipped[{item, reason, detail, kind}], flagged[{item, flag}]`` plus
    ``source{files, bytes, sha256?}``, which :func:`build_manifest` folds into
    the manifest's source summary.
    """
    conv = work.converter
    out = Path(work.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final = out / work.name
    tmp = out / f".{work.name}.tmp-{os.getpid()}"
    totals = {"images": 0, "instances": 0, "stuff": 0}
    skipped: list[dict[str, str]] = []
    flagged: list[dict[str, str]] = []
    source: dict[str, Any] = {"files": 0, "bytes": 0, "sha256": {}}
    counts: Counter[str] = Counter()
    roots = resolved_roots(conv)
    try:
        with open(tmp, "wb") as fh:
            with wds.TarWriter(fh, encoder=False, mtime=0) as tar:
                for offset, item in enumerate(work.items):
                    name = conv.item_name(item)
                    files = conv.item_files(item)
                    outside = [] if conv.follow_links else links_outside(conv, files, roots)
                    if outside:  # not read, not hashed, not counted as source
                        detail = "; ".join(f"{_rel(conv, p)} -> {t}" for p, t in outside)
                        skipped.append({"item": name, "reason": "outside_root", "detail": detail, "kind": "bad_input"})
                        continue
                    _account_sources(conv, files, source)
                    try:
                        s = conv.load(item)
                        raw = encode_sample(s.image_bytes, s.ext, s.layers, s.objects, s.source, s.flags, index=work.start + offset)
                    except SkipItem as e:
                        skipped.append({"item": name, "reason": e.reason, "detail": e.detail, "kind": e.kind})
                        counts.update(e.counts)
                        continue
                    except Exception as e:  # a bug or an unforeseen input; count it, keep going
                        detail = f"{type(e).__name__}: {e}"
                        skipped.append({"item": name, "reason": "unexpected_error", "detail": detail, "kind": "bad_input"})
                        continue
                    tar.write(raw)
                    totals["images"] += 1
                    totals["stuff"] += sum(1 for o in s.objects if o.get("is_stuff"))
                    totals["instances"] += sum(1 for o in s.objects if not o.get("is_stuff"))
                    flagged.extend({"item": name, "flag": f} for f in s.flags)
                    counts.update(s.counts)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    if not conv.checksum_sources:
        del source["sha256"]
    record = {
        "name": work.name,
        "samples": totals["images"],
        "sha256": sha256_file(final),
        "bytes": final.stat().st_size,
        "totals": totals,
        "skipped": skipped,
        "flagged": flagged,
        "source": source,
    }
    if counts:
        record["extra"] = {"counts": dict(sorted(counts.items()))}
    _write_record(work, record)
    return record


def _rel(converter: Converter, path: Path) -> str:
    return Path(os.path.relpath(path, converter.root)).as_posix()


def skip_kind(entry: dict[str, Any]) -> str:
    """The kind of a manifest ``skipped`` entry (entries written before kinds existed: ``bad_input``)."""
    return entry.get("kind") or "bad_input"


def skip_counts(skipped: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """``{kind: {reason: count}}`` of manifest ``skipped`` entries, every kind present."""
    out: dict[str, Counter[str]] = {kind: Counter() for kind in SKIP_KINDS}
    for e in skipped:
        out[skip_kind(e)][e["reason"]] += 1
    return {kind: dict(sorted(c.items())) for kind, c in out.items()}


MAX_NAMED_LINKS = 20


def _report(manifest: dict[str, Any], n_items: int) -> str:
    by_kind = skip_counts(manifest["skipped"])
    n_bad, n_rule = (sum(by_kind[k].values()) for k in SKIP_KINDS)
    lines = [
        f"{manifest['format']} {manifest['split']}: {manifest['totals']['images']} samples, "
        f"{manifest['totals']['instances']} instances, {manifest['totals']['stuff']} stuff "
        f"in {len(manifest['shards'])} shards; {len(manifest['skipped'])} of {n_items} items skipped "
        f"({n_bad} bad input, {n_rule} by the dataset's rules)"
    ]
    for kind, label in (("bad_input", "bad input"), ("rule", "rule")):
        for reason, count in by_kind[kind].items():
            example = next(e["item"] for e in manifest["skipped"] if e["reason"] == reason and skip_kind(e) == kind)
            lines.append(f"  skipped {reason} ({label}): {count} (e.g. {example})")
    for flag, count in sorted(Counter(e["flag"] for e in manifest["flagged"]).items()):
        example = next(e["item"] for e in manifest["flagged"] if e["flag"] == flag)
        lines.append(f"  flagged {flag}: {count} (e.g. {example})")
    links = [e for e in manifest["skipped"] if e["reason"] == "outside_root"]
    if links:
        lines.append("  links outside the source root, not read (--follow-links reads them):")
        lines += [f"    {e['item']}: {e['detail']}" for e in links[:MAX_NAMED_LINKS]]
        if len(links) > MAX_NAMED_LINKS:
            lines.append(f"    ... and {len(links) - MAX_NAMED_LINKS} more (listed in manifest.json)")
    return "\n".join(lines)


def convert(
    converter: Converter,
    out_dir: str | os.PathLike[str],
    workers: int = 0,
    max_skip_fraction: float = 0.1,
    samples_per_shard: int = 1000,
    progress: bool = True,
    only: int | None = None,
) -> dict[str, Any] | None:
    """Convert a whole source dataset to ``out_dir`` and return the manifest.

    ``workers`` <= 1 runs in-process, otherwise a spawn-based process pool.
    Finished shards of an earlier run with the same inputs are kept (see the
    module docstring). After writing ``manifest.json`` a report by skip reason
    is printed and :class:`ConversionError` is raised when more than
    ``max_skip_fraction`` of the items were skipped as bad input (skips by
    the dataset's rules do not count). ``only=k`` converts just
    work item ``k`` (one task of a job array) and returns None; a final run
    without ``only`` then writes the manifest.
    """
    from tqdm import tqdm

    work = work_items(converter, out_dir, samples_per_shard)
    n_items = sum(len(w.items) for w in work)
    if n_items == 0:
        raise ConversionError(f"no source items found for {converter.format} under {converter.root}")
    if only is not None:
        if not 0 <= only < len(work):
            raise ConversionError(f"work item {only} does not exist ({len(work)} shards of {samples_per_shard} items)")
        if finished_record(work[only]) is None:
            convert_shard(work[only])
        return None
    records: list[dict[str, Any] | None] = [finished_record(w) for w in work]
    todo = [i for i, r in enumerate(records) if r is None]
    if progress and len(todo) < len(work):
        print(f"keeping {len(work) - len(todo)} finished shard(s) in {out_dir}")
    bar = tqdm(total=sum(len(work[i].items) for i in todo), unit="img", desc=f"{converter.format} {converter.split}",
               disable=not progress)
    try:
        if workers <= 1:
            for i in todo:
                records[i] = convert_shard(work[i])
                bar.update(len(work[i].items))
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futures = {pool.submit(convert_shard, work[i]): i for i in todo}
                for fut in as_completed(futures):
                    i = futures[fut]
                    records[i] = fut.result()
                    bar.update(len(work[i].items))
    finally:
        bar.close()
    manifest = build_manifest(converter, [r for r in records if r is not None], samples_per_shard)
    manifest["skip_counts"] = skip_counts(manifest["skipped"])
    write_manifest(out_dir, manifest)
    print(_report(manifest, n_items))
    n_bad = sum(manifest["skip_counts"]["bad_input"].values())
    n_rule = sum(manifest["skip_counts"]["rule"].values())
    if n_bad > max_skip_fraction * n_items:
        rules = f"; {n_rule} more left out by the dataset's rules" if n_rule else ""
        raise ConversionError(
            f"{n_bad} of {n_items} items skipped as bad input ({n_bad / n_items:.1%} > {max_skip_fraction:.1%}{rules}); "
            f"see {Path(out_dir) / 'manifest.json'}"
        )
    return manifest
