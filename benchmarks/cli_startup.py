"""The CLI's own overhead: `modeguard audit SPEC` wall time next to a script doing the same work
(import torch, import the model library, build, audit) in a fresh interpreter, with that
script's phases; and `modeguard --version`, the CLI with no torch work.
Also `import torchvision` as torchvision does it (which imports torch._dynamo) next to
modeguard's loader (which does not).

Usage: python benchmarks/cli_startup.py [--repeats 3]
Writes benchmarks/results/cli_startup.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
from rich.console import Console

from _results import save, table as results_table

SPECS = {
    "modeguard.examples:demo": None,
    "torchvision:resnet18": "2,3,64,64",
    "torchvision:mobilenet_v3_small": "2,3,64,64",
}

# One cold run of the in-process equivalent of `modeguard audit SPEC`, phase by phase.
PHASES = """
import json, sys, time
start = time.perf_counter()
import torch
torch_imported = time.perf_counter()
from modeguard.runtime import loading
source = sys.argv[1].partition(":")[0]
if source == "torchvision":
    loading.import_torchvision()
library_imported = time.perf_counter()
model, example, name = loading.load_factory(sys.argv[1])
if example is None:
    example = torch.randn(loading.parse_shape(sys.argv[2]), generator=torch.Generator().manual_seed(0))
built = time.perf_counter()
from modeguard.runtime.audit import audit
audit(model, example, name=name)
audited = time.perf_counter()
print(json.dumps({
    "import_torch_s": torch_imported - start, "import_library_s": library_imported - torch_imported,
    "build_s": built - library_imported, "audit_s": audited - built,
    "dynamo_imported": "torch._dynamo" in sys.modules,
}))
"""

PLAIN_TORCHVISION = """
import json, sys, time
import torch
start = time.perf_counter()
import torchvision
print(json.dumps({"s": time.perf_counter() - start, "dynamo_imported": "torch._dynamo" in sys.modules}))
"""


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=False, capture_output=True)
    return time.perf_counter() - start


def probe(program: str, *args: str) -> dict:
    """The program's own timings, plus its wall time: start and exit included, as for the CLI."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", program, *args], capture_output=True, text=True, check=True)
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "script_wall_s": time.perf_counter() - start}


def median_of(samples: list[dict]) -> dict:
    return {key: statistics.median(s[key] for s in samples) if isinstance(samples[0][key], float) else samples[0][key]
            for key in samples[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    python_start = statistics.median(wall([sys.executable, "-c", "pass"]) for _ in range(args.repeats))
    # The CLI with no torch work at all: Python, click (rich-click) and modeguard's own imports.
    cli_floor = statistics.median(wall([sys.executable, "-m", "modeguard.cli", "--version"]) for _ in range(args.repeats))
    plain = median_of([probe(PLAIN_TORCHVISION) for _ in range(args.repeats)])
    rows = []
    for spec, shape in SPECS.items():
        command = [sys.executable, "-m", "modeguard.cli", "audit", spec, "--format", "json"]
        if shape:
            command += ["--input-shape", shape]
        cli_times, phase_samples = [], []
        for _ in range(args.repeats):  # interleaved, so that both see the same machine load
            cli_times.append(wall(command))
            phase_samples.append(probe(PHASES, spec, shape or ""))
        cli, phases = statistics.median(cli_times), median_of(phase_samples)
        script = phases["script_wall_s"]
        rows.append({"spec": spec, "cli_s": cli, **phases, "cli_overhead_s": cli - script,
                     "cli_over_script": cli / script})
    table = results_table(
        f"modeguard audit vs a script doing the same work, fresh interpreters (torch {torch.__version__}, median of {args.repeats})",
        ("spec", "CLI (s)", "script (s)", "CLI / script", "script: import torch", "import library", "build", "audit"),
    )
    for r in rows:
        table.add_row(r["spec"], f"{r['cli_s']:.2f}", f"{r['script_wall_s']:.2f}", f"{r['cli_over_script']:.2f}x",
                      f"{r['import_torch_s']:.2f}", f"{r['import_library_s']:.2f}", f"{r['build_s']:.2f}", f"{r['audit_s']:.2f}")
    console = Console()
    console.print(table)
    console.print(f"modeguard --version (Python, click, modeguard; no torch): {cli_floor:.2f} s; bare Python: {python_start:.2f} s")
    via_loader = next((r for r in rows if r["spec"].startswith("torchvision:")), None)
    if via_loader:
        console.print(
            f"import torchvision: {plain['s']:.2f} s as torchvision does it (torch._dynamo imported: "
            f"{plain['dynamo_imported']}), {via_loader['import_library_s']:.2f} s through modeguard's loader "
            f"(torch._dynamo imported: {via_loader['dynamo_imported']})"
        )
    path = save("cli_startup", {"repeats": args.repeats, "torch": torch.__version__, "rows": rows, "cli_version_s": cli_floor,
                                "plain_torchvision_import": plain})
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
