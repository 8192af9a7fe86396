"""The HTML audit report: self-contained, and its chart really draws (headless Chromium)."""

import os
import re
import shutil
import subprocess
import sys

import pytest
from PIL import Image

BAR = (0xD8, 0x1B, 0x60)  # the divergence bars' fill


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(".ci/run should have installed chromium")
        pytest.skip("no headless Chromium here (.ci/run installs it)")
    return path


def test_html_is_self_contained_and_repr_html(tmp_path):
    from modeguard import audit, examples

    report = audit(*examples.demo())
    page = report.to_html()
    assert page.startswith("<!DOCTYPE html>") and 'id="divergence-chart"' in page
    assert not re.search(r"<script|<link|https?://|src=", page)
    assert "MG201" in page and "BatchNorm health" in page
    fragment = report._repr_html_()
    assert fragment.startswith('<div class="modeguard-report">') and "<html" not in fragment


def test_cli_writes_the_report_and_chromium_draws_the_chart(tmp_path):
    browser = chromium()
    page = tmp_path / "report.html"
    result = subprocess.run([sys.executable, "-m", "modeguard.cli", "audit", "--html", str(page)], capture_output=True, text=True)
    assert result.returncode == 1 and page.is_file(), result.stderr
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1400", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, timeout=120, check=False,
    )
    image = Image.open(shot).convert("RGB")
    bar_pixels = sum(1 for pixel in image.getdata() if all(abs(a - b) <= 12 for a, b in zip(pixel, BAR)))
    # three bars (rel 1, 0.295, 0.0577 of 520 px, 16 px high): about 11,000 pixels drawn
    assert bar_pixels > 5_000, bar_pixels


def test_unwritable_html_path_is_a_one_line_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "modeguard.cli", "audit", "--html", str(tmp_path / "no" / "x.html")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
