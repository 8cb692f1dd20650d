"""Reading the raw samples of a shard tar: the one reader behind training, evaluation and checks.

A raw sample is a dict ``{"__key__": key, "__url__": path, suffix: bytes, ...}``
(member name -> bytes grouped by key, the form :func:`shards.format.decode_sample`
takes). Members are read and grouped by webdataset's tar iterators: the key is
a member's path up to the first dot of its basename, the suffix the rest
(lower-cased); directories and ``__*__`` metadata members are passed over.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator

import webdataset as wds

from .format import ShardFormatError

__all__ = ["count_samples", "iter_shard"]


def _message(exn: Exception) -> str:
    """The exception's own message, without what webdataset appends to its arguments."""
    if not exn.args:
        return ""
    return str(exn.args[0]).split(" @ <", 1)[0]


class _DamageHandler:
    """webdataset's exception handler for one shard: names the shard and the last sample read."""

    def __init__(self, url: str, on_damage: Callable[[ShardFormatError], Any] | None) -> None:
        self.url, self.on_damage = url, on_damage
        self.last_key: str | None = None

    def __call__(self, exn: Exception) -> bool:
        if isinstance(exn, ShardFormatError):  # raised below and passed on by webdataset's outer loop
            exn.args = exn.args[:1]
            raise exn
        where = f"after sample {self.last_key}" if self.last_key is not None else "before its first sample"
        err = ShardFormatError(f"shard {self.url}: damaged tar {where} ({type(exn).__name__}: {_message(exn)})")
        if self.on_damage is None:
            raise err from exn
        self.on_damage(err)
        return True


def iter_shard(path: str | os.PathLike[str],
               on_damage: Callable[[ShardFormatError], Any] | None = None) -> Iterator[dict[str, Any]]:
    """Yield the raw samples of one shard in file order.

    The file is opened here and closed when the iterator finishes or is closed or
    garbage-collected (webdataset's own URL opener leaves files open); a file that
    cannot be opened raises its ``OSError``. Damaged tar data raises
    :class:`ShardFormatError` naming the shard; with ``on_damage`` that error is
    passed to ``on_damage`` instead and reading goes on where the tar allows (a
    sample cut by the damage may then be yielded incomplete). A header overwritten
    with zeros reads as the end of the tar: only a count against the manifest notices it.
    """
    url = os.fspath(path)
    handler = _DamageHandler(url, on_damage)
    with open(url, "rb") as stream:
        members = wds.tariterators.tar_file_expander([{"url": url, "stream": stream}], handler=handler)
        for raw in wds.tariterators.group_by_keys(members, handler=handler):
            handler.last_key = raw["__key__"]
            yield raw


def count_samples(path: str | os.PathLike[str]) -> int:
    """Number of samples in one shard; damage raises :class:`ShardFormatError`."""
    return sum(1 for _ in iter_shard(path))
