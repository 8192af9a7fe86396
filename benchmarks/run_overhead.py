"""Cost of `modeguard run`: one training epoch and one evaluation pass of resnet18 on CPU (32x32
images), as a plain `python` program and under `python -m modeguard run`, side by side
(interleaved rounds, medians of the times the program measures itself, plus whole-process wall
time including start-up). Writes benchmarks/results/run_overhead.json.

    python benchmarks/run_overhead.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

IMAGES, BATCH, SIZE = 256, 32, 32


def workload() -> None:
    """The measured program: train one epoch, evaluate once; prints its own timings as JSON."""
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    data = [(torch.randn(BATCH, 3, SIZE, SIZE), torch.randint(0, 10, (BATCH,))) for _ in range(IMAGES // BATCH)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    start = time.perf_counter()
    for x, y in data:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    train = time.perf_counter() - start
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in data)
    evaluate = time.perf_counter() - start
    print(json.dumps({"train_s": train, "eval_s": evaluate, "correct": correct}))


def measure(command: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    times = json.loads(result.stdout.strip().splitlines()[-1])
    times["process_s"] = time.perf_counter() - start
    times["report"] = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workload", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.workload:
        workload()
        return
    import torch
    from rich.console import Console

    sys.path.insert(0, str(Path(__file__).parent))
    from _results import save, table as results_table

    script = str(Path(__file__).resolve())
    commands = {
        "plain": [sys.executable, script, "--workload"],
        "modeguard run": [sys.executable, "-m", "modeguard", "run", script, "--workload"],
    }
    runs: dict[str, list[dict]] = {name: [] for name in commands}
    for _ in range(options.rounds):
        for name, command in commands.items():
            runs[name].append(measure(command))
    medians = {name: {k: statistics.median(r[k] for r in rs) for k in ("train_s", "eval_s", "process_s")} for name, rs in runs.items()}
    table = results_table(
        f"modeguard run overhead: resnet18, {IMAGES} images {SIZE}x{SIZE}, batch {BATCH}, CPU 1 thread "
        f"(torch {torch.__version__}, median of {options.rounds} interleaved rounds)",
        ("phase", "plain (s)", "modeguard run (s)", "overhead"),
    )
    results = []
    for key, label in (("train_s", "training epoch"), ("eval_s", "evaluation pass"), ("process_s", "whole process (incl. start-up)")):
        plain, checked = medians["plain"][key], medians["modeguard run"][key]
        table.add_row(label, f"{plain:.3f}", f"{checked:.3f}", f"{100 * (checked / plain - 1):+.2f}%")
        results.append({"phase": label, "plain_s": plain, "modeguard_run_s": checked, "overhead": checked / plain - 1})
    Console().print(table)
    Console().print(f"sanitizer report: {runs['modeguard run'][-1]['report']}")
    save("run_overhead", {"results": results, "runs": runs})


if __name__ == "__main__":
    main()
