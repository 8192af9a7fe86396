import os
import subprocess
import sys
from pathlib import Path

import pytest

PROGRAMS = Path(__file__).parent / "programs"
SRC = Path(__file__).resolve().parents[2] / "src"


def run_modeguard(*args, cwd=None, timeout=180):
    """`python -m modeguard ...` as a real subprocess, single-threaded and offline."""
    return subprocess.run([sys.executable, "-m", "modeguard", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=program_env(), timeout=timeout)


def program_env() -> dict[str, str]:
    """The environment of a program under test, with or without modeguard: one thread, so
    that results compare bit for bit, and offline."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
            "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}


@pytest.fixture
def modeguard_cli():
    return run_modeguard
