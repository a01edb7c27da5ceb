"""The web app in real Chromium: ``syntheticmri web`` in a child process, the page driven as a user would.

Marked ``browser``: the default suite leaves them out, ``.ci/run`` installs Debian's Chromium and runs them
(with ``SYNTHETICMRI_REQUIRE_BROWSER=1``: a missing Chromium fails there instead of skipping).
With ``SYNTHETICMRI_SCREENSHOTS=DIR`` the page after segmentation is saved as ``DIR/web.png`` (the README's).
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SyntheticMRILib.io.maps import load_maps
from SyntheticMRILib.io.provenance import read_provenance
from SyntheticMRILib.io.volumes import Volume, read_volume, write_volume
from SyntheticMRILib.io.labels import STRUCTURES
from SyntheticMRILib.physics.protocols import Protocol, parameter_bounds, preset_values
from SyntheticMRILib.physics.synthesis import synthesize_volume
from SyntheticMRILib.resources import sample_paths

playwright_api = pytest.importorskip("playwright.sync_api")
from conftest import write_maps  # noqa: E402
from web_browser import CHROMIUM, AppPage, WebServer, launch  # noqa: E402

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server():
    server = WebServer()
    yield server
    assert server.stop() == 0, server.text()[-2000:]
    assert server.session is not None and not server.session.exists(), "the session folder outlived the server"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():  # .ci/run installs it and sets SYNTHETICMRI_REQUIRE_BROWSER: no quiet skip there
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        pytest.fail(missing) if os.environ.get("SYNTHETICMRI_REQUIRE_BROWSER") else pytest.skip(missing)
    with playwright_api.sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def app(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    yield AppPage(page, server.url)
    page.close()


def set_slider(app: AppPage, name: str, key: str) -> None:
    """A slider moved with the keyboard (Home/End), as a user may: no release event follows a key."""
    app.thumb(name).focus()
    app.page.keyboard.press(key)
    app.page.wait_for_timeout(300)


def test_the_page_opens_on_the_sample_in_t2_flair(app):
    values = preset_values("T2-FLAIR")
    assert "T2-FLAIR" in app.status() and f"TR {values['tr']:g}" in app.status()
    assert [app.value(name) for name in ("tr", "te", "ti")] == [values["tr"], values["te"], values["ti"]]
    assert len(set(app.frames())) == 4  # three slice views and the 3-D view, each with its own picture


def test_moving_te_changes_the_rendered_slice_and_the_whole_volume_follows(app):
    before_picture, before_frames = app.view_picture(0), app.frames()
    te = app.value("te")
    app.drag("te", 120, steps=4)
    app.wait_for_new_frame(before_frames)
    app.page.wait_for_function("te => !document.querySelector('.status').innerText.includes('TE ' + te + ' ')", arg=te)
    new_te = app.value("te")
    assert new_te > te + 50
    app.page.wait_for_timeout(1500)  # the whole volume, rendered
    assert app.view_picture(0) != before_picture
    assert f"TE {new_te:g}" in app.status() and "Custom" in app.page.locator(".contrast").inner_text()


def test_te_cannot_pass_tr(app):
    set_slider(app, "tr", "Home")  # TR at its minimum for an IR: TE and TI must follow it down
    tr = app.value("tr")
    set_slider(app, "te", "End")
    app.drag("te", 2000)  # and dragged far past the end
    app.page.wait_for_timeout(800)
    te, ti = app.value("te"), app.value("ti")
    bounds = parameter_bounds(tr, ti, "ir")
    assert te == app.bound("te") <= bounds["te"][1] < tr
    assert ti < tr and f"TE {te:g}" in app.status()


def test_segment_shows_the_14_structures_with_volumes(app, server):
    app.page.locator(".contrast").click()
    app.page.get_by_role("option", name="T1w", exact=True).click()
    app.page.locator(".run-segment").click()
    app.page.wait_for_selector(".structure >> nth=13", timeout=180_000)
    rows = app.page.locator(".structure")
    assert rows.count() == len(STRUCTURES) == 14
    names = [rows.nth(k).locator("td").nth(0).inner_text().strip() for k in range(14)]
    volumes = [float(rows.nth(k).locator("td").nth(1).inner_text()) for k in range(14)]
    assert sorted(names) == sorted(STRUCTURES)
    assert all(0.1 < ml < 20 for ml in volumes), volumes  # subcortical structures: tenths of a ml to ~10 ml
    assert "14 structures" in app.page.locator(".job-text").inner_text()
    app.page.wait_for_timeout(1500)
    if os.environ.get("SYNTHETICMRI_SCREENSHOTS"):
        app.page.locator(".structures").scroll_into_view_if_needed()  # the contrast, the buttons and the table
        app.page.screenshot(path=str(Path(os.environ["SYNTHETICMRI_SCREENSHOTS"]) / "web.png"))


def test_downloads_are_the_volumes_on_the_sample_grid(app, tmp_path):
    sample = read_volume(sample_paths()["t1"])
    buttons = app.page.locator(".download")
    files = [buttons.nth(k).inner_text().strip() for k in range(buttons.count())]
    assert files[0].startswith("Synthetic_") and "segmentation.nrrd" in files and files[-1].endswith(".mrb")
    for name in (files[0], "segmentation.nrrd"):
        with app.page.expect_download() as download:
            app.page.get_by_role("button", name=name, exact=True).click()
        path = tmp_path / download.value.suggested_filename
        download.value.save_as(path)
        volume = read_volume(path)
        assert volume.same_grid(sample), name
    synthetic = read_volume(tmp_path / files[0])
    assert read_provenance(tmp_path / files[0]).protocol.sequence == "se"  # the T1w chosen above
    labels = read_volume(tmp_path / "segmentation.nrrd").array
    assert len(np.unique(labels)) == 15 and synthetic.array.max() > 0


def children(server: WebServer) -> list:
    """The server's job processes still alive (the ``syntheticmri`` children it starts)."""
    found = subprocess.run(["pgrep", "-f", "-P", str(server.process.pid), "SyntheticMRILib.apps.child"],
                           capture_output=True, text=True)
    return found.stdout.split()


def test_a_job_can_be_cancelled(app, server):
    app.page.locator(".run-contrast").click()
    app.page.wait_for_timeout(1500)
    assert children(server), "no job process was started"
    clicked = time.monotonic()
    app.page.locator(".cancel").click()
    app.page.wait_for_function("() => document.querySelector('.job-text').innerText.includes('Cancelled')", timeout=30_000)
    assert time.monotonic() - clicked < 5  # the child stops within its grace, not when its work is done
    assert app.page.locator(".run-contrast").is_enabled() and children(server) == []
    assert not app.page.locator(".learned-contrast").count()  # nothing half-made is shown


def test_a_key_press_then_a_download_gives_the_whole_volume_at_the_shown_value(app, tmp_path):
    """Keys move a slider without a release event: the file must not be the preview's slices over an older volume."""
    set_slider(app, "tr", "End")
    app.thumb("te").focus()
    for _ in range(7):
        app.page.keyboard.press("ArrowRight")
    te, tr = app.value("te"), app.value("tr")
    with app.page.expect_download() as download:
        app.page.locator(".download").first.click()
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    maps = load_maps(*(sample_paths()[name] for name in ("t1", "t2", "pd")))
    truth = synthesize_volume(*maps.tensors(), Protocol("se", tr, te), fused=False).numpy()
    assert read_provenance(path).protocol == Protocol("se", tr, te)
    np.testing.assert_allclose(read_volume(path).array, truth, atol=1e-6)


def test_optimized_contrast_lists_the_learned_contrasts(app):
    app.page.locator(".run-contrast").click()
    app.page.wait_for_selector(".learned-contrast >> nth=0", timeout=180_000)
    items = app.page.locator(".learned-contrast")
    names = [items.nth(k).inner_text() for k in range(items.count())]
    assert len(names) >= 1 and all(name.startswith("Learned contrast") and "TR" in name for name in names)
    before = app.frames()
    items.nth(items.count() - 1).click()
    app.wait_for_new_frame(before)


def upload(app: AppPage, files: dict) -> None:
    for name, path in files.items():
        app.page.locator(f".upload-{name} input[type=file]").set_input_files(str(path))


def test_bad_uploads_show_the_librarys_error_and_the_session_goes_on(app, tmp_path):
    t1, pd = read_volume(sample_paths()["t1"]), read_volume(sample_paths()["pd"])
    flat = tmp_path / "flat.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(t1.array[90]), str(flat))  # a 2-D image
    upload(app, {"t1": flat, "t2": sample_paths()["t2"], "pd": sample_paths()["pd"]})
    app.page.wait_for_selector(".error", timeout=30_000)
    assert app.error() == "flat.nrrd: is 2-D; expected a 3-D volume"

    cropped = tmp_path / "pd_cropped.nrrd"
    write_volume(Volume(pd.array[2:], spacing=pd.spacing, origin=pd.origin, direction=pd.direction), cropped)
    with pytest.raises(Exception) as expected:  # the library's own words for these files
        load_maps(sample_paths()["t1"], sample_paths()["t2"], cropped)
    upload(app, {"t1": sample_paths()["t1"], "t2": sample_paths()["t2"], "pd": cropped})
    app.page.wait_for_function("m => document.querySelector('.error') && document.querySelector('.error').innerText.includes(m)",
                               arg="PD map is on a different grid", timeout=30_000)
    assert app.error() == str(expected.value)

    before = app.frames()  # still usable: the maps shown are the sample's, sliders still synthesize
    app.drag("te", 40 if app.value("te") < app.bound("te") / 2 else -40)
    app.wait_for_new_frame(before)
    assert app.page.locator(".source").inner_text().count("Bundled sample") == 1


def test_an_accepted_upload_replaces_the_maps(app, tmp_path):
    files = write_maps(tmp_path, "my {name}.nii.gz", shape=(40, 44, 36), seed=5)
    before = app.frames()
    upload(app, files)
    app.page.wait_for_function("() => document.querySelector('.source').innerText.includes('Uploaded maps')",
                               timeout=30_000)
    app.wait_for_new_frame(before)
    assert app.error() == "" and "Uploaded maps shown" in app.page.locator(".upload-text").inner_text()


def test_stopping_the_server_during_a_job_ends_the_job_and_removes_the_session_folder(browser):
    server = WebServer()
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        AppPage(page, server.url).page.locator(".run-segment").click()
        page.wait_for_timeout(1500)
        running = children(server)
        assert running
        page.close()
    finally:
        started = time.monotonic()
        assert server.stop(timeout=20) == 0, server.text()[-2000:]
    assert time.monotonic() - started < 15 and not server.session.exists()
    assert not any(Path(f"/proc/{pid}").exists() for pid in running), "the job's process outlived the server"
