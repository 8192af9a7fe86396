"""Mode state of a model's module tree: mixed modes and modules `.eval()` never reaches."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from modeguard.runtime.inventory import describe


@dataclass(frozen=True)
class Unreached:
    """A module kept in a plain list/dict/tuple attribute: `train()`/`eval()` never reach it."""

    path: str  # e.g. "encoder.blocks[2]"
    module: nn.Module
    type_name: str
    mode_sensitive: bool
    registered_elsewhere: bool


def mixed_mode_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Submodules whose own `training` flag differs from the root's, outermost only."""
    found: list[tuple[str, nn.Module]] = []
    root_mode = model.training
    for name, module in model.named_modules():
        if name and module.training != root_mode:
            if not any(name.startswith(prefix + ".") for prefix, _ in found):
                found.append((name, module))
    return found


def contains_mode_sensitive(module: nn.Module) -> bool:
    return any(describe(m) is not None for m in module.modules())


def unreached_modules(model: nn.Module) -> list[Unreached]:
    registered = {id(m) for m in model.modules()}
    found = []
    for owner_name, owner in model.named_modules():
        for attr, value in vars(owner).items():
            if attr in ("_modules", "_parameters", "_buffers"):
                continue
            prefix = f"{owner_name}.{attr}" if owner_name else attr
            for path, module in _modules_in_container(value, prefix):
                found.append(
                    Unreached(
                        path,
                        module,
                        type(module).__name__,
                        contains_mode_sensitive(module),
                        id(module) in registered,
                    )
                )
    return found


def _modules_in_container(value: object, path: str, depth: int = 0):
    if depth > 3:
        return
    if isinstance(value, dict):
        items = ((f"{path}[{key!r}]", item) for key, item in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{path}[{i}]", item) for i, item in enumerate(value))
    else:
        return
    for item_path, item in items:
        if isinstance(item, nn.Module):
            yield item_path, item
        else:
            yield from _modules_in_container(item, item_path, depth + 1)
