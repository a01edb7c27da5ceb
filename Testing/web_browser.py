"""Drive ``syntheticmri web`` in a real browser: the server as a child process, Debian's Chromium through Playwright.

Used by the browser tests (Testing/test_web_browser.py) and by benchmarks/web.py. Playwright's own browser
download is not available on these machines: the system Chromium (``apt-get install chromium``) is launched
through ``executable_path``.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import List, Optional

CHROMIUM = os.environ.get("SYNTHETICMRI_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
VIEWS = "img.image-display-area"  # trame-slicer's remote views: one <img> per Slicer view, a new blob per frame


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class WebServer:
    """``syntheticmri web ARGS`` in its own process group on a free port; ``url`` once it answers.
    ``session`` is the temporary folder the server announced on stderr."""

    def __init__(self, *args: str, startup_s: float = 180.0, env: Optional[dict] = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"syntheticmri-web-{self.port}.log"
        self._log = open(self.log, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "SyntheticMRILib.apps.cli", "web", "--port", str(self.port), *args],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        deadline = time.monotonic() + startup_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}):\n{self.text()[-3000:]}")
            try:
                urllib.request.urlopen(self.url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            self.stop()
            raise RuntimeError(f"the server did not answer within {startup_s:.0f} s:\n{self.text()[-3000:]}")
        found = re.search(r"session files: (\S+)", self.text())
        self.session = Path(found.group(1)) if found else None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (a clean stop, as from a service manager), SIGKILL after ``timeout``; the exit status."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
        return self.process.returncode


def launch(playwright):
    """Headless Chromium from the system (no sandbox: containers run as root)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])


class AppPage:
    """The app's page: its controls by class name, its views' frames."""

    def __init__(self, page, url: str, timeout_ms: float = 120_000) -> None:
        self.page = page
        page.goto(url)
        page.wait_for_selector(".te .v-slider-thumb", timeout=timeout_ms)
        self.wait_for_frames()

    def value(self, name: str) -> float:
        """A slider's value, as the page shows it."""
        return float(self.thumb(name).get_attribute("aria-valuenow"))

    def bound(self, name: str) -> float:
        return float(self.thumb(name).get_attribute("aria-valuemax"))

    def thumb(self, name: str):
        return self.page.locator(f".{name} .v-slider-thumb").first

    def frames(self) -> List[str]:
        """The blob URL of each view's current picture."""
        return self.page.eval_on_selector_all(VIEWS, "images => images.map(image => image.src)")

    def wait_for_frames(self, timeout_ms: float = 60_000) -> None:
        self.page.wait_for_function(
            f"() => document.querySelectorAll('{VIEWS}').length === 4 && "
            f"[...document.querySelectorAll('{VIEWS}')].every(image => image.src.startsWith('blob:'))", timeout=timeout_ms)

    def wait_for_new_frame(self, before: List[str], timeout_ms: float = 30_000) -> float:
        """Block until a view shows a picture not in ``before``; returns the time (perf_counter) it was seen."""
        self.page.wait_for_function(
            "before => [...document.querySelectorAll('%s')].some((image, k) => image.src !== before[k])" % VIEWS,
            arg=before, timeout=timeout_ms, polling="raf")
        return time.perf_counter()

    def view_picture(self, index: int = 0) -> bytes:
        """A screenshot of one view (PNG bytes): what the user sees there."""
        return self.page.locator(VIEWS).nth(index).screenshot()

    def status(self) -> str:
        return self.page.locator(".status").inner_text()

    def error(self) -> str:
        alert = self.page.locator(".error")
        return alert.inner_text().strip() if alert.count() else ""

    def drag(self, name: str, dx: float, steps: int = 1, release: bool = True) -> None:
        """Press a slider's thumb, move it ``dx`` pixels in ``steps`` moves, and release it (unless told not)."""
        self.thumb(name).scroll_into_view_if_needed()
        box = self.thumb(name).bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        self.page.mouse.move(x, y)
        self.page.mouse.down()
        self.page.mouse.move(x + dx, y, steps=steps)
        if release:
            self.page.mouse.up()
