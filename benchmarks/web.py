"""Benchmark of the web app as a user feels it: slider to picture in a real browser (Chromium through Playwright).

``syntheticmri web`` runs on the bundled sample (186 x 219 x 172) in a child process; the page is driven with
the mouse, as in Testing/test_web_browser.py (the same harness, Testing/web_browser.py):

* preview while dragging: the TE thumb held and moved a few pixels at a time; per move, the time until a view
  shows a new picture (server: the visible slices recomputed, the views re-rendered, the pictures encoded and
  sent; browser: decoded and shown);
* release: the TE track clicked at a new place (a press and a release); the time until the page's status line
  reports the new TE, which the server sets after the whole volume is synthesized, and until the first new
  picture;
* the alternative without the visible-slice preview: the whole volume on every move, as the server measures
  it (synthesis and the volume node's update, as for the preview), beside the preview's own time.

    python benchmarks/web.py [--moves 20] [--releases 8]

Needs the ``web`` extra, Playwright and Chromium (``apt-get install chromium``). Timings are never asserted in tests.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing"))
from web_browser import AppPage, WebServer, launch  # noqa: E402


def status_ms(app: AppPage):
    """(whole volume ms, preview ms) from the status line the server writes."""
    found = re.search(r"· (\d+) ms · preview (\d+) ms", app.status())
    return (int(found.group(1)), int(found.group(2))) if found else (None, None)


def summary(values) -> str:
    values = sorted(values)
    return f"{statistics.median(values):7.0f} {values[int(0.9 * (len(values) - 1))]:7.0f} {len(values):4d}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=20, help="preview moves while dragging")
    parser.add_argument("--releases", type=int, default=8, help="clicks on the TE track")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    server = WebServer()
    try:
        with sync_playwright() as playwright:
            browser = launch(playwright)
            app = AppPage(browser.new_page(viewport={"width": 1400, "height": 900}), server.url)
            page = app.page
            page.wait_for_timeout(2000)

            preview, computed_preview = [], []
            box = app.thumb("te").bounding_box()
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(x, y)
            page.mouse.down()
            for k in range(args.moves):
                before = app.frames()
                start = time.perf_counter()
                page.mouse.move(x + 4 * (k + 1), y)
                preview.append(1000 * (app.wait_for_new_frame(before) - start))
                computed_preview.append(status_ms(app)[1])
            page.mouse.up()
            page.wait_for_timeout(1500)

            to_status, to_picture, computed_whole = [], [], []
            track = page.locator(".te .v-slider-track__background").first.bounding_box()
            for k in range(args.releases):
                te = app.value("te")
                target = track["x"] + track["width"] * (0.08 + 0.1 * (k % 5))
                before = app.frames()
                page.mouse.move(target, track["y"] + track["height"] / 2)
                page.mouse.down()
                start = time.perf_counter()
                page.mouse.up()
                frame = app.wait_for_new_frame(before)
                page.wait_for_function("te => !document.querySelector('.status').innerText.includes('TE ' + te + ' ')",
                                       arg=te, polling="raf")
                done = time.perf_counter()
                to_status.append(1000 * (done - start))
                to_picture.append(1000 * (frame - start))
                computed_whole.append(status_ms(app)[0])
                page.wait_for_timeout(500)
            browser.close()
    finally:
        server.stop()

    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, the bundled sample (186 x 219 x 172), headless Chromium")
    print(f"{'':54s} {'median':>7s} {'p90':>7s} {'n':>4s}   (ms)")
    print(f"{'preview: mouse move -> new picture in the page':54s} {summary(preview)}")
    print(f"{'release: mouse up -> first new picture':54s} {summary(to_picture)}")
    print(f"{'release: mouse up -> whole volume done, page told':54s} {summary(to_status)}")
    print(f"{'server: visible slices (the preview)':54s} {summary([v for v in computed_preview if v is not None])}")
    print(f"{'server: whole volume (the alternative, per move)':54s} {summary([v for v in computed_whole if v is not None])}")
    whole = statistics.median([v for v in computed_whole if v is not None])
    part = max(statistics.median([v for v in computed_preview if v is not None]), 1)
    print(f"whole volume / visible slices, server compute: {whole / part:.1f}x")


if __name__ == "__main__":
    main()
