"""Which modules read their own `training` flag during a forward pass, and on which line.

Reading the class source through `inspect` fails for classes defined in a script, a notebook or
`exec`, and it cannot tell a branch in `forward()` from a read in a helper nobody calls. So the
flag itself is watched: for one pass each user-defined module's class is swapped for a subclass
whose `training` is a property that notes the reading line, then swapped back.
"""

from __future__ import annotations

import sys
import types
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Collection, Iterator

import torch
from torch import nn

from modeguard.runtime.state import named_modules

MAX_LINES_PER_MODULE = 3


def is_user_defined(module: nn.Module) -> bool:
    """Not one of torch's own layers, whose behaviour in each mode is known."""
    module_name = type(module).__module__
    torch_own = module_name == "torch" or module_name.startswith("torch.")
    return not torch_own and not isinstance(module, torch.jit.ScriptModule)


@dataclass
class FlagReads:
    """Per module name: the (file, line) places that read its `training` flag during the pass.
    `unwatched`: user-defined modules whose class could not be swapped (read or not: unknown)."""

    lines: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    unwatched: list[str] = field(default_factory=list)

    def read(self, name: str) -> bool:
        return name in self.lines

    def where(self, name: str) -> str:
        return ", ".join(f"{_short(path)}:{line}" for path, line in self.lines.get(name, []))


_WATCHED: dict[type, type] = {}
_active: list[tuple[dict[int, str], FlagReads]] = []


def _note_read(module: nn.Module) -> None:
    if not _active:
        return
    names, reads = _active[-1]
    name = names.get(id(module))
    if name is None:
        return
    places = reads.lines.setdefault(name, [])
    if len(places) < MAX_LINES_PER_MODULE:
        caller = sys._getframe(2)
        place = (caller.f_code.co_filename, caller.f_lineno)
        if place not in places:
            places.append(place)


def _get_training(self) -> bool:
    _note_read(self)
    return self.__dict__["training"]


def _set_training(self, value: bool) -> None:
    self.__dict__["training"] = value


def _watched_class(cls: type) -> type:
    watched = _WATCHED.get(cls)
    if watched is None:
        namespace = {
            "training": property(_get_training, _set_training),
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
        }
        watched = types.new_class(cls.__name__, (cls,), exec_body=lambda ns: ns.update(namespace))
        _WATCHED[cls] = watched
    return watched


@contextmanager
def watching_flags(
    model: nn.Module, skip: Collection[str] = (), named: list[tuple[str, nn.Module]] | None = None
) -> Iterator[FlagReads]:
    """Note every read of a user-defined module's `training` flag inside the block, except the
    `skip` modules' (by name). `named`: the model's `named_modules`, when the caller has them."""
    walked = named if named is not None else named_modules(model)
    names = {id(m): name or "<root>" for name, m in walked}
    reads = FlagReads()
    swapped: list[tuple[nn.Module, type]] = []
    try:
        for name, module in walked:
            if not is_user_defined(module) or (name or "<root>") in skip:
                continue
            original = type(module)
            try:
                object.__setattr__(module, "__class__", _watched_class(original))
            except Exception:  # noqa: BLE001 - a class that refuses subclassing stays unwatched
                reads.unwatched.append(name or "<root>")
                continue
            swapped.append((module, original))
        _active.append((names, reads))
        yield reads
    finally:
        if _active and _active[-1][1] is reads:
            _active.pop()
        for module, original in swapped:
            object.__setattr__(module, "__class__", original)


def _short(path: str) -> str:
    """A file path shortened to what follows site-packages (or the last two parts)."""
    marker = "site-packages/"
    if marker in path:
        return path.split(marker, 1)[1]
    parts = path.replace("\\", "/").split("/")
    return "/".join(parts[-2:])
