"""Webdataset shards for clickseg: source converters, the sample format and reading back.

Convert once (``launch.py shard cocolvis --root ... --out ...``), then read with
:func:`open_dataset` (evaluation, tests) or :func:`iter_shard` + :func:`decode_sample`
(training; ``open_dataset`` reads with ``iter_shard`` too). The format is documented in
:mod:`shards.format` and :mod:`shards.manifest`; converters implement
:mod:`shards.converter`.
"""

from .converter import ConversionError
from .format import Object, Sample, ShardFormatError, decode_sample, encode_sample
from .manifest import ManifestMismatchError, ShardDataset, open_dataset, read_manifest, shard_paths, verify_shards
from .safe_pickle import UnsafePickleError
from .tar_reader import iter_shard
from .writer import convert

__all__ = [
    "ConversionError",
    "ManifestMismatchError",
    "Object",
    "Sample",
    "ShardDataset",
    "ShardFormatError",
    "UnsafePickleError",
    "convert",
    "decode_sample",
    "encode_sample",
    "iter_shard",
    "open_dataset",
    "read_manifest",
    "shard_paths",
    "verify_shards",
]
