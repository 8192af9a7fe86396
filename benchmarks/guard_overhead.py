"""Cost of `modeguard.guard()` on every call: resnet18, batch 1, CPU, with and without the
guard side by side (interleaved rounds, medians). Writes benchmarks/results/guard_overhead.json."""

from __future__ import annotations

import statistics
import time

import torch
import torchvision
from rich.console import Console

import modeguard
from _results import save, table as results_table

ROUNDS = 30
CALLS = 20


def timed(model, x) -> float:
    start = time.perf_counter()
    for _ in range(CALLS):
        model(x)
    return (time.perf_counter() - start) / CALLS


def measure(model, x) -> tuple[float, float]:
    plain, guarded = [], []
    for _ in range(ROUNDS):
        plain.append(timed(model, x))
        with modeguard.guard(model):
            guarded.append(timed(model, x))
    return statistics.median(plain), statistics.median(guarded)


def main() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    x = torch.randn(1, 3, 224, 224)
    rows = []
    with torch.no_grad():
        model.eval()
        model(x)
        rows.append(("eval, no_grad (inference)", *measure(model, x)))
    model.train()
    xb = torch.randn(2, 3, 224, 224)  # training needs >= 2 samples per BatchNorm channel
    rows.append(("train, grad (batch 2, BatchNorm checks on)", *measure(model, xb)))
    table = results_table(f"guard overhead, resnet18 on CPU (torch {torch.__version__}, {torch.get_num_threads()} threads)", ("setting", "plain (ms)", "guarded (ms)", "overhead"))
    results = []
    for name, plain, guarded in rows:
        overhead = guarded / plain - 1
        table.add_row(name, f"{1000 * plain:.3f}", f"{1000 * guarded:.3f}", f"{100 * overhead:+.2f}%")
        results.append({"setting": name, "plain_s": plain, "guarded_s": guarded, "overhead": overhead})
    Console().print(table)
    save("guard_overhead", results)


if __name__ == "__main__":
    main()
