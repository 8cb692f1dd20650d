"""An endless, shuffled stream of training examples read from shards.

Every (rank, dataloader worker) pair is a *slot* and reads a disjoint part of
the data: whole shards when there are at least as many shards as slots,
otherwise every n-th sample of every shard. A sample that cannot be decoded is
skipped with a warning naming its shard and key, counted, and training goes on.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

import shards
from clickseg.config import Config
from clickseg.data.clicks import initial_clicks, max_initial_clicks, pad_clicks
from clickseg.data.transforms import make_crop

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


class _Counter:
    """Counts samples skipped by the tar reader or the decoder."""

    def __init__(self) -> None:
        self.skipped = 0

    def __call__(self, exn: Exception) -> bool:
        self.skipped += 1
        log.warning("skipping unreadable shard data: %s", exn)
        return True


def raw_samples(url: str, counter: _Counter) -> Iterator[dict]:
    """Raw webdataset samples (member name -> bytes) of one shard, in order.

    The file is opened here (and closed when the shard is done) because
    webdataset's own URL opener leaves shard files open.
    """
    with open(url, "rb") as stream:
        members = wds.tariterators.tar_file_expander([{"url": url, "stream": stream}], handler=counter)
        yield from wds.tariterators.group_by_keys(members, handler=counter)


class TrainStream(IterableDataset):
    """Yields dicts with ``image`` (3, T, T) uint8, ``mask`` (1, T, T) float32,
    ``clicks`` (P, 3) float32 padded with -1, ``skipped`` (samples skipped since the
    previous example of this slot), ``key`` (shard:key of the source sample)."""

    def __init__(self, cfg: Config, rank: int = 0, world_size: int = 1, epoch: int = 0):
        self.cfg = cfg
        self.rank, self.world_size, self.epoch = rank, world_size, epoch
        self.urls = shards.shard_paths(cfg.data.train)

    def __iter__(self) -> Iterator[dict]:
        slot = current_slot(self.rank, self.world_size)
        urls, by_sample = assign(self.urls, slot)
        rng = np.random.default_rng([self.cfg.train.seed, self.epoch, slot.index])
        counter = _Counter()
        reported = 0
        buffer: list[dict] = []
        size = self.cfg.model.input_size
        data = self.cfg.data
        n_clicks = max_initial_clicks(self.cfg.clicks)
        while True:
            made_any = False
            for url in rng.permutation(urls):
                for i, raw in enumerate(raw_samples(str(url), counter)):
                    if by_sample and i % slot.count != slot.index:
                        continue
                    try:
                        sample = shards.decode_sample(raw)
                    except shards.ShardFormatError as e:
                        counter(e)
                        continue
                    crop = make_crop(sample, size, data.stuff_prob, data.min_object_area,
                                     (data.scale_min, data.scale_max), rng)
                    if crop is None:
                        continue
                    made_any = True
                    clicks = initial_clicks(crop.mask, self.cfg.clicks, rng)
                    buffer.append({
                        "image": torch.from_numpy(crop.image).permute(2, 0, 1).contiguous(),
                        "mask": torch.from_numpy(crop.mask).float()[None],
                        "clicks": torch.from_numpy(pad_clicks(clicks, n_clicks)),
                        "key": f"{raw.get('__url__', url)}:{raw.get('__key__', '?')}",
                    })
                    if len(buffer) >= data.shuffle_buffer:
                        item = buffer.pop(int(rng.integers(len(buffer))))
                        item["skipped"] = counter.skipped - reported
                        reported = counter.skipped
                        yield item
            if not made_any:
                raise RuntimeError(f"a full pass over {len(urls)} shard(s) of {self.cfg.data.train} gave no usable "
                                   f"training sample ({counter.skipped} skipped as unreadable)")
