"""Measure a pickle before it is unpickled, so that a tiny hostile one cannot hang or exhaust
memory (issue 18, F2).

Refusing unknown classes (torch_checkpoint's find_class) stops a pickle from running code, not
from costing: through the memo a few hundred bytes describe a tuple of tuples whose hash takes
2**64 steps; 300,000 nested one-element tuples overflow the C stack when hashed; a PUT to memo
index 2**31 makes the unpickler allocate 16 GiB. So the opcodes (pickletools.genops: it decodes
them without building anything) are first run on a stack of sizes, not of objects: every value
the pickle would build is weighed by how many objects it holds counting each reuse, and how
deeply they nest. Only the opcodes a state dict needs are accepted.
"""

from __future__ import annotations

import io
import pickletools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_OPCODES = 2_000_000  # a 296-tensor state dict has about 12,000
MAX_OBJECTS = 1_000_000  # objects reached walking a value, each reuse again (that state dict: ~20,000)
MAX_DEPTH = 64  # a state dict nests about six deep
MAX_MEMO = 1_000_000  # memo entries, and the highest index a PUT may name (that state dict: ~2,700)

_ATOMS = (  # push one value holding nothing else
    *("NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"),
    *("FLOAT", "BINFLOAT", "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE"),
    *("BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8"),
    *("EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE", "EMPTY_SET", "GLOBAL"),
)
_FROM_MARK = frozenset(("TUPLE", "LIST", "DICT", "FROZENSET"))  # a new object of what follows the mark
_INTO_FROM_MARK = frozenset(("APPENDS", "SETITEMS", "ADDITEMS"))  # what follows the mark, into the object below it
_PUTS = frozenset(("PUT", "BINPUT", "LONG_BINPUT"))
_GETS = frozenset(("GET", "BINGET", "LONG_BINGET"))


class PickleRefused(ValueError):
    """The pickle would cost more than any state dict does, or uses an opcode none needs."""


@dataclass
class _Value:
    """What one value on the pickle's stack weighs."""

    objects: int = 1
    depth: int = 1
    contained: bool = False  # already inside another value: changing it now would change that one unseen


_MARK = _Value(objects=0, depth=0)


def pickle_end(data: bytes | memoryview, start: int = 0) -> int:
    """The offset just past the STOP of the pickle at ``start``, after checking it against the
    limits above. PickleRefused for a pickle over them; ValueError for one that is malformed."""
    stream = io.BytesIO(data)
    stream.seek(start)
    machine = _Weigher()
    for count, (opcode, argument, _) in enumerate(pickletools.genops(stream), start=1):
        if count > MAX_OPCODES:
            raise PickleRefused(f"has over {MAX_OPCODES:,} opcodes")
        if machine.step(opcode.name, argument):
            return stream.tell()
    raise ValueError("the pickle ends before its STOP")


class _Weigher:
    """The unpickler's stack and memo, holding weights instead of objects."""

    def __init__(self) -> None:
        self.stack: list[_Value] = []
        self.memo: dict[int, _Value] = {}

    def step(self, name: str, argument: object) -> bool:
        """One opcode; True at STOP."""
        if name == "STOP":
            self.pop()
            return True
        if name not in _STEPS:
            raise PickleRefused(f"uses the opcode {name}, which a state dict never needs")
        _STEPS[name](self, argument)
        return False

    def pop(self) -> _Value:
        if not self.stack or self.stack[-1] is _MARK:
            raise ValueError("malformed pickle: an opcode takes more values than the stack holds")
        return self.stack.pop()

    def pop_to_mark(self) -> list[_Value]:
        if _MARK not in self.stack:
            raise ValueError("malformed pickle: no MARK for an opcode that needs one")
        cut = len(self.stack) - 1 - self.stack[::-1].index(_MARK)
        values, self.stack = self.stack[cut + 1 :], self.stack[:cut]
        return values

    def made(self, parts: list[_Value]) -> _Value:
        """A new value holding ``parts``."""
        for part in parts:
            part.contained = True
        value = _Value(1 + sum(part.objects for part in parts), 1 + max((part.depth for part in parts), default=0))
        return self.checked(value)

    def add_into(self, parts: list[_Value]) -> None:
        """``parts`` put into the value now on top (append, set items, build)."""
        target = self.pop()
        if target.contained:
            raise PickleRefused("changes an object after another holds it, which a state dict never does")
        for part in parts:
            part.contained = True
            target.objects += part.objects
            target.depth = max(target.depth, 1 + part.depth)
        self.stack.append(self.checked(target))

    def checked(self, value: _Value) -> _Value:
        if value.objects > MAX_OBJECTS:
            raise PickleRefused(f"is too large: a value of over {MAX_OBJECTS:,} objects, counting each reuse")
        if value.depth > MAX_DEPTH:
            raise PickleRefused(f"is nested more than {MAX_DEPTH} deep")
        return value

    def remember(self, index: int) -> None:
        if not 0 <= index < MAX_MEMO:  # the unpickler sizes its memo to the highest index
            raise PickleRefused(f"names memo entry {index} (at most {MAX_MEMO - 1:,})")
        if not self.stack or self.stack[-1] is _MARK:
            raise ValueError("malformed pickle: nothing to put in the memo")
        self.memo[index] = self.stack[-1]

    def recall(self, index: int) -> None:
        if index not in self.memo:
            raise ValueError(f"malformed pickle: memo entry {index} was never set")
        self.stack.append(self.memo[index])

    def push(self, value: _Value) -> None:
        self.stack.append(value)

    def duplicate(self) -> None:
        value = self.pop()
        self.stack += [value, value]


def _reduce(machine: _Weigher) -> None:
    arguments = machine.pop()  # the callable's arguments, then the callable (or module, name)
    machine.push(machine.made([arguments, machine.pop()]))


# What each accepted opcode does to the weights: (machine, the opcode's argument).
_STEPS: dict[str, Callable[[_Weigher, Any], None]] = {
    **{name: lambda machine, _: machine.push(_Value()) for name in _ATOMS},
    **{name: lambda machine, _: machine.push(machine.made(machine.pop_to_mark())) for name in _FROM_MARK},
    **{name: lambda machine, _: machine.add_into(machine.pop_to_mark()) for name in _INTO_FROM_MARK},
    **{name: lambda machine, index: machine.remember(int(index)) for name in _PUTS},
    **{name: lambda machine, index: machine.recall(int(index)) for name in _GETS},
    "TUPLE1": lambda machine, _: machine.push(machine.made([machine.pop()])),
    "TUPLE2": lambda machine, _: machine.push(machine.made([machine.pop(), machine.pop()])),
    "TUPLE3": lambda machine, _: machine.push(machine.made([machine.pop(), machine.pop(), machine.pop()])),
    "REDUCE": lambda machine, _: _reduce(machine),
    "STACK_GLOBAL": lambda machine, _: _reduce(machine),
    "BINPERSID": lambda machine, _: machine.push(machine.made([machine.pop()])),
    "APPEND": lambda machine, _: machine.add_into([machine.pop()]),
    "BUILD": lambda machine, _: machine.add_into([machine.pop()]),
    "SETITEM": lambda machine, _: machine.add_into([machine.pop(), machine.pop()]),
    "MEMOIZE": lambda machine, _: machine.remember(len(machine.memo)),
    "MARK": lambda machine, _: machine.push(_MARK),
    "POP": lambda machine, _: machine.pop(),
    "POP_MARK": lambda machine, _: machine.pop_to_mark(),
    "DUP": lambda machine, _: machine.duplicate(),
    "PROTO": lambda machine, _: None,
    "FRAME": lambda machine, _: None,
}
