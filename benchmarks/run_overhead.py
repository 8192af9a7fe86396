"""Cost of `modeguard run`: one training epoch and one evaluation pass of resnet18 on CPU (32x32
images), side by side in one run:

- in one process, epochs and evaluation passes alternate with the sanitizer's checks off and on
  (the same `Session` that `modeguard run` installs): the hot-path cost, robust to machine load;
- as separate processes, `python prog.py` against `python -m modeguard run prog.py` (the times the
  program measures itself, and the whole process including start-up).

Epoch and evaluation times are CPU seconds of the (single-threaded) process, which machine load
disturbs far less than wall-clock time; the whole process is wall-clock. Medians over
interleaved rounds. Writes benchmarks/results/run_overhead.json.

    python benchmarks/run_overhead.py [--rounds 5] [--process-rounds 3]
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


def setup():
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    data = [(torch.randn(BATCH, 3, SIZE, SIZE), torch.randint(0, 10, (BATCH,))) for _ in range(IMAGES // BATCH)]
    return model, data, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def epoch_and_evaluation(model, data, optimizer) -> tuple[float, float]:
    import torch

    model.train()
    start = time.process_time()
    for x, y in data:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    train = time.process_time() - start
    model.eval()
    start = time.process_time()
    with torch.no_grad():
        for x, _ in data:
            model(x)
    return train, time.process_time() - start


def workload() -> None:
    """The measured program: train one epoch, evaluate once; prints its own timings as JSON."""
    train, evaluate = epoch_and_evaluation(*setup())
    print(json.dumps({"train_s": train, "eval_s": evaluate}))


def in_process(rounds: int) -> dict[str, list[dict]]:
    """Checks off and on alternately in one process (the order flips every round)."""
    from modeguard.runtime.sanitizer import Session

    model, data, optimizer = setup()
    epoch_and_evaluation(model, data, optimizer)  # warm-up
    runs: dict[str, list[dict]] = {"plain": [], "modeguard run": []}
    for round_ in range(rounds):
        for checked in ((False, True) if round_ % 2 == 0 else (True, False)):
            session = Session().start() if checked else None
            train, evaluate = epoch_and_evaluation(model, data, optimizer)
            if session is not None:
                assert session.stop() == []
            runs["modeguard run" if checked else "plain"].append({"train_s": train, "eval_s": evaluate})
    return runs


def measure(command: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    times = json.loads(result.stdout.strip().splitlines()[-1])
    times["process_s"] = time.perf_counter() - start
    times["report"] = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    return times


def hook_cost(rounds: int, calls: int = 300) -> tuple[float, float]:
    """CPU seconds per module call added by the checks, measured on a chain of 60 cheap modules
    in eval mode (the hooks dominate), and the number of module calls of one resnet18 forward."""
    import torch
    from torch import nn
    from torch.nn.modules import module as torch_module

    from modeguard.runtime.sanitizer import Session

    chain = nn.Sequential(*[nn.Identity() for _ in range(59)], nn.BatchNorm1d(4)).eval()
    x = torch.randn(2, 4)

    def timed() -> float:
        start = time.process_time()
        with torch.no_grad():
            for _ in range(calls):
                chain(x)
        return (time.process_time() - start) / (calls * 60)

    plain, checked = [], []
    for _ in range(rounds):
        plain.append(timed())
        session = Session().start()
        chain(x)  # the first eval call at a site is the one that watches random draws
        checked.append(timed())
        session.stop()
    counted = []
    handle = torch_module.register_module_forward_pre_hook(lambda m, a: counted.append(m))
    model, data, _ = setup()
    with torch.no_grad():
        model(data[0][0])
    handle.remove()
    return statistics.median(checked) - statistics.median(plain), len(counted)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5, help="in-process rounds")
    parser.add_argument("--process-rounds", type=int, default=3, help="rounds of separate processes")
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
    processes: dict[str, list[dict]] = {name: [] for name in commands}
    for round_ in range(options.process_rounds):
        for name in (list(commands) if round_ % 2 == 0 else list(reversed(commands))):
            processes[name].append(measure(commands[name]))
    same_process = in_process(options.rounds)
    table = results_table(
        f"modeguard run overhead: resnet18, {IMAGES} images {SIZE}x{SIZE}, batch {BATCH}, CPU 1 thread "
        f"(torch {torch.__version__}; medians of interleaved rounds)",
        ("measurement", "plain (s)", "modeguard run (s)", "overhead"),
    )
    results = []
    rows = [
        (same_process, "train_s", f"training epoch, one process ({options.rounds} rounds)"),
        (same_process, "eval_s", f"evaluation pass, one process ({options.rounds} rounds)"),
        (processes, "train_s", f"training epoch, separate processes ({options.process_rounds} rounds)"),
        (processes, "eval_s", f"evaluation pass, separate processes ({options.process_rounds} rounds)"),
        (processes, "process_s", "whole process incl. start-up (wall-clock)"),
    ]
    for runs, key, label in rows:
        plain = statistics.median(r[key] for r in runs["plain"])
        checked = statistics.median(r[key] for r in runs["modeguard run"])
        table.add_row(label, f"{plain:.3f}", f"{checked:.3f}", f"{100 * (checked / plain - 1):+.2f}%")
        results.append({"measurement": label, "plain_s": plain, "modeguard_run_s": checked, "overhead": checked / plain - 1})
    Console().print(table)
    per_call, calls_per_forward = hook_cost(options.rounds)
    plain_epoch = statistics.median(r["train_s"] for r in same_process["plain"])
    plain_eval = statistics.median(r["eval_s"] for r in same_process["plain"])
    batches = IMAGES // BATCH
    estimate = {
        "hook_cpu_s_per_module_call": per_call,
        "module_calls_per_forward": calls_per_forward,
        "estimated_epoch_overhead": per_call * calls_per_forward * batches / plain_epoch,
        "estimated_eval_overhead": per_call * calls_per_forward * batches / plain_eval,
    }
    Console().print(
        f"hooks: +{1e6 * per_call:.2f} us CPU per module call; resnet18 makes {calls_per_forward} module calls "
        f"per forward, so the checks add ~{100 * estimate['estimated_epoch_overhead']:.2f}% to the training epoch and "
        f"~{100 * estimate['estimated_eval_overhead']:.2f}% to the evaluation pass (forward calls only)"
    )
    Console().print(f"sanitizer report: {processes['modeguard run'][-1]['report']}")
    save("run_overhead", {"results": results, "estimate": estimate, "in_process": same_process, "processes": processes})


if __name__ == "__main__":
    main()
