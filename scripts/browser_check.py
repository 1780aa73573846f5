"""Open the notebooks in JupyterLab in a real (headless) browser, run them, move a slider, take screenshots.

    python scripts/browser_check.py                       # every notebook; screenshots in benchmarks/out/browser
    python scripts/browser_check.py 01_rope 03_load_balancing --out /tmp/shots --model /path/to/checkpoint
    python scripts/browser_check.py --pictures docs/img         # also refresh the pictures the README shows

For each notebook: JupyterLab 4 on 127.0.0.1 (fixed token, no news, no kernel picker, no autosave), Debian's
chromium driven by playwright (`executable_path=/usr/bin/chromium`; nothing is downloaded), wait for the kernel to
be Idle, Run > Run All, wait until every code cell has run, then focus the handle of the slider in the panel tagged
`miniqwen3.widgets.CHECK`, press ArrowRight, and wait until that panel's output changes. Screenshots: the panel
before and after the move, and the whole page at the end. Prints one JSON line per notebook and exits 1 if any
notebook failed (a cell error, a missing widget, an output that did not change). With `--pictures DIR`, the panel
after the move is also saved as DIR/<notebook>.png for each notebook that passed: the picture of what a reader will
get, shown in the README and in each notebook's first cell (docs/img).

The notebooks are copied to a scratch folder first (the files in the repo are never touched); `--model` rewrites
their `MODEL = None` cell to load another checkpoint. Kernels run with OPENBLAS_NUM_THREADS=1 (see
tests/test_notebooks.py for why).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "miniqwen3-browser-check"
CHECK = "mq-check"          # miniqwen3.widgets.CHECK
SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"autoStartDefaultKernel": True},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(root: Path, names: list[str], model: str | None) -> None:
    """Copy the notebooks into root/notebooks (MODEL rewritten when given) and write the user settings."""
    (root / "notebooks").mkdir(parents=True)
    for name in names:
        text = (NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8")
        if model:
            nb = json.loads(text)
            for cell in nb["cells"]:
                src = "".join(cell["source"])
                if cell["cell_type"] == "code" and src.startswith("MODEL = None"):
                    cell["source"] = src.replace("MODEL = None", f"MODEL = {model!r}", 1)
            text = json.dumps(nb, indent=1, ensure_ascii=False)
        (root / "notebooks" / f"{name}.ipynb").write_text(text, encoding="utf-8")
    for rel, values in SETTINGS.items():
        path = root / "settings" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def start_lab(root: Path, port: int, log) -> subprocess.Popen:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "JUPYTER_PLATFORM_DIRS": "1"}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
           f"--LabApp.user_settings_dir={root / 'settings'}", f"--LabApp.workspaces_dir={root / 'workspaces'}",
           "--allow-root"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}; see {log.name}")
        try:
            api(port, "GET", "/api/status")
            return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"jupyter lab did not answer on port {port} within 120 s; see {log.name}")


def api(port: int, method: str, path: str):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
    return json.loads(body) if body else None


def delete_sessions(port: int) -> None:
    for s in api(port, "GET", "/api/sessions") or []:
        api(port, "DELETE", f"/api/sessions/{s['id']}")


def wait_idle(page, timeout_s: float) -> None:
    """The status bar reads "... (ipykernel) | Idle" (the toolbar's indicator turns idle too early)."""
    page.wait_for_function(
        """() => [...document.querySelectorAll('.jp-StatusBar-Widget')]
                 .some(e => /\\(ipykernel\\) \\| Idle/.test(e.textContent))""", timeout=timeout_s * 1000)


def cell_prompts(page) -> list[str]:
    return page.eval_on_selector_all(".jp-CodeCell .jp-InputPrompt", "els => els.map(e => e.textContent.trim())")


def run_all(page, timeout_s: float) -> list[str]:
    """Run > Run All, then wait until no code cell is queued or running and the kernel is idle."""
    page.click("li.lm-MenuBar-item:has-text('Run')")
    page.click("li.lm-Menu-item[data-command='runmenu:run-all']")
    page.wait_for_function("""() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                                    .some(e => e.textContent.includes('*'))""", timeout=60_000)
    page.wait_for_function("""() => ![...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                                    .some(e => e.textContent.includes('*'))""", timeout=timeout_s * 1000)
    wait_idle(page, 60)
    return cell_prompts(page)


def errors(page) -> list[str]:
    """Tracebacks shown in output areas (the ename line of each error output)."""
    return page.eval_on_selector_all(
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
        "els => els.map(e => e.textContent).filter(t => t.includes('Traceback') || /\\w+Error\\b/.test(t))"
        ".map(t => t.trim().split('\\n').slice(-1)[0].slice(0, 300))")


def wait_stable(page, state: str, timeout_s: float, quiet_s: float = 1.5) -> None:
    """Wait until the kernel is idle and the output `state` expression has not changed for quiet_s seconds
    (a panel redraws in steps: cleared, a table, then the figure)."""
    deadline, last, since = time.time() + timeout_s, None, time.time()
    while time.time() < deadline:
        now = page.evaluate(state)
        if now != last:
            last, since = now, time.time()
        elif time.time() - since >= quiet_s:
            wait_idle(page, timeout_s)
            if page.evaluate(state) == last:
                return
        page.wait_for_timeout(250)
    raise TimeoutError(f"the widget output kept changing for {timeout_s} s")


def move_slider(page, shots: Path, name: str, timeout_s: float) -> dict:
    """ArrowRight (ArrowLeft when at its maximum) on the first slider handle of the CHECK panel; wait for the
    panel's output to change."""
    panel = page.locator(f".{CHECK}").first
    panel.wait_for(state="visible", timeout=30_000)
    panel.scroll_into_view_if_needed()
    output = panel.locator(".widget-output").first
    output.locator(":scope > *").first.wait_for(timeout=30_000)      # the first render is there
    handle = panel.locator(".noUi-handle").first
    readout = panel.locator(".widget-readout").first
    state = "(() => { const o = document.querySelector('.%s .widget-output'); return o ? o.innerHTML : ''; })()" % CHECK
    wait_stable(page, state, timeout_s)
    before, value_before = page.evaluate(state), readout.text_content().strip()
    panel.screenshot(path=str(shots / f"{name}_before.png"))
    at_max = handle.get_attribute("aria-valuenow") == handle.get_attribute("aria-valuemax")
    handle.focus()
    page.keyboard.press("ArrowLeft" if at_max else "ArrowRight")
    page.wait_for_function(f"() => {state} !== {json.dumps(before)}", timeout=timeout_s * 1000)
    wait_stable(page, state, timeout_s)
    value_after = readout.text_content().strip()
    panel.scroll_into_view_if_needed()
    panel.screenshot(path=str(shots / f"{name}_after.png"))
    return {"slider_before": value_before, "slider_after": value_after,
            "output_changed": page.evaluate(state) != before}


def check(names: list[str], shots: Path, model: str | None, timeout_s: float) -> list[dict]:
    from playwright.sync_api import sync_playwright
    shots.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="miniqwen3-browser-") as tmp:
        root = Path(tmp)
        prepare(root, names, model)
        port = free_port()
        with open(root / "jupyterlab.log", "w") as log:
            lab = start_lab(root, port, log)
            try:
                with sync_playwright() as p:
                    browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
                    try:
                        for name in names:
                            results.append(check_one(browser, port, name, shots, timeout_s))
                            print(json.dumps(results[-1]), flush=True)
                            delete_sessions(port)
                    finally:
                        browser.close()
            finally:
                try:
                    delete_sessions(port)
                except OSError:
                    pass
                lab.terminate()
                try:
                    lab.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    lab.kill()
            shutil.copy(root / "jupyterlab.log", shots / "jupyterlab.log")
    return results


def check_one(browser, port: int, name: str, shots: Path, timeout_s: float) -> dict:
    t0 = time.time()
    result = {"notebook": name, "ok": False}
    for old in shots.glob(f"{name}_*.png"):
        old.unlink()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"http://127.0.0.1:{port}/lab/tree/notebooks/{name}.ipynb?reset&token={TOKEN}")
        wait_idle(page, 120)
        prompts = run_all(page, timeout_s)
        result["cells_run"] = sum(p.strip("[]: ").isdigit() for p in prompts)
        result["code_cells"] = len(prompts)
        result["errors"] = errors(page)
        if result["errors"] or result["cells_run"] != len(prompts):
            page.screenshot(path=str(shots / f"{name}_failed.png"), full_page=False)
            return result
        result.update(move_slider(page, shots, name, timeout_s))
        page.screenshot(path=str(shots / f"{name}_page.png"))
        result["ok"] = result["output_changed"] and result["slider_before"] != result["slider_after"]
    except Exception as e:  # a timeout or a missing element: report it with a picture of the page
        result["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        page.screenshot(path=str(shots / f"{name}_failed.png"))
    finally:
        result["seconds"] = round(time.time() - t0, 1)
        result["screenshots"] = sorted(str(p) for p in shots.glob(f"{name}_*.png"))
        page.close()
    return result


def save_pictures(results: list[dict], shots: Path, folder: Path) -> list[Path]:
    """Copy the panel screenshot taken after the slider move of each passed notebook to folder/<notebook>.png."""
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for r in results:
        after = shots / f"{r['notebook']}_after.png"
        if r["ok"] and after.is_file():
            saved.append(Path(shutil.copy(after, folder / f"{r['notebook']}.png")))
    return saved


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", help="names without .ipynb (default: all in notebooks/)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "browser"), help="screenshot folder")
    ap.add_argument("--model", default=None, help="run the notebooks on this checkpoint instead of MODEL = None")
    ap.add_argument("--timeout", type=float, default=600, help="seconds allowed for Run All of one notebook")
    ap.add_argument("--pictures", default=None, help="also save each passed notebook's panel as PICTURES/<name>.png")
    args = ap.parse_args(argv)
    names = args.notebooks or sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} not found: apt-get install chromium", file=sys.stderr)
        return 2
    shots = Path(args.out)
    results = check(names, shots, args.model, args.timeout)
    if args.pictures:
        for path in save_pictures(results, shots, Path(args.pictures)):
            print(f"picture: {path}")
    failed = [r["notebook"] for r in results if not r["ok"]]
    print(f"screenshots in {shots}; " + (f"FAILED: {', '.join(failed)}" if failed else f"all {len(results)} passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
