"""Read a legacy (non-zip) PyTorch checkpoint of a plain state dict into numpy arrays, without torch.

torch on PyPI brings gigabytes of CUDA libraries for what is, in this format, a few pickles
and raw little-endian blobs (torch/serialization.py, ``_legacy_save``):

1. a pickled magic number, 2. the pickled protocol version (1001), 3. a pickled dict of
system facts (byte order, type sizes), 4. the pickled state dict, whose tensors point at
storages through persistent ids ``("storage", <type>, key, location, elements, view)``,
5. the pickled list of storage keys, then for each key in that order an int64 element
count and the storage's raw bytes.

The unpickler only builds the handful of classes such a file names (an OrderedDict, the
tensor rebuild function, storage types); anything else is refused, so a hostile file cannot
run code through pickle.
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from edge.errors import UsageError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class CheckpointError(UsageError, ValueError):
    """The file is not a legacy PyTorch state dict this reader understands; the message says why."""


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass(frozen=True)
class _TensorRef:
    """A tensor as the pickle describes it: a view into a storage that is read later."""

    storage_key: str
    offset: int  # in elements
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage_key: str, offset: int, shape: tuple, stride: tuple, *_: Any) -> _TensorRef:
    return _TensorRef(storage_key, int(offset), tuple(int(s) for s in shape), tuple(int(s) for s in stride))


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, handle: IO[bytes], source: str):
        super().__init__(handle)
        self.source = source
        self.storages: dict[str, tuple[np.dtype, int]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        raise CheckpointError(f"{self.source}: refers to {module}.{name}, which a plain state dict never does")

    def persistent_load(self, pid: Any) -> str:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self.source}: unexpected persistent id {pid!r}")
        _, storage_type, key, _location, elements = pid[:5]
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"{self.source}: storage {key} has an unknown type")
        self.storages[str(key)] = (storage_type.dtype, int(elements))
        return str(key)


def _load_pickle(handle: IO[bytes], source: str, what: str, unpickler: pickle.Unpickler | None = None) -> Any:
    try:
        return (unpickler or _StateDictUnpickler(handle, source)).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        problem = f"cannot read the {what} (truncated or not a PyTorch checkpoint)"
        raise CheckpointError(f"{source}: {problem}: {exc}") from exc


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every tensor of a legacy PyTorch state-dict file, by name, as a numpy array (a copy)."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise CheckpointError(f"{source}: no such file")
    if zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{source}: a zip-format PyTorch checkpoint (torch >= 1.6 default); this reader takes the legacy format"
        )
    with open(path, "rb") as handle:
        if handle.read(1) not in (b"\x80", b""):  # every pickle since protocol 2 opens with PROTO
            raise CheckpointError(f"{source}: not a PyTorch checkpoint (it does not start with a pickle)")
        handle.seek(0)
        magic = _load_pickle(handle, source, "header")
        if magic != LEGACY_MAGIC:
            raise CheckpointError(f"{source}: not a legacy PyTorch checkpoint (no magic number at the start)")
        protocol = _load_pickle(handle, source, "protocol version")
        if protocol != LEGACY_PROTOCOL:
            raise CheckpointError(f"{source}: PyTorch checkpoint protocol {protocol!r}, expected {LEGACY_PROTOCOL}")
        system = _load_pickle(handle, source, "system facts")
        if not isinstance(system, dict) or not system.get("little_endian", False):
            raise CheckpointError(f"{source}: written on a big-endian machine; only little-endian is supported")
        unpickler = _StateDictUnpickler(handle, source)
        state = _load_pickle(handle, source, "state dict", unpickler)
        if not isinstance(state, dict):
            raise CheckpointError(f"{source}: holds a {type(state).__name__}, not a state dict")
        keys = _load_pickle(handle, source, "storage key list")
        blobs = {str(key): _read_storage(handle, source, str(key), unpickler.storages) for key in keys}
    arrays: dict[str, np.ndarray] = {}
    for name, value in state.items():
        if not isinstance(value, _TensorRef):
            raise CheckpointError(f"{source}: entry {name!r} is a {type(value).__name__}, not a tensor")
        arrays[str(name)] = _view(blobs, value, source, str(name))
    return arrays


def _read_storage(handle: IO[bytes], source: str, key: str, storages: dict[str, tuple[np.dtype, int]]) -> np.ndarray:
    if key not in storages:
        raise CheckpointError(f"{source}: storage {key} is listed but no tensor uses it")
    dtype, elements = storages[key]
    header = handle.read(8)
    if len(header) != 8:
        raise CheckpointError(f"{source}: truncated before storage {key}")
    (count,) = struct.unpack("<q", header)
    if count != elements:
        raise CheckpointError(f"{source}: storage {key} holds {count} elements, the state dict says {elements}")
    data = handle.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise CheckpointError(f"{source}: truncated in storage {key} ({len(data)} of {count * dtype.itemsize} bytes)")
    return np.frombuffer(data, dtype=dtype)


def _view(blobs: dict[str, np.ndarray], ref: _TensorRef, source: str, name: str) -> np.ndarray:
    if ref.storage_key not in blobs:
        raise CheckpointError(f"{source}: tensor {name!r} uses storage {ref.storage_key}, which the file lacks")
    blob = blobs[ref.storage_key]
    if 0 in ref.shape:
        return np.zeros(ref.shape, dtype=blob.dtype)
    if ref.shape:
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride, strict=True))
    else:
        last = ref.offset
    if any(n < 0 for n in ref.shape) or any(s < 0 for s in ref.stride) or last >= len(blob):
        raise CheckpointError(f"{source}: tensor {name!r} reaches outside its storage")
    itemsize = blob.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        blob[ref.offset :], shape=ref.shape, strides=tuple(s * itemsize for s in ref.stride), writeable=False
    )
    return np.array(view)
