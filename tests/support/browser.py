"""A real browser for tests: Debian's headless Chromium, driven by Playwright.

The browser is the distribution's own binary (`/usr/bin/chromium`, from the `chromium`
package that scripts/setup-host.sh installs); Playwright only drives it and never downloads
one (`playwright install` is never run). Chromium gets a fresh profile per use and the
flags that keep it from reaching out to Google's services, which this network refuses.

What a person does in JupyterLab lives here once, so the local test and the aws test
(through the SSH tunnel) check the same thing.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path(os.environ.get("WYVERN_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
# `make test` keeps tests/output/ with the results (JUnit XML); screenshots go beside them.
SCREENSHOTS = ROOT / "tests" / "output" / "browser"
# The user's copy of the example notebook in notebooks/, where JupyterLab opens (the
# workload's own copy beside it is read-only).
NOTEBOOK = "transfer_learning.ipynb"
# The cell a person types: it must run in the notebook's kernel, in the container.
DEVICE_CELL = (
    "import torch\n"
    "print('wyvern-device:', 'cuda' if torch.cuda.is_available() else 'cpu', torch.__version__)"
)
DEVICE_OUTPUT = re.compile(r"wyvern-device: (cuda|cpu) (\d+\.\d+\.\d+\S*)")


def missing_browser() -> str | None:
    """Why the browser cannot run here, or None: a missing part names its fix."""
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing: run scripts/setup-host.sh (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: run `make test-deps` (the [test] extra)"
    return None


@contextlib.contextmanager
def chromium_page(viewport: tuple[int, int] = (1400, 900)) -> Iterator[Page]:
    """One page of a fresh headless Chromium (its own profile, removed afterwards)."""
    from playwright.sync_api import sync_playwright

    problem = missing_browser()
    if problem:
        raise RuntimeError(problem)
    with (
        tempfile.TemporaryDirectory(prefix="wyvern-chromium-") as profile,
        sync_playwright() as pw,
    ):
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": viewport[0], "height": viewport[1]},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(60_000)
            yield page
        finally:
            context.close()


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def lab_url_from_summary(output: str) -> tuple[str, Path]:
    """The JupyterLab address and token file that the summary (report.yml) prints."""
    match = re.search(r"Open (http://\S+/lab)\?token=\$\(sudo cat (\S+)\)", output)
    if not match:
        raise AssertionError(f"the summary prints no `Open <url>/lab?token=...` line:\n{output}")
    return match[1], Path(match[2])


def run_device_cell_in_jupyterlab(page: Page, lab_url: str, token: str, shot: str) -> str:
    """Open JupyterLab with the token as a person would, open the user's notebook from the
    file browser (it opens on notebooks/), add a cell that imports torch and prints the
    device, run it, save the notebook (Ctrl+S), and return the output the page shows. A
    screenshot of the page is kept either way.
    """
    try:
        page.goto(f"{lab_url}?token={token}")
        # The file browser opens on notebooks/: the notebook, by a double click.
        for name in NOTEBOOK.split("/"):
            item = page.locator(".jp-DirListing-item", has_text=name).first
            item.wait_for(state="visible")
            item.dblclick()
        panel = page.locator(".jp-NotebookPanel:visible").first
        panel.wait_for(state="visible")
        # The kernel is up when the toolbar's status says idle.
        panel.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(
            state="attached", timeout=120_000
        )
        # Command mode on the first cell, insert a cell above it, type and run it.
        panel.locator(".jp-Cell").first.click()
        page.keyboard.press("Escape")
        page.keyboard.press("a")
        first = panel.locator(".jp-Cell").first
        first.locator(".cm-content").click()
        page.keyboard.insert_text(DEVICE_CELL)
        page.keyboard.press("Shift+Enter")
        output = first.locator(".jp-OutputArea-output")
        _wait_for_output(page, first, output.filter(has_text="wyvern-device:"))
        shown = output.inner_text()
        # Save as a person does; the tab loses its unsaved mark once the server has it.
        page.keyboard.press("Escape")
        page.keyboard.press("Control+s")
        page.locator(".lm-TabBar-tab.jp-mod-current.jp-mod-dirty").wait_for(
            state="detached", timeout=60_000
        )
        return shown
    finally:
        screenshot(page, shot)


def _wait_for_output(page: Page, cell, output, timeout_s: float = 180) -> None:
    """Wait for the cell's output; run the cell again while it is neither running nor
    queued. On a slow machine the toolbar can say idle before the session's kernel is
    attached, and JupyterLab then clears a run request instead of queueing it."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            output.wait_for(state="visible", timeout=15_000)
            return
        except PlaywrightTimeout:
            if time.monotonic() > deadline:
                raise
        if "*" not in cell.locator(".jp-InputPrompt").first.inner_text():
            cell.locator(".jp-InputPrompt").first.click()
            page.keyboard.press("Control+Enter")


def login_page_for_wrong_token(page: Page, lab_url: str, shot: str) -> dict[str, object]:
    """Open JupyterLab with a wrong token; say where the browser landed and what it shows."""
    try:
        page.goto(f"{lab_url}?token=not-the-token")
        page.wait_for_load_state("networkidle")
        return {
            "path": urlsplit(page.url).path,
            "password_field": page.locator("input[type='password']").count(),
            "lab_shell": page.locator("#jp-main-dock-panel").count(),
            "text": page.locator("body").inner_text(),
        }
    finally:
        screenshot(page, shot)
