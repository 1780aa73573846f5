"""Every notebook runs top to bottom, headless, in a fresh kernel (nbclient); a cell that fails fails the test.

Selected with `-m notebooks`, and part of the default run. Notebooks that load a model skip with a reason while the
embedded tiny model is not installed (miniqwen3/data/tiny). MINIQWEN3_NOTEBOOK_MODEL=/path/to/checkpoint runs them
on another checkpoint instead (their `MODEL = None` cell is rewritten in memory; the files are not touched).

A cell may take at most 300 s (MINIQWEN3_NOTEBOOK_TIMEOUT=seconds changes that, for a real-size model); a cell that
times out fails the test, with no second attempt.

The notebooks run through tests/notebook_client.py, nbclient's client with two changes to how it waits for the
kernel. Plain nbclient (0.11.0 with jupyter_client 8.10.0 and pyzmq 27.3.0, the latest releases as of this writing)
sometimes sat idle for the whole cell timeout and then went on without an error. scripts/notebook_stall.py, 12 passes
over all notebooks: 5 such stalls, in 01_rope cell 5 and 03_load_balancing cell 14, cells whose panel clears an
ipywidgets Output; each time the kernel's execute_reply sat in the client's shell socket until the timeout. The
cause, from a trace of every pyzmq call on that socket: while nbclient awaits the reply with one poll on the shell
socket, its Output-widget mimic answers the kernel's clear_output with a comm_msg on the same socket, and
jupyter_client's Session.send writes it through a plain zmq.Socket shadowing the zmq.asyncio one. A reply that has
arrived by then (2-8 ms after the kernel stamped it, in the 4 traced stalls) loses its wakeup to that send: libzmq's
send takes the socket's edge-triggered ZMQ_FD signal, pyzmq's asyncio layer is not told, and the poll wakes only on
its timer, at the cell timeout (`python scripts/notebook_stall.py --mechanism` shows it in two sockets). The client
here asks the socket for ZMQ_EVENTS after each send, which makes pyzmq wake the waiting poll, and polls in 0.5 s
slices (so that any wakeup lost the same way costs at most that). With it, 10 passes had no stall; the re-check
found the reply waiting behind a spent wakeup 5 times, after a comm_msg each time.

The trigger is gone from the notebooks themselves: their panels (miniqwen3.widgets.Panel) set their Output's
outputs as widget state instead of capturing a running cell's output, so the client has nothing to answer and sends
nothing while it waits; `test_runs_top_to_bottom` fails if any notebook makes the client send a comm_msg. Plain
nbclient and `jupyter nbconvert --execute` then run them without that stall (scripts/notebook_stall.py --client
nbclient; README, "Notebooks"). The client fix stays here for notebooks that do capture (a user's own cells).

Upstream: jupyter/nbclient#312 (hang with ipywidgets; re-polling PR #311) and jupyter/jupyter_client#1010 and #1059
(Session.send on asyncio sockets), open. `jupyter nbconvert --execute` runs the same code and can stall the same way
on a notebook with an Output widget; no release fixes it. From a checkout, PYTHONPATH=tests jupyter nbconvert
--execute --ExecutePreprocessor.kernel_manager_class=notebook_client.KernelManager ... uses this client; otherwise
the stall lasts at most the cell timeout (--ExecutePreprocessor.timeout) and ends without an error.

Kernels run with OPENBLAS_NUM_THREADS=1: the engine's matrices are small, and on a machine whose cores are busy
with other work a multi-threaded BLAS spends its time waiting for its threads (measured here: a 200-token forward
pass of the tiny model's shape, 2.3 s with 2 BLAS threads against 0.14 s with 1, while another process trained); set OPENBLAS_NUM_THREADS yourself to change it.
"""
import json
import os
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the dev extra is not installed (nbformat)")
nbclient = pytest.importorskip("nbclient", reason="the dev extra is not installed (nbclient)")
pytest.importorskip("ipykernel", reason="the dev extra is not installed (ipykernel)")
pytest.importorskip("ipywidgets", reason="the notebooks extra is not installed (ipywidgets)")
pytest.importorskip("matplotlib", reason="the notebooks extra is not installed (matplotlib)")

from notebook_client import NotebookClient  # noqa: E402  tests/notebook_client.py

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


def test_the_notebooks_are_there():
    assert ALL == ["00_quickstart", "01_rope", "02_routing", "03_load_balancing", "04_thinking_budget", "05_kernels",
                   "06_layer_walkthrough", "07_greener_moe", "08_auto_budget", "09_distillation"]


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


def execute(nb, keep):
    """Run nb in a fresh kernel (notebook_client.NotebookClient); the executed notebook is also written to `keep`."""
    env = {"OPENBLAS_NUM_THREADS": "1", **os.environ}        # one BLAS thread unless the caller says otherwise
    timeout = int(os.environ.get("MINIQWEN3_NOTEBOOK_TIMEOUT", 300))
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute(env=env)
        return nb
    finally:
        nbformat.write(nb, keep)            # the executed copy, for a look after a failure
        if os.environ.get("MINIQWEN3_NOTEBOOK_KEEP"):         # or to take figures from
            nbformat.write(nb, Path(os.environ["MINIQWEN3_NOTEBOOK_KEEP"]) / keep.name)


def record_answers(monkeypatch) -> list:
    """The comm_msgs the client's Output-widget mimic sends back on the shell socket (the stall's trigger), recorded
    in the returned list while `monkeypatch` is in force."""
    answered, send = [], nbclient.output_widget.OutputWidget.send
    monkeypatch.setattr(nbclient.output_widget.OutputWidget, "send",
                        lambda self, *a, **k: (answered.append(self.comm_id), send(self, *a, **k)))
    return answered


@pytest.mark.parametrize("name", ALL)
def test_runs_top_to_bottom(name, tmp_path, record_property, monkeypatch):
    answered = record_answers(monkeypatch)
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
    assert not answered, ("an Output widget captured a running cell's output, and the headless client answered it on "
                          "the shell socket: what can make plain nbclient and nbconvert stall (widgets.Panel)")
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


def client_answers(source: str, tmp_path) -> list:
    """Run one code cell headless; the comm_msgs the client's Output-widget mimic sent back on the shell socket."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    with pytest.MonkeyPatch.context() as monkeypatch:
        answered = record_answers(monkeypatch)
        execute(nb, tmp_path / "one.ipynb")
    assert not [o for c in nb.cells for o in c.outputs if o.output_type == "error"]
    return answered


def test_panels_give_the_headless_client_nothing_to_answer(tmp_path):
    """ipywidgets.interactive captures its output in a running cell, which the client answers on the shell socket
    (the check in test_runs_top_to_bottom can fail); a miniqwen3 panel sets its Output's state, which it does not."""
    slider = "ipywidgets.IntSlider(value=3, min=0, max=9)"
    interactive = f"import ipywidgets\nipywidgets.interactive(lambda x: x * 2, {{'auto_display': True}}, x={slider})"
    assert client_answers(interactive, tmp_path)
    panel = f"import ipywidgets\nfrom miniqwen3 import viz, widgets\nwidgets.panel(lambda x: viz.Html(f'<b>{{x}}</b>'), x={slider})"
    assert client_answers(panel, tmp_path) == []
