"""Restricted unpickling for annotation pickles downloaded from the internet.

The COCO+LVIS annotation files (``hannotation.pickle``, ``masks/*.pickle``) hold
only dicts, lists, tuples, ints, strings, None and numpy uint8 arrays. Plain
``pickle.load`` would run any callable a tampered file names, so :func:`load`
resolves exactly the globals those files need and refuses everything else.
"""

from __future__ import annotations

import builtins
import importlib
import io
import os
import pickle
from typing import Any

import numpy as np

__all__ = ["UnsafePickleError", "load", "loads"]


class UnsafePickleError(ValueError):
    """A pickle referenced a global outside the allow-list."""


def _multiarray() -> Any:
    # numpy 2 moved numpy.core to numpy._core; importing numpy.core there warns.
    major = int(np.__version__.split(".")[0])
    return importlib.import_module("numpy._core.multiarray" if major >= 2 else "numpy.core.multiarray")


def _allowed() -> dict[tuple[str, str], Any]:
    multiarray = _multiarray()
    table: dict[tuple[str, str], Any] = {}
    for name in ("dict", "list", "tuple", "set", "frozenset", "bytearray"):
        table[("builtins", name)] = getattr(builtins, name)
        table[("__builtin__", name)] = getattr(builtins, name)  # protocol 2 files from Python 2
    # Both numpy 1 and numpy 2 module names map to what the installed numpy provides.
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = multiarray._reconstruct
        table[(module, "scalar")] = multiarray.scalar
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    return table


_ALLOWED = _allowed()


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, name: str) -> None:
        super().__init__(file)
        self._name = name

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._name}: refused global {module}.{name} (only containers and numpy arrays are allowed)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._name}: refused persistent id {pid!r}")


def loads(data: bytes, name: str = "<bytes>") -> Any:
    """Unpickle ``data`` with the allow-list; ``name`` appears in error messages."""
    return _RestrictedUnpickler(io.BytesIO(data), name).load()


def load(path: str | os.PathLike[str]) -> Any:
    """Unpickle the file at ``path`` with the allow-list.

    Raises :class:`UnsafePickleError` (naming the file and the refused global)
    for anything but containers, scalars and numpy arrays; other corruption
    raises whatever :mod:`pickle` raises (``UnpicklingError``, ``EOFError``...).
    """
    with open(path, "rb") as f:
        return _RestrictedUnpickler(f, os.fspath(path)).load()
