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
run code through pickle. Nor can it make the reader hang, exhaust memory or read outside a
storage (issue 18, F1, F2, F21): the file is read whole under a size cap, each pickle is weighed
before it is unpickled (train/pickle_bounds.py), and every tensor's offset, shape and stride are
checked against its storage's element count before any array is made. Whatever the file holds,
the reader returns arrays or raises CheckpointError.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import reprlib
import struct
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.errors import UsageError
from edge.paths import read_regular_file
from train.pickle_bounds import PickleRefused, pickle_end

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
# The file, and all the arrays made from it, at most (the ImageNet Lite0 weights: 18 MB).
MAX_CHECKPOINT_BYTES = 512 << 20
MAX_DIMENSIONS = 32  # numpy 1's limit; no layer's weight has more than 5
MAX_INT64 = 2**63 - 1  # what torch itself can hold as an offset, size or stride
MAX_EMPTY_SPAN = 2**24  # an empty tensor's non-zero dimensions multiplied: numpy must still size it
# What unpickling a malformed file raises besides UnpicklingError (the C unpickler, the classes it builds).
_MALFORMED = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
              OverflowError, MemoryError, RecursionError)  # fmt: skip

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


def shown(value: object) -> str:
    """A value from the file in a message: short whatever the file made it."""
    return reprlib.repr(value)


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass(frozen=True)
class _TensorRef:
    """A tensor as the pickle describes it, checked against its storage: a view read later."""

    storage_key: str
    offset: int  # in elements
    shape: tuple[int, ...]
    stride: tuple[int, ...]  # in elements

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


def _whole_numbers(value: object, what: str, where: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(type(n) is int and 0 <= n <= MAX_INT64 for n in value):
        raise CheckpointError(f"{where}: {what} {shown(value)} is not a tuple of whole numbers from 0 to 2**63-1")
    return value


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, handle: io.BytesIO, source: str):
        super().__init__(handle)
        self.source = source
        self.storages: dict[str, tuple[np.dtype, int]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self.rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        raise CheckpointError(f"{self.source}: refers to {module}.{name}, which a plain state dict never does")

    def persistent_load(self, pid: Any) -> str:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self.source}: unexpected persistent id {shown(pid)}")
        _, storage_type, key, _location, elements = pid[:5]
        if not isinstance(key, str):
            raise CheckpointError(f"{self.source}: storage key {shown(key)} is not a string")
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"{self.source}: storage {shown(key)} has an unknown type")
        if type(elements) is not int or not 0 <= elements <= MAX_INT64:
            raise CheckpointError(f"{self.source}: storage {shown(key)} gives {shown(elements)} elements, not a count")
        described = (storage_type.dtype, elements)
        if self.storages.setdefault(key, described) != described:
            raise CheckpointError(f"{self.source}: storage {shown(key)} is described two ways")
        return key

    def rebuild_tensor(self, storage: object, offset: object, shape: object, stride: object, *_: Any) -> _TensorRef:
        """torch._utils._rebuild_tensor_v2, checked against the storage before anything is made."""
        if not isinstance(storage, str) or storage not in self.storages:
            raise CheckpointError(f"{self.source}: a tensor's storage is {shown(storage)}, not a storage of the file")
        where = f"{self.source}: a tensor of storage {shown(storage)}"
        shape = _whole_numbers(shape, "shape", where)
        stride = _whole_numbers(stride, "stride", where)
        if type(offset) is not int or offset < 0:
            raise CheckpointError(f"{where} reaches outside its storage: offset {shown(offset)}")
        if len(shape) > MAX_DIMENSIONS:
            raise CheckpointError(f"{where} has {len(shape)} dimensions (at most {MAX_DIMENSIONS})")
        if len(stride) != len(shape):
            raise CheckpointError(f"{where}: shape {shape} and stride {stride} differ in length")
        ref = _TensorRef(storage, offset, shape, tuple(s if n > 1 else 0 for n, s in zip(shape, stride, strict=True)))
        _check_within(ref, self.storages[storage][1], where)
        return ref


def _check_within(ref: _TensorRef, elements: int, where: str) -> None:
    """The view fits its storage of ``elements``: it holds no more elements than the storage,
    and its first and last element lie inside it (strides are not negative, so those bound it)."""
    if ref.elements > elements:
        raise CheckpointError(f"{where}: shape {ref.shape} has {ref.elements} elements, its storage only {elements}")
    if math.prod(n for n in ref.shape if n) > max(elements, MAX_EMPTY_SPAN):
        raise CheckpointError(f"{where}: shape {ref.shape} is too large even for an empty tensor")
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride, strict=True) if n)
    if ref.elements and last >= elements:
        raise CheckpointError(f"{where} reaches outside its storage: element {last} of {elements}")


class _CheckpointBytes:
    """The file's bytes and how far they have been read: pickles, then storages."""

    def __init__(self, data: bytes, source: str):
        self.data, self.source, self.position = memoryview(data), source, 0

    def next_pickle(self, what: str) -> tuple[Any, dict[str, tuple[np.dtype, int]]]:
        """The next pickle's value (and the storages its tensors named), weighed before unpickling."""
        try:
            end = pickle_end(self.data, self.position)
        except PickleRefused as exc:
            raise CheckpointError(f"{self.source}: the {what} {exc}") from None
        except ValueError as exc:
            raise CheckpointError(f"{self.source}: {self._unreadable(what)}: {exc}") from None
        reader = _StateDictUnpickler(io.BytesIO(self.data[self.position : end]), self.source)
        self.position = end
        try:
            return reader.load(), reader.storages
        except CheckpointError:
            raise
        except _MALFORMED as exc:
            raise CheckpointError(f"{self.source}: {self._unreadable(what)}: {shown(exc)}") from None

    @staticmethod
    def _unreadable(what: str) -> str:
        return f"cannot read the {what} (truncated or not a PyTorch checkpoint)"

    def storage(self, key: str, dtype: np.dtype, elements: int) -> np.ndarray:
        """The next storage: an int64 element count, then that many elements."""
        header = bytes(self.data[self.position : self.position + 8])
        if len(header) != 8:
            raise CheckpointError(f"{self.source}: truncated before storage {key}")
        (count,) = struct.unpack("<q", header)
        if count != elements:
            raise CheckpointError(
                f"{self.source}: storage {key} holds {count} elements, the state dict says {elements}"
            )
        start, size = self.position + 8, count * dtype.itemsize
        if size > len(self.data) - start:
            raise CheckpointError(
                f"{self.source}: truncated in storage {key} ({len(self.data) - start} of {size} bytes)"
            )
        self.position = start + size
        return np.frombuffer(self.data[start : self.position], dtype=dtype)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every tensor of a legacy PyTorch state-dict file, by name, as a numpy array (a copy)."""
    source = str(path)
    try:
        data = read_regular_file(path, MAX_CHECKPOINT_BYTES)
    except FileNotFoundError:
        raise CheckpointError(f"{source}: no such file") from None
    except OSError as exc:
        raise CheckpointError(f"{source}: cannot read it: {exc}") from None
    if zipfile.is_zipfile(io.BytesIO(data)):
        raise CheckpointError(
            f"{source}: a zip-format PyTorch checkpoint (torch >= 1.6 default); this reader takes the legacy format"
        )
    if data[:1] not in (b"\x80", b""):  # every pickle since protocol 2 opens with PROTO
        raise CheckpointError(f"{source}: not a PyTorch checkpoint (it does not start with a pickle)")
    content = _CheckpointBytes(data, source)
    _check_header(content)
    state, storages = content.next_pickle("state dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: holds a {type(state).__name__}, not a state dict")
    keys, _ = content.next_pickle("storage key list")
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        raise CheckpointError(f"{source}: the storage key list is {shown(keys)}, not a list of keys")
    refs = _tensor_refs(state, source)
    blobs = {}
    for key in keys:
        if key not in storages:
            raise CheckpointError(f"{source}: storage {shown(key)} is listed but no tensor uses it")
        blobs[key] = content.storage(shown(key), *storages[key])
    return {name: _view(blobs, ref, source, name) for name, ref in refs.items()}


def _check_header(content: _CheckpointBytes) -> None:
    source = content.source
    magic, _ = content.next_pickle("header")
    if magic != LEGACY_MAGIC:
        raise CheckpointError(f"{source}: not a legacy PyTorch checkpoint (no magic number at the start)")
    protocol, _ = content.next_pickle("protocol version")
    if protocol != LEGACY_PROTOCOL:
        raise CheckpointError(f"{source}: PyTorch checkpoint protocol {shown(protocol)}, expected {LEGACY_PROTOCOL}")
    system, _ = content.next_pickle("system facts")
    if not isinstance(system, dict) or system.get("little_endian", False) is not True:
        raise CheckpointError(f"{source}: written on a big-endian machine; only little-endian is supported")


def _tensor_refs(state: dict, source: str) -> dict[str, _TensorRef]:
    """The state dict's entries, each a tensor by a string name, within the size cap all together."""
    refs: dict[str, _TensorRef] = {}
    total = 0
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, _TensorRef):
            raise CheckpointError(f"{source}: entry {shown(name)} is a {type(value).__name__}, not a named tensor")
        refs[name] = value
        total += value.elements * 8  # the widest storage type: the cap holds whatever the types are
    if total > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{source}: its tensors would take over {MAX_CHECKPOINT_BYTES >> 20} MiB as arrays")
    return refs


def _view(blobs: dict[str, np.ndarray], ref: _TensorRef, source: str, name: str) -> np.ndarray:
    """The tensor as an array of its own, from a storage its ref was checked against."""
    if ref.storage_key not in blobs:
        raise CheckpointError(f"{source}: tensor {name!r} uses storage {ref.storage_key}, which the file lacks")
    blob = blobs[ref.storage_key]
    if not ref.elements:
        return np.zeros(ref.shape, dtype=blob.dtype)
    itemsize = blob.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        blob[ref.offset :], shape=ref.shape, strides=tuple(s * itemsize for s in ref.stride), writeable=False
    )
    return np.array(view)
