"""Mode state of a model's module tree: mixed modes and modules `.eval()` never reaches."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from modeguard.findings import Finding, Severity
from modeguard.runtime.inventory import describe
from modeguard.runtime.state import MODULE_INTERNALS, named_modules, only_plain_values


@dataclass(frozen=True)
class Unreached:
    """A module kept in a plain list/dict/tuple attribute: `train()`/`eval()` never reach it."""

    path: str  # e.g. "encoder.blocks[2]"
    module: nn.Module
    type_name: str
    registered_elsewhere: bool

    @property
    def mode_sensitive(self) -> bool:
        """Judged on demand: aliases of registered modules (common in timm) never need it."""
        return contains_mode_sensitive(self.module)


def mixed_mode_modules(model: nn.Module, named: list[tuple[str, nn.Module]] | None = None) -> list[tuple[str, nn.Module]]:
    """Submodules whose own `training` flag differs from the root's, outermost only. `named`:
    the model's `named_modules`, when the caller has walked them."""
    found: list[tuple[str, nn.Module]] = []
    root_mode = model.training
    for name, module in named if named is not None else named_modules(model):
        if name and module.training != root_mode:
            if not any(name.startswith(prefix + ".") for prefix, _ in found):
                found.append((name, module))
    return found


def contains_mode_sensitive(module: nn.Module) -> bool:
    return any(describe(m) is not None for m in module.modules())


def unreached_modules(model: nn.Module, named: list[tuple[str, nn.Module]] | None = None) -> list[Unreached]:
    named = named if named is not None else named_modules(model)
    registered = {id(m) for _, m in named}
    found = []
    for owner_name, owner in named:
        for attr, value in vars(owner).items():
            if attr in MODULE_INTERNALS or not isinstance(value, CONTAINERS) or not value:
                continue
            if not isinstance(value, dict) and only_plain_values(value):
                continue
            prefix = f"{owner_name}.{attr}" if owner_name else attr
            for path, module in _modules_in_container(value, prefix):
                found.append(Unreached(path, module, type(module).__name__, id(module) in registered))
    return found


CONTAINERS = (dict, list, tuple)


def _modules_in_container(value: object, path: str, depth: int = 0):
    """Modules in a (nested) dict/list/tuple, with their paths; a path is only formatted for a
    module or a non-empty container."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        if isinstance(item, nn.Module):
            yield _item_path(path, key, value), item
        elif depth < 3 and isinstance(item, CONTAINERS) and item:
            yield from _modules_in_container(item, _item_path(path, key, value), depth + 1)


def _item_path(path: str, key: object, container: object) -> str:
    return f"{path}[{key!r}]" if isinstance(container, dict) else f"{path}[{key}]"


def mode_state_findings(model: nn.Module, named: list[tuple[str, nn.Module]] | None = None) -> list[Finding]:
    """MG203 (submodules whose mode differs from the root's) and MG204 (modules in plain
    containers that `.eval()` never reaches): what can be said without running the model."""
    named = named if named is not None else named_modules(model)
    findings = []
    root_mode = "training" if model.training else "eval"
    for name, module in mixed_mode_modules(model, named):
        mode = "training" if module.training else "eval"
        # A submodule left in training under an eval root drops/normalizes at inference:
        # a bug. A frozen (eval) submodule under a training root is often intentional.
        severity = Severity.WARNING if module.training and contains_mode_sensitive(module) else Severity.INFO
        findings.append(
            Finding(
                "MG203",
                severity,
                f"{type(module).__name__} is in {mode} mode while the model is in {root_mode} mode",
                "call model.eval()/model.train() on the root after changing submodule modes, or "
                "keep the mixed mode only where intended (a frozen backbone)",
                name,
            )
        )
    for item in unreached_modules(model, named):
        if item.registered_elsewhere:
            continue  # an alias of a registered module: eval() reaches it anyway
        effect = (
            "its Dropout/BatchNorm layers stay in training mode after model.eval()"
            if item.mode_sensitive
            else "model.eval(), .to(), .parameters() and state_dict() do not include it"
        )
        findings.append(
            Finding(
                "MG204",
                Severity.ERROR if item.mode_sensitive else Severity.WARNING,
                f"{item.type_name} kept in a plain Python container is not a registered submodule: {effect}",
                "wrap the container in nn.ModuleList / nn.ModuleDict (or nn.Sequential)",
                item.path,
            )
        )
    return findings
