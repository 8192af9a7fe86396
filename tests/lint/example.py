"""The bundled buggy training script, as the CLI tests use it."""

import re
from pathlib import Path

EXAMPLE = Path(__file__).parents[2] / "examples" / "train_buggy.py"


def copy_example(target: Path) -> None:
    """The bundled buggy script without its `# noqa` markers: every planted bug is live."""
    target.write_text(re.sub(r"noqa: MG\d+ - planted: ", "", EXAMPLE.read_text()).replace("  # no parentheses", ""))
