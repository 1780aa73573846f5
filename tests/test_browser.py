"""The browser check (scripts/browser_check.py): JupyterLab on localhost, Debian's chromium (headless) through
playwright opens a notebook, runs it, moves a slider and sees the widget's output change. One notebook per test.

Skips with the reason when /usr/bin/chromium, playwright or JupyterLab is missing, and, for the notebooks that load
a model, while the embedded tiny model is not installed (MINIQWEN3_NOTEBOOK_MODEL runs them on another checkpoint).
Screenshots go to benchmarks/out/browser (or $MINIQWEN3_BROWSER_OUT) for a human to look at.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
TINY = REPO / "miniqwen3" / "data" / "tiny" / "config.json"
NEEDS_NO_MODEL = {"01_rope", "05_kernels"}
ALL = sorted(p.stem for p in (REPO / "notebooks").glob("*.ipynb"))

pytestmark = [pytest.mark.notebooks, pytest.mark.browser]


@pytest.fixture(scope="module")
def browser_ready():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian: apt-get install chromium; .ci/run does it)")
    pytest.importorskip("playwright", reason="playwright is not installed (pip install playwright; no browser "
                                             "download needed, the script drives /usr/bin/chromium)")
    pytest.importorskip("jupyterlab", reason="the notebooks extra is not installed (jupyterlab)")


@pytest.mark.parametrize("name", ALL)
def test_notebook_in_a_browser(name, browser_ready):
    cmd = [sys.executable, str(REPO / "scripts" / "browser_check.py"), name,
           "--out", os.environ.get("MINIQWEN3_BROWSER_OUT", str(REPO / "benchmarks" / "out" / "browser"))]
    if name not in NEEDS_NO_MODEL:
        if os.environ.get("MINIQWEN3_NOTEBOOK_MODEL"):
            cmd += ["--model", os.environ["MINIQWEN3_NOTEBOOK_MODEL"]]
        elif not TINY.is_file():
            pytest.skip(f"{name} loads the embedded tiny model, which is not installed ({TINY} is missing)")
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert run.returncode == 0 and lines, f"browser check failed:\n{run.stdout}\n{run.stderr[-3000:]}"
    result = lines[0]
    assert result["ok"] and result["output_changed"] and result["slider_before"] != result["slider_after"]
    assert result["cells_run"] == result["code_cells"] and not result["errors"]
    for shot in result["screenshots"]:
        assert Path(shot).read_bytes()[:4] == b"\x89PNG"
    print(f"{name}: {result['seconds']} s, slider {result['slider_before']} -> {result['slider_after']}, "
          f"screenshots {result['screenshots']}")
