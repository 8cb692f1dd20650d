"""Webdataset shards for clickseg: source converters, the sample format and reading back.

Convert once (``launch.py shard cocolvis --root ... --out ...``), then read with
:func:`open_dataset` (evaluation, tests) or webdataset + :func:`decode_sample`
(training). The format is documented in :mod:`shards.format` and
:mod:`shards.manifest`.
"""

from .format import Object, Sample, ShardFormatError, decode_sample, encode_sample
from .manifest import ManifestMismatchError, ShardDataset, open_dataset, read_manifest, shard_paths, verify_shards
from .safe_pickle import UnsafePickleError
from .writer import ConversionError, convert

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
    "open_dataset",
    "read_manifest",
    "shard_paths",
    "verify_shards",
]
