"""CIFAR-10 batch files, read by an unpickler that admits only plain containers and numpy arrays."""

from __future__ import annotations

import builtins
import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import DataError, Dataset, _finish, _labels, _uint8_images

# numpy's own array rebuilders, found through __reduce__ so the module path (numpy.core / numpy._core)
# does not matter: _reconstruct for pickle protocols <= 4, _frombuffer for protocol 5
_RECONSTRUCT, _FROMBUFFER = np.zeros(0).__reduce__()[0], np.zeros(1).__reduce_ex__(5)[0]


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: a pickle naming anything else cannot run code."""

    ALLOWED = {("builtins", k): getattr(builtins, k) for k in ("dict", "list", "bytes", "str", "int")} | {
        ("_codecs", "encode"): codecs.encode,  # how protocol 2 stores bytes under Python 3
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        **{(f"numpy.{c}.multiarray", "_reconstruct"): _RECONSTRUCT for c in ("core", "_core")},
        **{(f"numpy.{c}.numeric", "_frombuffer"): _FROMBUFFER for c in ("core", "_core")},
    }

    def find_class(self, module: str, name: str) -> Any:
        """Resolve only allow-listed globals."""
        if (module, name) not in self.ALLOWED:
            raise DataError(f"refusing to unpickle {module}.{name}: only containers and arrays are allowed")
        return self.ALLOWED[module, name]


def _cifar(path: Path, n: int | None, seed: int) -> Dataset:
    """A CIFAR-10 batch file, or a ``cifar-10-batches-py`` folder (its training batches data_batch_*)."""
    xs, ys = [], []
    for file in sorted(path.glob("data_batch_*")) if path.is_dir() else [path]:
        try:
            with open(file, "rb") as f:
                d = _SafeUnpickler(f, encoding="bytes").load()  # batches were written by Python 2
        except Exception as e:  # includes our own refusal of a forbidden global
            raise DataError(f"cannot read CIFAR batch {file}: {e}") from None
        data, labels = (d.get(b"data"), d.get(b"labels")) if isinstance(d, dict) else (None, None)
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or labels is None:
            raise DataError(f"{file}: not a CIFAR-10 batch (expected b'data' (N, 3072) and b'labels')")
        xs.append(data.astype(np.uint8).reshape(-1, 3, 32, 32))  # rows are 1024 R, then G, then B values
        ys.append(_labels(labels, len(data), str(file)))
    x, y = np.concatenate(xs), np.concatenate(ys)
    if y.max() > 9:
        raise DataError(f"{path}: CIFAR-10 labels must be 0..9, got {y.max()}")
    return _finish(_uint8_images(x), y, "image", path.name, 8, n, seed, num_classes=10)
