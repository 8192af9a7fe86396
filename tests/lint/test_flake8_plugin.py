import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parents[2] / "examples" / "train_buggy.py"


def test_flake8_reports_mg_codes(tmp_path):
    shutil.copy(EXAMPLE, tmp_path / "train.py")
    result = subprocess.run(
        [sys.executable, "-m", "flake8", "--select", "MG", "train.py"], capture_output=True, text=True, cwd=tmp_path
    )
    codes = [line.split()[1] for line in result.stdout.splitlines()]
    assert codes == ["MG105", "MG107", "MG102", "MG103", "MG101"], result.stdout + result.stderr
