"""Compare two outputs of any nesting leaf by leaf."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from modeguard.runtime.trees import leaves


@dataclass
class LeafDifference:
    path: str
    max_abs: float | None
    rel: float | None  # max |a - b| / max(max |a|, max |b|): in [0, 2], meaningful near zero
    top1_agreement: float | None = None  # for classification-shaped outputs
    not_comparable: str | None = None  # why max_abs and rel are None

    @property
    def comparable(self) -> bool:
        return self.not_comparable is None

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "max_abs": self.max_abs,
            "rel": self.rel,
            "top1_agreement": self.top1_agreement,
            "not_comparable": self.not_comparable,
        }


def tolerance(dtype: torch.dtype) -> float:
    """Relative difference that float error alone can explain (batched vs single GEMMs, fusion)."""
    return 2e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-4


def leaf_difference(path: str, a: torch.Tensor, b: torch.Tensor) -> LeafDifference:
    if a.shape != b.shape:
        return LeafDifference(
            path, None, None, not_comparable=f"shapes differ: {list(a.shape)} vs {list(b.shape)}"
        )
    if not a.is_floating_point() and not a.is_complex():
        same = torch.equal(a, b)
        return LeafDifference(path, 0.0 if same else 1.0, 0.0 if same else 1.0)
    a32, b32 = a.detach().float(), b.detach().float()
    max_abs = float((a32 - b32).abs().max()) if a.numel() else 0.0
    if math.isnan(max_abs):  # rare: compare only where both are finite, NaN placement must agree
        if not torch.equal(torch.isnan(a32), torch.isnan(b32)):
            return LeafDifference(path, None, None, not_comparable="NaN in different places")
        both = torch.isfinite(a32) & torch.isfinite(b32)
        a32, b32 = a32[both], b32[both]
        max_abs = float((a32 - b32).abs().max()) if a32.numel() else 0.0
    scale = max(float(a32.abs().max()), float(b32.abs().max())) if a32.numel() else 0.0
    rel = max_abs / scale if scale > 0 else 0.0
    top1 = None
    classification_shaped = a.dim() == 2 or (a.dim() > 2 and path.endswith("logits"))
    if classification_shaped and a.shape[-1] > 1:
        top1 = float((a.argmax(-1) == b.argmax(-1)).float().mean())
    return LeafDifference(path, max_abs, rel, top1)


def compare_outputs(a: Any, b: Any) -> list[LeafDifference]:
    left, right = dict(leaves(a)), dict(leaves(b))
    return [leaf_difference(path, left[path], right[path]) for path in left if path in right]


def why_not_comparable(a: Any, b: Any) -> str | None:
    """Why two outputs share no leaf to compare (detection losses vs detections), else None."""
    left, right = dict(leaves(a)), dict(leaves(b))
    if set(left) & set(right) or not (left or right):
        return None  # something to compare, or no tensor at all on either side
    return f"the outputs share no tensor: {_paths(left)} vs {_paths(right)}"


def worst(diffs: list[LeafDifference]) -> LeafDifference | None:
    comparable = [d for d in diffs if d.comparable]
    return max(comparable, key=lambda d: d.rel, default=None)


def _paths(tensors: dict, shown: int = 3) -> str:
    if not tensors:
        return "no tensors"
    names = list(tensors)
    return ", ".join(names[:shown]) + (f" (+{len(names) - shown})" if len(names) > shown else "")


SAMPLED_VALUES = 4096


def fingerprint(t: torch.Tensor) -> torch.Tensor:
    """Up to 4096 values at fixed, evenly spaced positions: any dropout mask, noise or change of
    normalization alters some of them, and taking them costs almost nothing."""
    flat = t.detach().reshape(-1)
    step = max(1, flat.numel() // SAMPLED_VALUES)
    sample = flat[::step][:SAMPLED_VALUES]
    if not (sample.is_floating_point() or sample.is_complex()):
        sample = sample.double()
    return sample.abs().float().clone() if sample.is_complex() else sample.float().clone()


def fingerprints_match(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    """Equal up to `rtol` of the larger magnitude (float error of batched vs single GEMMs)."""
    if a.shape != b.shape:
        return False
    scale = max(float(a.abs().max()), float(b.abs().max())) if a.numel() else 0.0
    return float((a - b).abs().max()) <= rtol * scale if a.numel() else True


def fingerprint_difference(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(max abs, relative) difference of two fingerprints of the same shape, rel as in
    `leaf_difference`."""
    both = torch.isfinite(a) & torch.isfinite(b)
    a, b = a[both], b[both]
    if not a.numel():
        return 0.0, 0.0
    max_abs = float((a - b).abs().max())
    scale = max(float(a.abs().max()), float(b.abs().max()))
    return max_abs, (max_abs / scale if scale > 0 else 0.0)
