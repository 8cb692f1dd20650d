"""``manifest.json``: what a shard directory holds, and reading a directory back.

Manifest layout (``version`` 1)::

    {"format": "cocolvis" | "cocolvis-build" | "davis" | "hqseg44k" | "folder",
     "split": "train" | "val", "version": 1, "samples_per_shard": int,
     "options": {...},                              # only for converters with settings
     "build": {...},                                # cocolvis-build: inputs' sha256 and rule counts
     "source": {"root": str, "files": int, "bytes": int,
                "sha256": {relative path: hex}},     # sha256 only for evaluation sets
     "shards": [{"name", "samples", "sha256", "bytes",
                 "totals": {"images", "instances", "stuff"},
                 "skipped": [...], "flagged": [...]}],
     "totals": {"images", "instances", "stuff", "skipped"},
     "skipped": [{"item", "reason", "detail", "kind"}], "flagged": [{"item", "flag"}],
     "skip_counts": {"bad_input": {reason: n}, "rule": {reason: n}}}

A skip's ``kind`` is ``bad_input`` (unreadable, corrupt, a link out of the
source root) or ``rule`` (the dataset's rules leave nothing, e.g. no objects);
only bad inputs count toward a conversion's ``max_skip_fraction``.

Shards are listed in source order; reading them in that order yields samples
in source order. The sha256 and per-shard sample counts are the only way to
notice damage webdataset reads silently (an overwritten tar header just ends a
shard early), so :func:`open_dataset` checks both. Training checks existence,
size and sha256 with a cache of shard hashes (:func:`shards.verify.verify_for_training`).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .checksum import sha256_file
from .converter import Converter
from .format import Sample, ShardFormatError, decode_sample
from .tar_reader import count_samples, iter_shard

__all__ = [
    "MANIFEST_NAME",
    "ManifestMismatchError",
    "ShardDataset",
    "build_manifest",
    "check_shard_files",
    "mismatch_error",
    "open_dataset",
    "read_manifest",
    "shard_paths",
    "verify_shards",
    "write_manifest",
]

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


class ManifestMismatchError(ValueError):
    """A shard differs from what the manifest recorded (missing, changed, truncated)."""


def build_manifest(
    converter: Converter, records: Sequence[dict[str, Any]], samples_per_shard: int | None = None
) -> dict[str, Any]:
    """Combine per-shard records (in shard order) into a manifest dict."""
    source: dict[str, Any] = {"root": os.path.abspath(converter.root), "files": 0, "bytes": 0}
    checksums: dict[str, str] = {}
    shards = []
    for rec in records:
        rec = dict(rec)
        part = rec.pop("source", {"files": 0, "bytes": 0})
        source["files"] += part["files"]
        source["bytes"] += part["bytes"]
        checksums.update(part.get("sha256", {}))
        shards.append(rec)
    for path in converter.extra_files():
        if path.is_file():
            source["files"] += 1
            source["bytes"] += path.stat().st_size
            if converter.checksum_sources:
                checksums[Path(os.path.relpath(path, converter.root)).as_posix()] = sha256_file(path)
    if converter.checksum_sources:
        source["sha256"] = dict(sorted(checksums.items()))
    skipped = [e for r in shards for e in r["skipped"]]
    flagged = [e for r in shards for e in r["flagged"]]
    totals = {k: sum(r["totals"][k] for r in shards) for k in ("images", "instances", "stuff")}
    totals["skipped"] = len(skipped)
    manifest: dict[str, Any] = {
        "format": converter.format,
        "split": converter.split,
        "version": MANIFEST_VERSION,
        "samples_per_shard": samples_per_shard,
    }
    if converter.options():
        manifest["options"] = converter.options()
    manifest.update(converter.summarize(shards))
    manifest.update({
        "source": source,
        "shards": shards,
        "totals": totals,
        "skipped": skipped,
        "flagged": flagged,
    })
    for rec in shards:
        rec.pop("extra", None)
    return manifest


def write_manifest(directory: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically (temp file in the same directory, then rename)."""
    path = Path(directory) / MANIFEST_NAME
    tmp = path.with_name(f".{MANIFEST_NAME}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / MANIFEST_NAME
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("version") != MANIFEST_VERSION:
        raise ValueError(f"{path}: unsupported manifest version {manifest.get('version')!r}")
    return manifest


def shard_paths(directory: str | os.PathLike[str], manifest: dict[str, Any] | None = None) -> list[str]:
    """Absolute shard paths in manifest (= source) order."""
    base = Path(directory).resolve()
    manifest = read_manifest(directory) if manifest is None else manifest
    return [str(base / rec["name"]) for rec in manifest["shards"]]


def check_shard_files(
    directory: str | os.PathLike[str], manifest: dict[str, Any], sha256: Callable[[Path], str] = sha256_file
) -> dict[str, str]:
    """What differs between the manifest's shards and the files: ``{shard name: problem}``.

    Checks existence, size (``bytes``) and ``sha256`` (computed with ``sha256``, which
    may be a cached lookup). Files in the directory that the manifest does not list are ignored.
    """
    problems: dict[str, str] = {}
    for rec in manifest["shards"]:
        path = Path(directory) / rec["name"]
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            problems[rec["name"]] = "missing"
            continue
        except OSError as e:
            problems[rec["name"]] = f"unreadable ({type(e).__name__}: {e})"
            continue
        if not path.is_file():
            problems[rec["name"]] = "not a regular file"
        elif "bytes" in rec and size != rec["bytes"]:
            how = "truncated?" if size < rec["bytes"] else "appended to?"
            problems[rec["name"]] = f"size {size} != manifest {rec['bytes']} ({how})"
        else:
            try:
                digest = sha256(path)
            except OSError as e:
                problems[rec["name"]] = f"unreadable ({type(e).__name__}: {e})"
                continue
            if digest != rec["sha256"]:
                problems[rec["name"]] = (f"sha256 {digest} differs from the manifest's {rec['sha256']} "
                                         "(file changed after it was written)")
    return problems


def mismatch_error(directory: str | os.PathLike[str], problems: dict[str, str], n_shards: int) -> ManifestMismatchError:
    """One error listing every bad shard of ``directory`` with what differs."""
    lines = [f"{Path(directory) / name}: {problem}" for name, problem in problems.items()]
    head = f"{directory}: {len(problems)} of {n_shards} shard(s) differ from {MANIFEST_NAME}"
    return ManifestMismatchError("\n  ".join([head] + lines))


def verify_shards(directory: str | os.PathLike[str], manifest: dict[str, Any] | None = None) -> None:
    """Check every shard's existence, size, sha256 and sample count; raise :class:`ManifestMismatchError`
    naming all shards that differ."""
    manifest = read_manifest(directory) if manifest is None else manifest
    problems = check_shard_files(directory, manifest)
    for rec in manifest["shards"]:
        if rec["name"] in problems:
            continue
        path = Path(directory) / rec["name"]
        try:
            count = count_samples(path)
        except (ShardFormatError, OSError) as e:
            problems[rec["name"]] = f"unreadable tar ({e})"
            continue
        if count != rec["samples"]:
            problems[rec["name"]] = f"{count} samples, the manifest says {rec['samples']}"
    if problems:
        raise mismatch_error(directory, problems, len(manifest["shards"]))


class ShardDataset:
    """The samples of a shard directory in source order; iterable any number of times.

    Each iteration opens one shard at a time and closes it when the shard is
    done or the iterator is closed/garbage-collected. A shard that is missing or
    ends early raises :class:`ManifestMismatchError` even without ``verify``;
    damaged tar data or a sample that does not decode raises :class:`ShardFormatError`.
    """

    def __init__(self, directory: str | os.PathLike[str], verify: bool = True) -> None:
        self.directory = Path(directory)
        self.manifest = read_manifest(directory)
        if verify:
            verify_shards(directory, self.manifest)

    def __len__(self) -> int:
        return int(self.manifest["totals"]["images"])

    def __iter__(self) -> Iterator[Sample]:
        for rec in self.manifest["shards"]:
            path = self.directory / rec["name"]
            count = 0
            try:
                with contextlib.closing(iter_shard(path)) as raws:
                    for raw in raws:
                        count += 1
                        yield decode_sample(raw)
            except FileNotFoundError as e:
                raise ManifestMismatchError(f"shard {path} listed in the manifest is missing ({e})") from e
            if count != rec["samples"]:
                raise ManifestMismatchError(f"shard {path}: ended after {count} samples, the manifest says {rec['samples']}")


def open_dataset(directory: str | os.PathLike[str], verify: bool = True) -> ShardDataset:
    """Open a converted shard directory; with ``verify`` all shards are checked first."""
    return ShardDataset(directory, verify=verify)
