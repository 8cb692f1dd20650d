"""Checking a shard set against its manifest before training, with a cache of shard hashes.

:func:`verify_for_training` checks that every shard the manifest lists exists
and has the recorded size and sha256; files the manifest does not list are
ignored. A shard's sha256 is computed once and kept in a JSON cache keyed by
the file's real path, size and modification time (ns), so an unchanged set is
not read again on the next run; a rewritten or touched file is hashed anew.

The cache is ``$CLICKSEG_CACHE_DIR/shard_hashes.json``, else
``$XDG_CACHE_HOME/clickseg/shard_hashes.json``, else
``~/.cache/clickseg/shard_hashes.json``. It is written atomically; one that
cannot be read is ignored and rebuilt, one that cannot be written is only
logged. A file changed in place with its size and modification time restored
is not noticed (as with any size/mtime cache).
"""
from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checksum import sha256_file
from .manifest import ManifestMismatchError, check_shard_files, mismatch_error, read_manifest

__all__ = ["CACHE_ENV", "CACHE_FILE", "HashCache", "ShardSetCheck", "default_cache_path", "verify_for_training"]

log = logging.getLogger(__name__)

CACHE_ENV = "CLICKSEG_CACHE_DIR"
CACHE_FILE = "shard_hashes.json"
CACHE_VERSION = 1


def default_cache_path() -> Path:
    """``shard_hashes.json`` in ``$CLICKSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/clickseg``, else ``~/.cache/clickseg``."""
    if os.environ.get(CACHE_ENV):
        base = Path(os.environ[CACHE_ENV])
    elif os.environ.get("XDG_CACHE_HOME"):
        base = Path(os.environ["XDG_CACHE_HOME"]) / "clickseg"
    else:
        base = Path.home() / ".cache" / "clickseg"
    return base / CACHE_FILE


def _read_entries(path: Path) -> dict[str, dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not (isinstance(data, dict) and data.get("version") == CACHE_VERSION
                and isinstance(data.get("entries"), dict)):
            raise ValueError("not a shard hash cache")
        return {k: v for k, v in data["entries"].items() if isinstance(v, dict)}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        log.warning("ignoring unreadable shard hash cache %s (%s); it is rebuilt", path, e)
        return {}


class HashCache:
    """sha256 of files, remembered by (real path, size, mtime_ns) in a JSON file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.entries = _read_entries(self.path)
        self.new: dict[str, dict[str, Any]] = {}
        self.hashed = 0  # files read and hashed
        self.reused = 0  # hashes taken from the cache

    def sha256(self, path: str | os.PathLike[str]) -> str:
        real = os.path.realpath(path)
        st = os.stat(real)
        entry = self.new.get(real) or self.entries.get(real)
        if (entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns
                and isinstance(entry.get("sha256"), str)):
            self.reused += 1
            return entry["sha256"]
        digest = sha256_file(Path(real))
        self.hashed += 1
        after = os.stat(real)
        if (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns):  # not written to meanwhile
            self.new[real] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        return digest

    def save(self) -> None:
        """Merge the new hashes into the cache file (re-read first: other processes may have added some)."""
        if not self.new:
            return
        entries = _read_entries(self.path)
        entries.update(self.new)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{socket.gethostname()}-{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"version": CACHE_VERSION, "entries": entries}, f)
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("could not write the shard hash cache %s (%s); shards are hashed again next time", self.path, e)
            try:
                tmp.unlink()
            except OSError:
                pass
            return
        self.entries, self.new = entries, {}


@dataclass(frozen=True)
class ShardSetCheck:
    """A verified shard set: what was checked and how many shards were hashed or found in the cache."""

    directory: str
    shards: int
    samples: int
    bytes: int
    hashed: int
    cached: int

    def __str__(self) -> str:
        return (f"{self.directory}: {self.shards} shard(s), {self.samples} samples, {self.bytes / 2**20:.1f} MiB "
                f"match the manifest ({self.hashed} hashed, {self.cached} from the hash cache)")


def verify_for_training(directory: str | os.PathLike[str],
                        cache_path: str | os.PathLike[str] | None = None) -> ShardSetCheck:
    """Check every shard listed in ``directory``'s manifest: exists, size and sha256 equal.

    Raises :class:`shards.ManifestMismatchError` naming the directory and every bad shard with
    what differs. ``cache_path``: the hash cache file (default: :func:`default_cache_path`).
    """
    manifest = read_manifest(directory)
    records = manifest["shards"]
    if not records:
        raise ManifestMismatchError(f"{directory}: the manifest lists no shards")
    cache = HashCache(default_cache_path() if cache_path is None else cache_path)
    problems = check_shard_files(directory, manifest, sha256=cache.sha256)
    cache.save()  # hashes of good and bad shards alike: a bad shard is not re-read either
    if problems:
        raise mismatch_error(directory, problems, len(records))
    return ShardSetCheck(str(directory), len(records), sum(int(r["samples"]) for r in records),
                         sum(int(r.get("bytes", 0)) for r in records), cache.hashed, cache.reused)
