"""Inputs and outputs of any nesting: call a model, flatten outputs leaf by leaf, slice batches."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import torch

MAX_DEPTH = 8  # nesting levels followed into an output


def call_model(model: Callable, example_input: Any) -> Any:
    """A tensor is one argument, a tuple/list positional arguments, a dict keyword arguments."""
    if isinstance(example_input, dict):
        return model(**example_input)
    if isinstance(example_input, (tuple, list)):
        return model(*example_input)
    return model(example_input)


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(map_tensors(v, fn) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(map_tensors(v, fn) for v in obj)
    return obj


def leaves(obj: Any, path: str = "output", depth: int = 0) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in a nested output with a readable path (`output.logits`, `output[0]`),
    plain objects' attributes included (torchvision's ImageList, a KV cache)."""
    if depth > MAX_DEPTH:
        return
    depth += 1
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, dict):  # also Hugging Face ModelOutput (an OrderedDict)
        for key, value in obj.items():
            yield from leaves(value, f"{path}.{key}", depth)
    elif isinstance(obj, tuple) and hasattr(obj, "_fields"):
        for key, value in zip(obj._fields, obj):
            yield from leaves(value, f"{path}.{key}", depth)
    elif isinstance(obj, (tuple, list)):
        for i, value in enumerate(obj):
            yield from leaves(value, f"{path}[{i}]", depth)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from leaves(getattr(obj, f.name), f"{path}.{f.name}", depth)
    elif hasattr(obj, "__dict__") and not isinstance(obj, (type, torch.nn.Module)) and not callable(obj):
        for key, value in vars(obj).items():
            if not key.startswith("_"):
                yield from leaves(value, f"{path}.{key}", depth)


def batch_size(example_input: Any, dim: int = 0) -> int | None:
    """The size along `dim` shared by the input tensors, or None when there is none."""
    sizes = {t.shape[dim] for _, t in leaves(example_input, "input") if t.dim() > dim}
    return sizes.pop() if len(sizes) == 1 else None


def sample_of(t: torch.Tensor, index: int, size: int, dim: int = 0) -> torch.Tensor | None:
    """Sample `index` of a batched tensor (kept as a batch of one), or None if not batched."""
    return t.narrow(dim, index, 1) if t.dim() > dim and t.shape[dim] == size else None


def take_sample(obj: Any, index: int, size: int, dim: int = 0) -> Any:
    """Slice sample `index` out of every tensor batched along `dim` with `size`."""
    return map_tensors(obj, lambda t: s if (s := sample_of(t, index, size, dim)) is not None else t)


def to_device(obj: Any, device: torch.device, dtype: torch.dtype | None) -> Any:
    def move(t: torch.Tensor) -> torch.Tensor:
        if dtype is not None and t.is_floating_point():
            return t.to(device=device, dtype=dtype)
        return t.to(device)

    return map_tensors(obj, move)
