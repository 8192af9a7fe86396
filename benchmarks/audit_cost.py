"""Full audit wall time as a multiple of one eval forward pass (same model, input, run).

Usage: python benchmarks/audit_cost.py [--batch 8] [--repeats 3] [--device cpu]
Writes benchmarks/results/audit_cost.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
import torchvision
from rich.console import Console

from modeguard import audit
from _results import save, table as results_table

MODELS = {
    "resnet50": lambda: torchvision.models.resnet50(weights=None),
    "vit_base_patch16_224": lambda: timm.create_model("vit_base_patch16_224", pretrained=False),
    "mobilenet_v3_large": lambda: torchvision.models.mobilenet_v3_large(weights=None),
    "efficientnet_b0": lambda: torchvision.models.efficientnet_b0(weights=None),
}


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rows = []
    for name, build in MODELS.items():
        model = build().eval().to(args.device)
        x = torch.randn(args.batch, 3, 224, 224, device=args.device)
        with torch.no_grad():
            model(x)  # warm-up
            forward = timed(lambda: model(x), args.repeats)
        audit_time = timed(lambda: audit(model, x), args.repeats)
        rows.append(
            {
                "model": name,
                "device": args.device,
                "batch": args.batch,
                "forward_s": forward,
                "audit_s": audit_time,
                "ratio": audit_time / forward,
            }
        )
    table = results_table(f"audit cost vs one eval forward (no_grad), torch {torch.__version__}", ("model", "device", "batch", "forward (s)", "audit (s)", "audit / forward"))
    for r in rows:
        table.add_row(
            r["model"], r["device"], str(r["batch"]), f"{r['forward_s']:.3f}",
            f"{r['audit_s']:.3f}", f"{r['ratio']:.2f}x",
        )
    Console().print(table)
    save("audit_cost", rows)


if __name__ == "__main__":
    main()
