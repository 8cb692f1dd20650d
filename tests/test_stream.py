"""The training stream: every rank (and dataloader worker) reads a disjoint part of the data."""
import json
import logging
import shutil
import tarfile
from itertools import islice
from pathlib import Path

import pytest
import torch

from builtin_data import corrupt_copy, tiny_overrides
from clickseg.config import load_config
from clickseg.data import stream
from clickseg.data.stream import Slot, TrainStream, assign

REPO = Path(__file__).resolve().parents[1]


def _keys(cfg, rank: int, world: int, n: int) -> set[str]:
    return {item["key"] for item in islice(TrainStream(cfg, rank, world), n)}


@pytest.mark.parametrize("slots", [2, 3, 4, 6, 7, 13])
def test_slots_split_shards_or_samples_disjointly(slots):
    urls = [f"s{i}.tar" for i in range(6)]
    parts = [assign(urls, Slot(i, slots)) for i in range(slots)]
    if slots <= len(urls):  # whole shards: each shard read by exactly one slot
        assert not any(by_sample for _, by_sample in parts)
        assert sorted(u for shard_list, _ in parts for u in shard_list) == urls
    else:  # every shard read by all slots, each keeping every n-th sample
        assert all(by_sample and shard_list == urls for shard_list, by_sample in parts)


def _shard_keys(shard_dir: Path) -> dict[str, list[str]]:
    """Sample keys of every shard, in file order, read with plain tarfile."""
    out = {}
    for url in sorted(shard_dir.glob("*.tar")):
        with tarfile.open(url) as tar:
            keys = [m.name.split(".", 1)[0] for m in tar.getmembers()]
        out[str(url)] = list(dict.fromkeys(keys))
    return out


@pytest.mark.parametrize("world", [2, 7])  # 7 ranks > 6 shards: split by sample within each shard
def test_ranks_see_disjoint_samples_that_together_cover_the_data(builtin_dirs, tmp_path, world):
    cfg = load_config(REPO / "configs" / "demo.yaml", tiny_overrides(
        builtin_dirs, tmp_path / "run", **{"model.arch": "tiny_global", "model.input_size": 96,
                                           "data.stuff_prob": 0.3}))  # stuff too: nearly every image usable
    shard_keys = _shard_keys(builtin_dirs["cocolvis-train"])
    assert len(shard_keys) == 6 and sum(map(len, shard_keys.values())) == 120
    by_shard = world > len(shard_keys)
    expected = [{f"{url}:{key}" for j, (url, keys) in enumerate(shard_keys.items()) for i, key in enumerate(keys)
                 if (i if by_shard else j) % world == rank} for rank in range(world)]
    # Ten passes over the data and over each rank's share: a crop without a usable object is
    # dropped (at random for small objects), and a few images have no usable object at all.
    everything = _keys(cfg, 0, 1, 1200)
    per_rank = [_keys(cfg, rank, world, 10 * len(expected[rank])) for rank in range(world)]
    for rank in range(world):
        assert per_rank[rank] <= expected[rank], sorted(per_rank[rank] - expected[rank])[:5]
    for a in range(world):
        for b in range(a + 1, world):
            assert not per_rank[a] & per_rank[b]
    union = set().union(*per_rank)  # the ranks together read what one process reads (bar a few rare crops)
    assert len(everything) > 100 and len(union & everything) >= len(everything) - 3, len(everything - union)


@pytest.mark.parametrize("world", [1, 7])  # whole shards, and every 7th sample of each shard
def test_decoded_cache_leaves_the_stream_unchanged(builtin_dirs, tmp_path, world):
    """Items (keys, pixels, clicks, skip counts) are the same with and without the cache, over
    several passes of a shard set with a corrupt sample in every shard."""
    bad = tmp_path / "bad-shards"
    corrupt_copy(builtin_dirs["cocolvis-train"], bad)
    stream._CACHE = stream.DecodedCache()
    base = {"model.arch": "tiny_global", "model.input_size": 64, "data.train": str(bad)}
    plain, cached = (load_config(REPO / "configs" / "demo.yaml", tiny_overrides(
        builtin_dirs, tmp_path / "run", **base, **{"data.cache_mb": mb})) for mb in (0, 256))
    rank = 1 % world  # with 7 ranks, rank 1 keeps the 2nd sample of every shard, the corrupt one
    n = 400 if world == 1 else 60  # about four passes over the data / over the rank's share
    a, b = (list(islice(TrainStream(c, rank, world), n)) for c in (plain, cached))
    assert stream._CACHE.entries and stream._CACHE.nbytes > 0
    assert sum(x["skipped"] for x in a) >= 4  # the corrupt samples were met again on later passes
    for x, y in zip(a, b, strict=True):
        assert x["key"] == y["key"] and x["skipped"] == y["skipped"]
        for k in ("image", "mask", "clicks"):
            assert torch.equal(x[k], y[k]), (x["key"], k)
    # A budget too small for any shard caches nothing and changes nothing either.
    stream._CACHE = stream.DecodedCache()
    tiny = load_config(REPO / "configs" / "demo.yaml", tiny_overrides(
        builtin_dirs, tmp_path / "run", **base, **{"data.cache_mb": 0.01}))
    c = [x["key"] for x in islice(TrainStream(tiny, rank, world), n)]
    assert not stream._CACHE.entries and c == [x["key"] for x in a]


def _truncated_copy(src: Path, dst: Path, index: int = 1, only: bool = False) -> tuple[str, int]:
    """Copy a shard set and cut shard ``index`` to half its size (``only``: the manifest lists just
    that shard); return its path and the manifest's sample count."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    rec = manifest["shards"][index]
    path = dst / rec["name"]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    if only:
        manifest["shards"] = [rec]
        (dst / "manifest.json").write_text(json.dumps(manifest))
    return str(path.resolve()), rec["samples"]


@pytest.mark.parametrize("cache_mb", [0, 64])
def test_truncated_shard_counts_every_sample_it_did_not_deliver(builtin_dirs, tmp_path, cache_mb):
    url, promised = _truncated_copy(builtin_dirs["cocolvis-train"], tmp_path / "cut")
    assert promised == 20
    stream._CACHE = stream.DecodedCache()
    for slot, by_sample in [(Slot(0, 1), False), (Slot(0, 7), True), (Slot(1, 7), True), (Slot(6, 7), True),
                            (Slot(1, 2), True)]:
        share = len(range(slot.index, promised, slot.count)) if by_sample else promised
        assert stream.slot_share(promised, slot, by_sample) == share
        for _ in range(2):  # with cache_mb > 0 the second pass comes from the cache
            counter = stream._Counter()
            got = list(stream.slot_samples(url, slot, by_sample, promised, counter, cache_mb))
            assert counter.skipped == share - len(got), (slot, len(got), counter.skipped)
            if slot.count == 1:
                assert 5 <= len(got) <= 15 and counter.skipped >= 5


def test_undecodable_sample_is_skipped_with_a_warning(builtin_dirs, tmp_path, caplog):
    bad = tmp_path / "bad-shards"
    corrupt_copy(builtin_dirs["cocolvis-train"], bad)
    url = str((bad / json.loads((bad / "manifest.json").read_text())["shards"][0]["name"]).resolve())
    counter = stream._Counter()
    with caplog.at_level(logging.WARNING, logger="clickseg.data.stream"):
        got = list(stream.slot_samples(url, Slot(0, 1), False, 20, counter, 0))
    assert len(got) == 19 and counter.skipped == 1
    assert any(url in r.getMessage() and "00000001" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("rank, world", [(0, 1), (1, 7)])
def test_stream_batches_report_truncation_exactly(builtin_dirs, tmp_path, monkeypatch, rank, world):
    """Over whole passes of a one-shard set cut in half, the items' ``skipped`` add up to
    (this slot's share of the manifest's samples - samples delivered) per pass."""
    url, promised = _truncated_copy(builtin_dirs["cocolvis-train"], tmp_path / "cut", only=True)
    slot, by_sample = Slot(rank, world), world > 1
    delivered = len(list(stream.slot_samples(url, slot, by_sample, promised, stream._Counter(), 0)))
    missing = stream.slot_share(promised, slot, by_sample) - delivered
    assert missing >= 1
    monkeypatch.setattr(TrainStream, "make_item", lambda self, sample, rng: {"id": sample.key})
    cfg = load_config(REPO / "configs" / "demo.yaml", tiny_overrides(builtin_dirs, tmp_path / "run", **{
        "data.train": str(tmp_path / "cut"), "data.shuffle_buffer": 1, "data.image_draw": "once_per_pass",
        "data.cache_mb": 0}))
    passes = 3
    items = list(islice(TrainStream(cfg, rank, world), passes * delivered + 1))  # up to the 1st item of pass 4
    assert sum(x["skipped"] for x in items) == passes * missing


@pytest.mark.parametrize("workers,batches_per_epoch,batch", [(0, 3, 2), (2, 5, 2), (3, 4, 1)])
def test_one_loader_for_all_epochs_gives_the_per_epoch_loaders_batches(builtin_dirs, tmp_path, workers,
                                                                        batches_per_epoch, batch):
    """``EpochSequence`` through one DataLoader (workers started once, prefetching across epoch
    ends) yields, epoch after epoch, exactly the batches of a DataLoader made anew over each
    epoch's ``TrainStream``, also when the epoch's batch count is not a multiple of the workers."""
    from torch.utils.data import DataLoader

    import cv2
    import numpy as np

    from clickseg.data.stream import EpochSequence, loader_workers

    cfg = load_config(REPO / "configs" / "demo.yaml", tiny_overrides(builtin_dirs, tmp_path / "run", **{
        "data.shuffle_buffer": 3, "data.num_workers": workers, "data.cache_mb": 0}))
    rank, world, first, epochs = 1, 2, 1, 4
    # This process uses OpenCV's thread pool first, as a training's does: forked workers that
    # then set their OpenCV thread count would hang.
    threads = cv2.getNumThreads()
    cv2.setNumThreads(2)
    cv2.resize(np.zeros((2000, 2000, 3), np.uint8), (3000, 3000))
    cv2.setNumThreads(threads)

    def loader(dataset):
        return DataLoader(dataset, batch_size=batch, **loader_workers(workers))

    want = []
    for epoch in range(first, epochs):
        want += list(islice(iter(loader(TrainStream(cfg, rank, world, epoch))), batches_per_epoch))
    got = list(loader(EpochSequence(cfg, rank, world, first, epochs, batches_per_epoch, batch)))
    assert len(got) == len(want) == (epochs - first) * batches_per_epoch
    for i, (g, w) in enumerate(zip(got, want)):
        assert g["key"] == w["key"], i
        for name in ("image", "mask", "clicks", "skipped"):
            assert torch.equal(g[name], w[name]), (i, name)
    assert len({k for b in got for k in b["key"]}) > batches_per_epoch  # not one batch repeated
