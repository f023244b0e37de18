"""Hostile legacy PyTorch checkpoints against train/torch_checkpoint.py (issue 18, F1, F2, F21).

The files are built here, opcode by opcode where torch would never write them, and each is read
in a child process with a 1 GiB address-space limit and a time limit (tests/limited_child.py):
before the fixes some segfaulted, hung or tried to allocate gigabytes. The promise checked is the
module's: anything it cannot read is a CheckpointError naming why, and nothing else."""

from __future__ import annotations

import pickle
import pickletools
import struct
from pathlib import Path

import numpy as np
import pytest
from limited_child import run_python

from train.torch_checkpoint import LEGACY_MAGIC, LEGACY_PROTOCOL, read_state_dict

SYSTEM = {"protocol_version": LEGACY_PROTOCOL, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


class Raw(bytes):
    """Pickle opcodes pushing one value, used as they are."""


def pushed(value: object) -> bytes:
    """The opcodes that push ``value`` (a pickle without its PROTO and STOP)."""
    return value if isinstance(value, Raw) else pickletools.optimize(pickle.dumps(value, 2))[2:-1]


def tensor(key: object, elements: object, offset: object, shape: object, stride: object, kind: str = "Float") -> Raw:
    """A torch._utils._rebuild_tensor_v2 call on storage ``key`` as torch's legacy save writes it."""
    storage_id = b"(" + pushed("storage") + f"ctorch\n{kind}Storage\n".encode() + pushed(key) + pushed("cpu")
    storage_id += pushed(elements) + b"Nt"  # the view field: None
    return rebuild(Raw(storage_id + b"Q"), offset, shape, stride)


def rebuild(storage: Raw, offset: object, shape: object, stride: object) -> Raw:
    """torch._utils._rebuild_tensor_v2(storage, offset, shape, stride, False, None)."""
    arguments = b"(" + storage + pushed(offset) + pushed(shape) + pushed(stride) + b"\x89Nt"
    return Raw(b"ctorch._utils\n_rebuild_tensor_v2\n" + arguments + b"R")


def checkpoint(
    entries: list[tuple[object, object]], storages: dict[str, tuple[int, bytes]], keys: object = None
) -> bytes:
    """A legacy checkpoint: header pickles, the state dict of ``entries`` (name, value), the key
    list (default: the storages' keys), then each storage as an int64 count and its bytes."""
    state = b"\x80\x02}(" + b"".join(pushed(name) + pushed(value) for name, value in entries) + b"u."
    keys = list(storages) if keys is None else keys
    content = pickle.dumps(LEGACY_MAGIC, 2) + pickle.dumps(LEGACY_PROTOCOL, 2) + pickle.dumps(SYSTEM, 2)
    content += state + b"\x80\x02" + pushed(keys) + b"."
    return content + b"".join(struct.pack("<q", count) + data for count, data in storages.values())


FOUR_FLOATS = {"0": (4, np.arange(4, dtype="<f4").tobytes())}


def one_tensor(offset: object = 0, shape: object = (4,), stride: object = (1,)) -> bytes:
    return checkpoint([("w", tensor("0", 4, offset, shape, stride))], FOUR_FLOATS)


def hash_bomb(levels: int = 64) -> Raw:
    """t = (); t = (t, t) ``levels`` times through the memo: 451 bytes whose hash or repr takes
    2**levels steps (the red team's was 508 bytes in all)."""
    return Raw(b")q\x00" + b"h\x00h\x00\x86q\x00" * levels)


def test_the_builder_makes_files_the_reader_reads(tmp_path: Path) -> None:
    """The hostile files below differ from a good one only where they say: this one reads."""
    storages = {"0": (6, np.arange(6, dtype="<f4").tobytes()), "1": (1, struct.pack("<q", 7))}
    entries = [
        ("matrix", tensor("0", 6, 0, (2, 3), (3, 1))),
        ("transposed", tensor("0", 6, 0, (3, 2), (1, 3))),
        ("row", tensor("0", 6, 3, (1, 3), (99, 1))),  # a size-1 dim's stride is never used
        ("count", tensor("1", 1, 0, (), (), kind="Long")),
    ]
    path = tmp_path / "good.pth"
    path.write_bytes(checkpoint(entries, storages))
    arrays = read_state_dict(path)
    assert arrays["matrix"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert arrays["transposed"].tolist() == [[0, 3], [1, 4], [2, 5]]
    assert arrays["row"].tolist() == [[3, 4, 5]] and arrays["count"].dtype == np.int64 and arrays["count"] == 7


HOSTILE = {
    # F1: a negative offset read before the storage; at -2**40 with a stride that lands back
    # inside the bounds check it read 4 TiB past it (a segfault)
    "negative offset": (one_tensor(offset=-4, shape=(8,)), "outside its storage"),
    "offset -2**40": (one_tensor(offset=-(2**40), shape=(2,), stride=(2**40,)), "outside its storage"),
    # F2: tiny files that hang or exhaust memory
    "nested-tuple hash bomb": (checkpoint([(hash_bomb(), tensor("0", 4, 0, (4,), (1,)))], FOUR_FLOATS), "too large"),
    "300k nested tuples": (checkpoint([(Raw(b")" + b"\x85" * 300_000), 1)], FOUR_FLOATS), "nested"),
    "stride-0 tensor of 9.3 GiB": (one_tensor(shape=(2_500_000_000,), stride=(0,)), "elements"),
    "memo index 2**31": (checkpoint([("w", Raw(b"Nr\xff\xff\xff\x7f"))], FOUR_FLOATS), "memo"),
    # F21: files that raised TypeError, ValueError, OverflowError or MemoryError (or crashed)
    "key list an int": (checkpoint([("w", tensor("0", 4, 0, (4,), (1,)))], FOUR_FLOATS, keys=5), "storage key list"),
    "a list for a storage": (checkpoint([("w", rebuild(Raw(b"]"), 0, (4,), (1,)))], {}), "storage"),
    "shape and stride of different lengths": (one_tensor(shape=(2, 2), stride=(1,)), "shape"),
    "a stride of 2**70": (one_tensor(shape=(1, 1), stride=(2**70, 1)), "stride"),
    "100 dimensions": (one_tensor(shape=(1,) * 100, stride=(1,) * 100), "dimensions"),
    "an empty tensor of 2**62 columns": (one_tensor(shape=(0, 2**62), stride=(1, 1)), "shape"),
    "shape a number": (one_tensor(shape=4), "shape"),
    "elements not a number": (checkpoint([("w", tensor("0", "four", 0, (4,), (1,)))], FOUR_FLOATS), "elements"),
    "storage of 2**61 elements": (
        checkpoint([("w", tensor("0", 2**61, 0, (4,), (1,)))], {"0": (2**61, bytes(16))}),
        "truncated",
    ),
}

READ_IN_CHILD = """
import sys
from train.torch_checkpoint import CheckpointError, read_state_dict
try:
    read_state_dict(sys.argv[1])
except CheckpointError as exc:
    print(f"CheckpointError: {exc}")
else:
    sys.exit("read without an error")
"""


@pytest.mark.parametrize("attack", list(HOSTILE))
def test_a_hostile_checkpoint_is_a_checkpoint_error_in_bounded_time_and_memory(attack: str, tmp_path: Path) -> None:
    content, reason = HOSTILE[attack]
    path = tmp_path / "hostile.pth"
    path.write_bytes(content)
    done = run_python(READ_IN_CHILD, str(path))
    assert done.returncode == 0, f"{attack} ({len(content)} bytes): {done.returncode}\n{done.stderr[-3000:]}"
    assert done.stdout.startswith(f"CheckpointError: {path}: ") and reason in done.stdout, done.stdout
