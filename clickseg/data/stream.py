"""An endless, shuffled stream of training examples read from shards.

Every (rank, dataloader worker) pair is a *slot* and reads a disjoint part of
the data: whole shards when there are at least as many shards as slots,
otherwise every n-th sample of every shard. A sample that cannot be decoded is
skipped with a warning naming its shard and key, counted, and training goes on.
Samples of the slot's share that the manifest promised and a shard did not
deliver (truncated or damaged tar) are counted as skipped when the shard ends,
so per pass a shard's skipped count is its share minus the samples delivered.
Training checks the shards against the manifest before it starts
(:func:`shards.verify.verify_for_training`); the stream itself does not.

With ``data.cache_mb`` > 0 the decoded samples of whole shards are kept in
memory (per process, up to that budget), so a small dataset is read from its
tar files and decoded once instead of once per pass. The stream is the same
item for item with or without the cache.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Union

import cv2
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

import shards
from clickseg.config import Config
from clickseg.data.clicks import initial_clicks
from clickseg.data.targets import MAX_AUGMENT_ATTEMPTS, choose_target, make_scene

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Slot:
    index: int
    count: int


def current_slot(rank: int, world_size: int) -> Slot:
    info = get_worker_info()
    wid, nworkers = (info.id, info.num_workers) if info else (0, 1)
    return Slot(rank * nworkers + wid, world_size * nworkers)


def assign(urls: list[str], slot: Slot) -> tuple[list[str], bool]:
    """Shards this slot reads, and whether it must further keep only every n-th sample."""
    if len(urls) >= slot.count:
        return urls[slot.index::slot.count], False
    return list(urls), True


def loader_workers(n: int) -> dict:
    """DataLoader arguments for ``n`` data-loading worker processes, started by ``spawn``: a forked
    worker that sets OpenCV's thread count hangs for good when the parent process had used
    OpenCV's thread pool (it waits for pool threads that a forked child does not have), and a
    training's parent does use it (augmentation in-process, the correction clicks). Spawned
    workers start clean; with one loader for the whole training their start-up is paid once."""
    if n == 0:
        return {"num_workers": 0}
    return {"num_workers": n, "worker_init_fn": one_thread_worker, "multiprocessing_context": "spawn"}


def one_thread_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one OpenCV and torch thread per worker process, so that
    ``data.num_workers`` processes use that many cores instead of competing for all of them."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def slot_share(promised: int, slot: Slot, by_sample: bool) -> int:
    """How many of a shard's ``promised`` samples the slot reads."""
    return len(range(slot.index, promised, slot.count)) if by_sample else promised


class _Counter:
    """Counts skipped samples; called with a tar reader error it logs it (the samples it
    costs are counted when the shard ends short, see :func:`slot_samples`)."""

    def __init__(self) -> None:
        self.skipped = 0

    def skip(self, n: int = 1) -> None:
        self.skipped += n

    def __call__(self, exn: Exception) -> None:
        log.warning("skipping unreadable shard data: %s", exn)


Decoded = Union["shards.Sample", "shards.ShardFormatError"]


@dataclass
class _ShardPass:
    items: list[Decoded]  # this slot's samples of one shard, in order (a decoding error stays an error)
    unreadable: list[Exception] = field(default_factory=list)  # what the tar reader skipped


class DecodedCache:
    """Decoded shards of this process, kept until ``budget_mb`` is used up (then new shards stream).

    A shard is keyed by its path, size and modification time and by the slot reading it, so a
    rewritten file or another slot's share is never served from an old entry.
    """

    def __init__(self) -> None:
        self.entries: dict[tuple, _ShardPass] = {}
        self.nbytes = 0

    @staticmethod
    def key(url: str, slot: Slot, by_sample: bool) -> tuple:
        st = os.stat(url)
        return url, st.st_size, st.st_mtime_ns, slot.index if by_sample else -1, slot.count if by_sample else 1

    def put(self, key: tuple, shard_pass: _ShardPass, budget_mb: float) -> None:
        size = sum(_sample_bytes(x) for x in shard_pass.items)
        if self.nbytes + size <= budget_mb * 2**20:
            self.entries[key] = shard_pass
            self.nbytes += size


def _sample_bytes(item: Decoded) -> int:
    if isinstance(item, Exception):
        return 0
    return item.image.nbytes + (item.layers.nbytes if item.layers is not None else 0)


_CACHE = DecodedCache()


class _Recorder:
    """Passes tar-reader errors on to the counter and remembers them for cached passes."""

    def __init__(self, counter: _Counter, seen: list[Exception]):
        self.counter, self.seen = counter, seen

    def __call__(self, exn: Exception) -> None:
        self.seen.append(exn)
        self.counter(exn)


def decoded_samples(url: str, slot: Slot, by_sample: bool, counter: _Counter, cache_mb: float) -> Iterator[Decoded]:
    """This slot's decoded samples of one shard, in order, from the cache when it holds the shard.

    Unreadable tar data is logged as it is met, on every pass; a sample that does not decode
    is yielded as its ShardFormatError for the caller to count.
    """
    key = DecodedCache.key(url, slot, by_sample) if cache_mb > 0 else None
    cached = _CACHE.entries.get(key) if key else None
    if cached is not None:
        for exn in cached.unreadable:
            counter(exn)
        yield from cached.items
        return
    shard_pass = _ShardPass([])
    recording = _Recorder(counter, shard_pass.unreadable)
    for i, raw in enumerate(shards.iter_shard(url, on_damage=recording)):
        if by_sample and i % slot.count != slot.index:
            continue
        try:
            item: Decoded = shards.decode_sample(raw, object_masks=False)
        except shards.ShardFormatError as e:
            item = e
        shard_pass.items.append(item)
        yield item
    if key:  # only a shard read to its end is complete enough to cache
        _CACHE.put(key, shard_pass, cache_mb)


def slot_samples(url: str, slot: Slot, by_sample: bool, promised: int, counter: _Counter,
                 cache_mb: float) -> Iterator[shards.Sample]:
    """This slot's decodable samples of one shard, with ``promised`` the manifest's sample count.

    A sample that does not decode is skipped with a warning naming shard and key and counted.
    When the shard is done, the samples of the slot's share that neither decoded nor failed to
    decode (the shard ended early) are counted as well, so that a pass over the shard counts
    ``slot_share(promised) - delivered`` (unless damage splits samples into extra ones).
    """
    share = slot_share(promised, slot, by_sample)
    delivered = failed = 0
    try:
        for item in decoded_samples(url, slot, by_sample, counter, cache_mb):
            if isinstance(item, shards.ShardFormatError):
                log.warning("skipping sample: %s", item)
                failed += 1
                counter.skip()
                continue
            delivered += 1
            yield item
    except FileNotFoundError as e:
        raise shards.ManifestMismatchError(f"shard {url} listed in the manifest is missing ({e})") from e
    missing = share - delivered - failed
    if missing > 0:
        log.warning("shard %s ended early: %d of the %d samples this slot reads (%d in the shard by the manifest) "
                    "were not delivered; counted as skipped", url, missing, share, promised)
        counter.skip(missing)


class TrainStream(IterableDataset):
    """Yields dicts with ``image`` (3, T, T) uint8, ``mask`` (1, T, T) float32 (the target; all
    zero for a sample without one), ``clicks`` (P, 3) float32 rows (y, x, label) padded with -1
    (layout in ``clickseg.data.clicks``), ``skipped`` (samples skipped since the previous example
    of this slot), ``key`` (shard:key of the source sample).

    Each sample is made by SegNext's recipe (``clickseg.data.targets``): the whole image
    augmented to T x T, a root object (or two merged) as the target, clicks from its sampler.
    With ``data.image_draw=with_replacement`` every image of a pass is used a Poisson(1) number
    of times (independent draws), as when each sample draws an image uniformly at random.
    """

    def __init__(self, cfg: Config, rank: int = 0, world_size: int = 1, epoch: int = 0):
        self.cfg = cfg
        self.rank, self.world_size, self.epoch = rank, world_size, epoch
        manifest = shards.read_manifest(cfg.data.train)
        self.urls = shards.shard_paths(cfg.data.train, manifest)
        self.promised = {url: int(rec["samples"]) for url, rec in zip(self.urls, manifest["shards"])}

    def describe_rank(self) -> str:
        """What this rank reads, over all its data loader workers (for the training log)."""
        n = max(1, self.cfg.data.num_workers)
        parts = [assign(self.urls, Slot(self.rank * n + w, self.world_size * n)) for w in range(n)]
        if any(by_sample for _, by_sample in parts):
            return f"every {self.world_size * n}-th sample of all {len(self.urls)} shards"
        names = sorted(Path(u).name for urls, _ in parts for u in urls)
        return f"{len(names)} of {len(self.urls)} shards: {' '.join(names)}"

    def __iter__(self) -> Iterator[dict]:
        return self.slot_items(current_slot(self.rank, self.world_size))

    def slot_items(self, slot: Slot) -> Iterator[dict]:
        """The endless stream of one slot (see the module docstring) in this stream's epoch."""
        urls, by_sample = assign(self.urls, slot)
        rng = np.random.default_rng([self.cfg.train.seed, self.epoch, slot.index])
        counter = _Counter()
        reported = 0
        buffer: list[dict] = []
        data = self.cfg.data
        while True:
            made_any = False
            for url in map(str, rng.permutation(urls)):
                for sample in slot_samples(url, slot, by_sample, self.promised[url], counter, data.cache_mb):
                    copies = int(rng.poisson(1.0)) if data.image_draw == "with_replacement" else 1
                    for _ in range(copies):
                        item = self.make_item(sample, rng)
                        if item is None:
                            continue
                        made_any = True
                        item["key"] = f"{url}:{sample.key}"
                        buffer.append(item)
                        if len(buffer) >= data.shuffle_buffer:
                            out = buffer.pop(int(rng.integers(len(buffer))))
                            out["skipped"] = counter.skipped - reported
                            reported = counter.skipped
                            yield out
            if not made_any:
                raise RuntimeError(f"a full pass over {len(urls)} shard(s) of {self.cfg.data.train} gave no usable "
                                   f"training sample ({counter.skipped} skipped: undecodable or missing from "
                                   "their shard)")

    def make_item(self, sample: shards.Sample, rng: np.random.Generator) -> dict | None:
        """One training example from a decoded sample (None: no usable augmentation, see targets)."""
        scene = make_scene(sample, self.cfg, rng)
        if scene is None:
            log.debug("sample %s: no augmentation in %d kept an object", sample.key, MAX_AUGMENT_ATTEMPTS)
            return None
        target = choose_target(scene, self.cfg, rng)
        clicks = initial_clicks(scene, target, self.cfg.clicks, rng)
        return {
            "image": torch.from_numpy(scene.image),
            "mask": torch.from_numpy(target.mask.astype(np.float32)[None]),
            "clicks": torch.from_numpy(clicks),
        }


class EpochSequence(IterableDataset):
    """Epochs ``first_epoch`` .. ``epochs - 1`` of a rank's training batches through ONE DataLoader,
    so its worker processes (and their decoded-shard caches) live for the whole training and
    prefetch across epoch boundaries; the batches are exactly those of a DataLoader made anew
    over ``TrainStream(cfg, rank, world, epoch)`` for each epoch.

    A DataLoader takes batch k from worker ``k % W``. A fresh per-epoch loader takes the epoch's
    batch i from worker ``i % W``, so here worker w serves, in the epoch whose first batch has
    the global index k0, the logical worker ``(w - k0) % W``: its slot's stream for that epoch,
    cut after that logical worker's share of the epoch's ``batches_per_epoch`` batches.
    """

    def __init__(self, cfg: Config, rank: int, world_size: int, first_epoch: int, epochs: int,
                 batches_per_epoch: int, batch_size: int):
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.first_epoch, self.epochs = first_epoch, epochs
        self.batches_per_epoch, self.batch_size = batches_per_epoch, batch_size

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for epoch in range(self.first_epoch, self.epochs):
            k0 = (epoch - self.first_epoch) * self.batches_per_epoch
            logical = (worker - k0) % workers
            share = len(range(logical, self.batches_per_epoch, workers)) * self.batch_size
            if share == 0:
                continue
            stream = TrainStream(self.cfg, self.rank, self.world_size, epoch)
            slot = Slot(self.rank * workers + logical, self.world_size * workers)
            items = stream.slot_items(slot)
            for _ in range(share):
                yield next(items)
            items.close()
