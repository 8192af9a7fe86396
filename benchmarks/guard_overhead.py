"""Cost of `modeguard.guard()` on every call: resnet18 on CPU, inference at batch 1 and
training steps at batch 2, with and without the guard side by side (interleaved rounds, medians). Writes benchmarks/results/guard_overhead.json."""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision
from rich.console import Console

import modeguard
from _results import save, table as results_table

ROUNDS = 30
CALLS = 20


def timed(step, x) -> float:
    start = time.perf_counter()
    for _ in range(CALLS):
        step(x)
    return (time.perf_counter() - start) / CALLS


def measure(model, step, x, rounds: int) -> tuple[float, float]:
    plain, guarded = [], []
    for _ in range(rounds):
        plain.append(timed(step, x))
        with modeguard.guard(model, on="raise"):  # correct code: a finding would stop the benchmark
            guarded.append(timed(step, x))
    return statistics.median(plain), statistics.median(guarded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved rounds per setting")
    rounds = parser.parse_args().rounds
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    x = torch.randn(1, 3, 224, 224)
    rows = []
    with torch.no_grad():
        model.eval()
        model(x)
        rows.append(("eval, no_grad (inference)", *measure(model, model, x, rounds)))
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)

    def train_step(batch):
        optimizer.zero_grad()
        model(batch).logsumexp(1).mean().backward()
        optimizer.step()

    xb = torch.randn(2, 3, 224, 224)  # training needs >= 2 samples per BatchNorm channel
    rows.append(("train step: forward, backward, SGD (batch 2)", *measure(model, train_step, xb, rounds)))
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
