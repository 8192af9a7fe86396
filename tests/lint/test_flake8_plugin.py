import subprocess
import sys

from tests.lint.example import copy_example



def test_flake8_reports_mg_codes(tmp_path):
    copy_example(tmp_path / "train.py")
    result = subprocess.run(
        [sys.executable, "-m", "flake8", "--select", "MG", "train.py"], capture_output=True, text=True, cwd=tmp_path
    )
    codes = [line.split()[1] for line in result.stdout.splitlines()]
    assert codes == ["MG105", "MG107", "MG102", "MG103", "MG101"], result.stdout + result.stderr
