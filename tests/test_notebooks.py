"""Every notebook runs top to bottom, headless, in a fresh kernel (nbclient); a cell that fails fails the test.

Selected with `-m notebooks`, and part of the default run. Notebooks that load a model skip with a reason while the
embedded tiny model is not installed (miniqwen3/data/tiny). MINIQWEN3_NOTEBOOK_MODEL=/path/to/checkpoint runs them
on another checkpoint instead (their `MODEL = None` cell is rewritten in memory; the files are not touched).

A cell may take at most 300 s (MINIQWEN3_NOTEBOOK_TIMEOUT=seconds changes that, for a real-size model). A notebook whose cell times out is run once more in a fresh kernel, with a
warning: on this shared machine we saw nbclient and an idle ipykernel 7 kernel both wait for a message that never
came (an intermittent stall also reported upstream, e.g. microsoft/vscode-jupyter#17410); a real failure or a
genuinely slow cell fails twice.

Kernels run with OPENBLAS_NUM_THREADS=1: the engine's matrices are small, and on a machine whose cores are busy
with other work a multi-threaded BLAS spends its time waiting for its threads (measured here: a 200-token forward
pass of the tiny model's shape, 2.3 s with 2 BLAS threads against 0.14 s with 1, while another process trained); set OPENBLAS_NUM_THREADS yourself to change it.
"""
import copy
import json
import os
import time
import warnings
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the dev extra is not installed (nbformat)")
nbclient = pytest.importorskip("nbclient", reason="the dev extra is not installed (nbclient)")
pytest.importorskip("ipykernel", reason="the dev extra is not installed (ipykernel)")
pytest.importorskip("ipywidgets", reason="the notebooks extra is not installed (ipywidgets)")
pytest.importorskip("matplotlib", reason="the notebooks extra is not installed (matplotlib)")

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
TINY = REPO / "miniqwen3" / "data" / "tiny" / "config.json"
NEEDS_NO_MODEL = {"01_rope", "05_kernels"}
ALL = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))

pytestmark = pytest.mark.notebooks


def model_cell(nb) -> int | None:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and cell.source.startswith("MODEL = None"):
            return i
    return None


def test_the_six_notebooks_are_there():
    assert ALL == ["00_quickstart", "01_rope", "02_routing", "03_load_balancing", "04_thinking_budget", "05_kernels",
                   "06_layer_walkthrough"]


@pytest.mark.parametrize("name", ALL)
def test_committed_without_outputs_and_with_a_model_cell(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: outputs not cleared"
    assert (model_cell(nb) is None) == (name in NEEDS_NO_MODEL), f"{name}: a model notebook starts with MODEL = None"
    first = nb.cells[0].source
    assert first.startswith("# ") and "../miniqwen3/" in first, f"{name}: says what it shows and links the code"


def execute(nb, keep, attempts: int = 2):
    """Run a copy of nb in a fresh kernel; on a cell timeout, once more. The executed copy is written to `keep`."""
    env = {"OPENBLAS_NUM_THREADS": "1", **os.environ}        # one BLAS thread unless the caller says otherwise
    for attempt in range(1, attempts + 1):
        run = copy.deepcopy(nb)
        timeout = int(os.environ.get("MINIQWEN3_NOTEBOOK_TIMEOUT", 300))
        client = nbclient.NotebookClient(run, timeout=timeout, kernel_name="python3",
                                         resources={"metadata": {"path": str(NOTEBOOKS)}})
        try:
            client.execute(env=env)
            return run
        except nbclient.exceptions.CellTimeoutError as e:
            if attempt == attempts:
                raise
            warnings.warn(f"{keep.stem}: a cell timed out ({str(e).splitlines()[0]}); running it again")
        finally:
            nbformat.write(run, keep)       # the executed copy, for a look after a failure
            if os.environ.get("MINIQWEN3_NOTEBOOK_KEEP"):         # or to take figures from
                nbformat.write(run, Path(os.environ["MINIQWEN3_NOTEBOOK_KEEP"]) / keep.name)


@pytest.mark.parametrize("name", ALL)
def test_runs_top_to_bottom(name, tmp_path, record_property):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    other = os.environ.get("MINIQWEN3_NOTEBOOK_MODEL")
    i = model_cell(nb)
    if i is not None:
        if other:
            nb.cells[i].source = nb.cells[i].source.replace("MODEL = None", f"MODEL = {other!r}", 1)
        elif not TINY.is_file():
            pytest.skip(f"{name} loads the embedded tiny model, which is not installed ({TINY} is missing); "
                        "set MINIQWEN3_NOTEBOOK_MODEL to a checkpoint folder to run it on another model")
    t0 = time.time()
    nb = execute(nb, tmp_path / f"{name}.ipynb")
    seconds = time.time() - t0
    record_property("seconds", round(seconds, 1))
    print(f"{name}: {seconds:.1f} s")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    shown = json.dumps([o.get("data", {}) for o in outputs])
    assert "image/png" in shown or "application/vnd.jupyter.widget-view+json" in shown, "nothing was drawn"


@pytest.mark.parametrize("name", ALL)
def test_first_cell_and_readme_show_the_picture(name):
    """What a reader will get, seen without running: docs/img/<name>.png (the panel after the browser check's slider
    move, `python scripts/browser_check.py --pictures docs/img`), in the notebook's first cell and in the README."""
    picture = REPO / "docs" / "img" / f"{name}.png"
    assert picture.is_file() and picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", \
        f"{picture} is missing: python scripts/browser_check.py --pictures docs/img"
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert f"](../docs/img/{name}.png)" in nb.cells[0].source, f"{name}: the first cell does not show its picture"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"](docs/img/{name}.png)" in readme, f"README: no picture of {name}"
