"""Compare two outputs of any nesting leaf by leaf."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from modeguard.runtime.trees import leaves


@dataclass
class LeafDifference:
    path: str
    max_abs: float
    rel: float  # max |a - b| / max |a|
    top1_agreement: float | None = None  # for classification-shaped outputs

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "max_abs": self.max_abs,
            "rel": self.rel,
            "top1_agreement": self.top1_agreement,
        }


def tolerance(dtype: torch.dtype) -> float:
    """Relative difference that float error alone can explain (batched vs single GEMMs, fusion)."""
    return 2e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-4


def leaf_difference(path: str, a: torch.Tensor, b: torch.Tensor) -> LeafDifference:
    if a.shape != b.shape:
        return LeafDifference(path, float("inf"), float("inf"))
    if not a.is_floating_point() and not a.is_complex():
        same = torch.equal(a, b)
        return LeafDifference(path, 0.0 if same else 1.0, 0.0 if same else 1.0)
    a32, b32 = a.detach().float(), b.detach().float()
    finite = torch.isfinite(a32) & torch.isfinite(b32)
    nan_mismatch = bool((torch.isnan(a32) != torch.isnan(b32)).any())
    diff = (a32 - b32).abs()[finite]
    max_abs = float(diff.max()) if diff.numel() else 0.0
    scale = float(a32[finite].abs().max()) if finite.any() else 0.0
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    if nan_mismatch:
        max_abs = rel = float("inf")
    top1 = None
    classification_shaped = (a.dim() == 2 or path.endswith("logits")) and a.dim() >= 2
    if classification_shaped and a.shape[-1] > 1:
        top1 = float((a32.argmax(-1) == b32.argmax(-1)).float().mean())
    return LeafDifference(path, max_abs, rel, top1)


def compare_outputs(a: Any, b: Any) -> list[LeafDifference]:
    left, right = dict(leaves(a)), dict(leaves(b))
    return [leaf_difference(path, left[path], right[path]) for path in left if path in right]


def fingerprint(t: torch.Tensor) -> torch.Tensor:
    """Two numbers that change when any value changes noticeably: sum of |x| and of x²."""
    x = t.detach()
    x = (x if x.is_floating_point() or x.is_complex() else x.double()).abs().float()
    return torch.stack([x.sum(), x.square().sum()])


def fingerprints_match(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    return bool(torch.allclose(a, b, rtol=rtol, atol=1e-12))
