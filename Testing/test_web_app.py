"""The web app without a browser: its session folder, its address checks, and the page's handlers on a real
trame-slicer scene, checked against the library computed independently (the browser tests drive the same page
in Chromium: Testing/test_web_browser.py)."""
from __future__ import annotations

import asyncio
import io
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from SyntheticMRILib.errors import InputError
from SyntheticMRILib.io.maps import load_maps
from SyntheticMRILib.io.provenance import read_provenance
from SyntheticMRILib.io.volumes import Volume, read_volume, write_volume
from SyntheticMRILib.physics.protocols import PARAMETERS, Protocol, parameter_bounds, preset_values, start_values
from SyntheticMRILib.physics.synthesis import synthesize_volume
from SyntheticMRILib.resources import sample_paths
from SyntheticMRILib.web.serve import NETWORK_WARNING, check_address, serve
from SyntheticMRILib.web.session import Session, result_name

from conftest import make_maps, write_maps


# --------------------------------------------------------------------------- the session folder
async def chunks(data: bytes, size: int = 1000):
    for k in range(0, len(data), size):
        yield data[k:k + size]


def receive(session, folder, name, client, data, **options):
    return asyncio.run(session.receive(folder, name, client, chunks(data), **options))


def nrrd(tmp_path, *comments, **header) -> bytes:
    """A small NRRD file's bytes, written by SimpleITK, with comment lines and header fields added or replaced."""
    path = tmp_path / "small.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 5, 6), np.float32)), str(path), useCompression=False)
    head, data = path.read_bytes().split(b"\n\n", 1)
    lines = [line for line in head.decode().splitlines() if line.split(":")[0] not in header]
    lines = lines[:1] + [f"# {c}" for c in comments] + lines[1:] + [f"{key}: {value}" for key, value in header.items()]
    return ("\n".join(lines) + "\n\n").encode() + data


def test_an_upload_keeps_only_the_extension_of_the_browsers_name(tmp_path):
    session = Session(root=str(tmp_path))
    folder, data = session.new_upload(), nrrd(tmp_path)
    path = receive(session, folder, "t1", "../../etc/passwd/T1 map.NRRD", data)
    assert path == session.folder / "uploads" / "1" / "t1.nrrd" and path.read_bytes() == data
    again = receive(session, folder, "t1", "x.nrrd", data)  # the same map chosen again replaces it
    assert sorted(p.name for p in folder.iterdir()) == ["t1.nrrd"] and again.is_file()
    assert session.new_upload() == session.folder / "uploads" / "2"  # a new set never mixes with the last
    for name, content, words in (("t1.nhdr", data, "unsupported file type"), ("t1.mhd", data, "unsupported"),
                                 ("t1.exe", data, "unsupported"), ("t1.nrrd", b"", "empty")):
        with pytest.raises(InputError, match=words):
            receive(session, folder, "t2", name, content)
    with pytest.raises(InputError, match="not a map"):
        receive(session, folder, "../t1", "t1.nrrd", data)
    with pytest.raises(InputError, match="superseded"):  # never replaces what is there
        receive(session, folder, "t1", "t1.nrrd", nrrd(tmp_path, "another"), superseded=lambda: True)
    assert sorted(p.name for p in folder.iterdir()) == ["t1.nrrd"] and (folder / "t1.nrrd").read_bytes() == data
    session.close()
    assert not session.folder.exists()


def test_a_header_that_reads_another_file_or_inflates_is_refused(tmp_path):
    """The server would read its own files (what the header names) or allocate what a tiny file declares."""
    secret = tmp_path / "secret.raw"
    secret.write_bytes(np.arange(120, dtype=np.float32).tobytes())
    session = Session(root=str(tmp_path))
    folder = session.new_upload()
    mha = "ObjectType = Image\nNDims = 3\nDimSize = 4 5 6\nElementType = MET_FLOAT\n{extra}ElementDataFile = {data}\n"
    for name, content, words in (
            ("t1.nrrd", nrrd(tmp_path, **{"data file": secret}), "names a separate data file"),
            ("t1.nrrd", nrrd(tmp_path, **{"datafile": secret}), "names a separate data file"),
            ("t1.nrrd", nrrd(tmp_path, *["x" * 100] * 700, **{"data file": secret}), "no end of the header"),
            ("t1.mha", mha.format(extra="", data=secret).encode(), "names a separate data file"),
            ("t1.mha", mha.format(extra="Comment = xElementDataFile = LOCAL\n", data=secret).encode(), "separate data"),
            ("t1.mha", mha.format(extra="ElementNumberOfChannels = 50\n", data="LOCAL").encode(), "50 components"),
            ("t1.mha", mha.format(extra=f"ElementDataFile: {secret}\n", data="LOCAL").encode(), "separate data"),
            ("t1.nrrd", nrrd(tmp_path, f"comment\rdata file: {secret}"), "names a separate data file"),
            ("t1.nrrd", nrrd(tmp_path, sizes="2048 2048 2048"), "declares 8,589,934,592 voxels")):
        with pytest.raises(InputError, match=words):
            receive(session, folder, "t1", name, content)
    assert list(folder.iterdir()) == []
    ok = nrrd(tmp_path, "data file: a comment names no file", **{"key:=value": "x"})
    assert receive(session, folder, "t1", "t1.nrrd", ok).is_file()  # comments and key/value pairs are not fields


def test_an_upload_over_the_limit_stops_as_it_streams(tmp_path):
    session = Session(max_upload_mb=1, root=str(tmp_path))
    folder, sent = session.new_upload(), []

    async def endless():
        while True:
            sent.append(1)
            yield bytes(2**16)

    with pytest.raises(InputError, match=r"more than this server accepts \(1 MiB"):
        asyncio.run(session.receive(folder, "pd", "pd.nrrd", endless()))
    assert len(sent) == 2**20 // 2**16 + 1 and list(folder.iterdir()) == []  # stopped at the first chunk past 1 MiB
    with pytest.raises(InputError, match="must be positive"):
        Session(max_upload_mb=0)


def test_result_names_are_plain_file_names():
    assert result_name("Synthetic T2-FLAIR", ".nrrd") == "Synthetic_T2-FLAIR.nrrd"
    assert result_name("../../x/Learned contrast 1 (IR TR 9000)", ".nrrd") == "x_Learned_contrast_1_IR_TR_9000.nrrd"
    assert result_name("///", ".mrb") == "result.mrb"


# --------------------------------------------------------------------------- the address
@pytest.mark.parametrize("host, network", [("127.0.0.1", False), ("localhost", False), ("::1", False),
                                           ("0.0.0.0", True), ("192.168.1.20", True), ("mri-server.example", True)])
def test_only_loopback_addresses_stay_on_this_machine(host, network):
    assert check_address(host, 8080) is network


def test_serving_the_network_warns_and_a_bad_request_stops_before_serving(tmp_path):
    err = io.StringIO()
    with pytest.raises(InputError, match="no such folder"):
        serve(port=8080, host="0.0.0.0", data=str(tmp_path / "missing"), err=err)
    assert err.getvalue().startswith(NETWORK_WARNING.format(host="0.0.0.0", port=8080)[:60])
    assert "reverse proxy" in err.getvalue()
    with pytest.raises(InputError, match="--port 70000"):
        check_address("127.0.0.1", 70000)


def test_the_cli_gives_one_line_errors():
    for args, words in ((["--port", "0"], "--port 0: must be between 1 and 65535"),
                        (["--data", "/no/such/folder"], "/no/such/folder: no such folder"),
                        (["--data", str(sample_paths()["t1"])],
                         f"{sample_paths()['t1']}: is a file; --data takes a folder of maps or of subjects"),
                        (["--max-upload-mb", "-5"], "--max-upload-mb -5.0: must be positive")):
        run = subprocess.run([sys.executable, "-m", "SyntheticMRILib.apps.cli", "web", *args], capture_output=True,
                             text=True, timeout=120)
        lines = [line for line in run.stderr.splitlines() if line.startswith("syntheticmri: error:")]
        assert run.returncode == 2 and lines == [f"syntheticmri: error: {words}"], run.stderr[-2000:]


# --------------------------------------------------------------------------- the page's handlers
@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from trame.app import get_server

    from SyntheticMRILib.web.app import WebApp

    study = tmp_path_factory.mktemp("study")
    for k in (1, 2):
        write_maps(study / f"sub-{k:02d}", shape=(12, 14, 10), seed=k)
    app = WebApp(get_server("test-web-app", client_type="vue3"), Session(root=str(tmp_path_factory.mktemp("session"))),
                 data=str(study))
    yield app
    app.session.close()


def expected(maps, protocol: Protocol) -> np.ndarray:
    return synthesize_volume(*maps.tensors(), protocol, fused=False).numpy()


def shown(app) -> np.ndarray:
    from SyntheticMRILib.slicer.bridge import volume_from_node

    return volume_from_node(app.output).array


def test_the_app_opens_on_the_sample_in_the_catalogues_start_contrast(app):
    sample = load_maps(*(sample_paths()[n] for n in ("t1", "t2", "pd")))
    assert {name: app.state[name] for name in PARAMETERS} == start_values()
    assert start_values() == {**preset_values("T2-FLAIR"), "ti2": preset_values("DIR")["ti2"],
                              "flip": preset_values("T1w-GRE")["flip"]}
    assert app.state.sources == ["Bundled sample", "sub-01", "sub-02"]
    np.testing.assert_allclose(shown(app), expected(sample, Protocol("ir", **preset_values("T2-FLAIR"))), atol=1e-6)


def test_sliders_take_the_catalogues_bounds_and_te_never_passes_tr(app):
    app.state.contrast = "T1w"
    app._on_contrast("T1w")
    assert {n: app.state[n] for n in ("tr", "te")} == preset_values("T1w")
    app.state.update(dict(tr=40.0, te=900.0))  # what a page could send: TE past TR
    app._on_parameter()
    bounds = parameter_bounds(app.state.tr, app.state.ti, "se")
    assert app.state.te <= bounds["te"][1] < app.state.tr == 40.0
    assert (app.state.te_min, app.state.te_max) == bounds["te"] and app.state.contrast == "Custom spin echo"


def test_a_released_slider_makes_the_whole_volume_at_its_value(app):
    sample = load_maps(*(sample_paths()[n] for n in ("t1", "t2", "pd")))
    app.state.contrast = "T2w"
    app._on_contrast("T2w")
    app.release("te", 60.0)
    np.testing.assert_allclose(shown(app), expected(sample, Protocol("se", 4500, 60)), atol=1e-6)
    assert "TE 60" in app.state.status


def test_downloads_carry_the_grid_and_the_protocol(app, tmp_path):
    from SyntheticMRILib.slicer.bridge import create_scene, load_scene

    path = app.result_file("synthetic")
    assert path.parent == app.session.results and read_volume(path).same_grid(read_volume(sample_paths()["t1"]))
    assert read_provenance(path).protocol == Protocol("se", 4500, 60)
    nodes = load_scene(app.result_file("scene"), create_scene())
    assert {"T1 map", "T2 map", "PD map", "Synthetic spin echo"} <= set(nodes)  # T2w with TE moved: a custom SE
    with pytest.raises(InputError, match="no result"):
        app.result_file("../../etc/passwd")


def test_segmentation_results_become_the_table_and_downloads(app, tmp_path):
    """What a finished ``segment`` child leaves (its label file and volumes.csv, written here from the sample's own
    labels) becomes the page's table: each structure's volume as counted here, its FreeSurfer colour."""
    from SyntheticMRILib import jobs
    from SyntheticMRILib.io.labels import STRUCTURES, label_table

    app.open_source("Bundled sample")
    labels = read_volume(sample_paths()["labels"])
    kept = np.where(np.isin(labels.array, list(STRUCTURES.values())), labels.array, 0).astype(np.int16)
    write_volume(labels.with_array(kept), tmp_path / jobs.SEGMENTATION_FILE)
    voxel_ml = float(np.prod(labels.spacing)) / 1000.0
    counted = {name: float(np.count_nonzero(kept == value)) * voxel_ml for name, value in STRUCTURES.items()}
    jobs.write_structure_volumes(tmp_path / jobs.VOLUMES_FILE, counted, STRUCTURES)
    app._load_results("segment", tmp_path)
    rows = {row["name"]: row for row in app.state.structures}
    assert set(rows) == set(STRUCTURES)
    colours = {entry.name: entry.color for entry in label_table().values()}
    for name, row in rows.items():
        assert row["ml"] == pytest.approx(counted[name], abs=1e-3)
        assert row["colour"] == "#" + "".join(f"{round(c):02x}" for c in colours[name][:3]), name
    assert {"segmentation.nrrd", "volumes.csv"} <= {entry["file"] for entry in app.state.downloads}
    assert np.array_equal(read_volume(app.result_file("segmentation")).array, kept)


def upload(app, files: dict) -> None:
    """What the page does: each file POSTed to the upload route (app.receive), its answer shown (app.uploaded)."""
    for name, path in files.items():
        try:
            app.uploaded(name, True, asyncio.run(app.receive(name, path.name, chunks(path.read_bytes()))))
        except InputError as error:
            app.uploaded(name, False, str(error))
            return


def test_the_upload_route_refuses_other_sites_and_takes_a_set_of_maps(app, tmp_path):
    """The aiohttp route the page POSTs to, with the check every request passes (page, websocket, uploads)."""
    from types import SimpleNamespace

    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    files = write_maps(tmp_path, shape=(12, 14, 10), seed=3)
    routes = web.Application()
    app._bind_routes(SimpleNamespace(app=routes))

    async def session():
        async with TestClient(TestServer(routes)) as client:
            async def post(name, client_name, **headers):
                response = await client.post(f"/upload/{name}?name={client_name}", data=files[name].read_bytes(),
                                             headers=headers)
                return response.status, await response.text()

            same_site = {"Origin": f"http://{client.host}:{client.port}"}
            app.hosts.add("mri.example.org")  # --allow-host: a proxy's public name, forwarded as the Host
            proxied = await post("t1", "t1.exe", Host="mri.example.org", Origin="https://mri.example.org")
            app.hosts.discard("mri.example.org")
            assert proxied[0] == 400  # through the check, to the route (which refuses the file type)
            return [await post("t1", "t1.nrrd", Origin="http://evil.example"),
                    await post("t1", "t1.nrrd", Host="evil.example:8080"),
                    await post("t1", "t1.exe", **same_site),
                    *[await post(name, f"{name}.nrrd", **same_site) for name in files]]

    foreign, rebound, wrong_type, *accepted = asyncio.run(session())
    assert foreign == (403, "refused: a request from http://evil.example")
    assert rebound[0] == 403 and "this server answers to" in rebound[1]
    assert wrong_type[0] == 400 and wrong_type[1].startswith("t1.exe: unsupported file type")
    assert [status for status, _ in accepted] == [200, 200, 200] and accepted[-1][1] == "Uploaded maps shown."
    assert accepted[0][1] == "T1 map received; now T2 map, PD map." and app.state.upload_text == accepted[-1][1]
    assert app.state.source == "Uploaded maps" and shown(app).shape == read_volume(files["t1"]).array.shape
    app.open_source("Bundled sample")


def test_a_bad_upload_shows_the_librarys_error_and_keeps_the_maps(app, tmp_path):
    before, kept = shown(app).copy(), set(app.session.uploads.iterdir())
    flat = tmp_path / "my scan.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((5, 6), np.float32)), str(flat))
    upload(app, {"t1": flat, "t2": sample_paths()["t2"], "pd": sample_paths()["pd"]})
    assert app.state.error == "my scan.nrrd: is 2-D; expected a 3-D volume"
    assert str(app.session.folder) not in app.state.error
    assert np.array_equal(shown(app), before) and app.state.source == "Bundled sample"
    assert set(app.session.uploads.iterdir()) == kept  # the refused set is gone


def test_uploaded_maps_replace_the_shown_ones_and_a_refused_set_never_mixes_in(app, tmp_path):
    files = write_maps(tmp_path, "{name}.nii.gz", shape=(12, 14, 10), seed=7)
    upload(app, files)
    assert app.state.error == "" and app.state.source == "Uploaded maps"
    checked = load_maps(files["t1"], files["t2"], files["pd"])
    np.testing.assert_allclose(shown(app), expected(checked, app.protocol()), atol=1e-6)
    (accepted,) = app.session.uploads.iterdir()  # the earlier accepted set went when this one replaced it
    assert sorted(p.name for p in accepted.iterdir()) == ["pd.nii.gz", "t1.nii.gz", "t2.nii.gz"]

    other = {name: tmp_path / f"other_{name}.nrrd" for name in ("t1", "t2", "pd")}
    for name, volume in make_maps(shape=(12, 14, 9), seed=8).items():
        pd_elsewhere = Volume(volume.array, spacing=(1.0, 1.0, 1.0), origin=volume.origin, direction=volume.direction)
        write_volume(pd_elsewhere if name == "pd" else volume, other[name])
    upload(app, other)  # PD on another grid: refused
    assert app.state.error.startswith("PD map is on a different grid")
    app.open_source("Bundled sample")
    app.open_source("Uploaded maps")  # the accepted set, whole: not the refused set's T1 with the first PD
    np.testing.assert_allclose(shown(app), expected(checked, app.protocol()), atol=1e-6)
    assert list(app.session.uploads.iterdir()) == [accepted]


def test_a_download_after_a_preview_is_the_whole_volume_at_the_new_values(app):
    app.open_source("Bundled sample")
    sample = load_maps(*(sample_paths()[n] for n in ("t1", "t2", "pd")))
    app.state.contrast = "T2w"
    app._on_contrast("T2w")
    app.state.te = 130.0  # a key press on the slider: no release event, only the preview
    app._on_parameter()
    assert not np.allclose(shown(app), expected(sample, Protocol("se", 4500, 130)), atol=1e-6)  # slices only
    path = app.result_file("synthetic")
    np.testing.assert_allclose(read_volume(path).array, expected(sample, Protocol("se", 4500, 130)), atol=1e-6)
    assert read_provenance(path).protocol == Protocol("se", 4500, 130)


def test_a_download_sent_with_values_older_than_the_servers_keeps_the_servers(app):
    """A preset just chosen: the server set its values, the page has not heard yet and sends the old ones."""
    sample = load_maps(*(sample_paths()[n] for n in ("t1", "t2", "pd")))
    app.open_source("Bundled sample")
    page_rev, old_values = app.state.values_rev, {n: app.state[n] for n in PARAMETERS}
    app.state.contrast = "PDw"
    app._on_contrast("PDw")
    path = app.result_file("synthetic", {"contrast": "PDw", **old_values, "rev": page_rev})
    assert read_provenance(path).protocol == Protocol("se", **preset_values("PDw")) and app.state.contrast == "PDw"
    np.testing.assert_allclose(read_volume(path).array, expected(sample, Protocol("se", **preset_values("PDw"))),
                               atol=1e-6)
    current = {**{n: app.state[n] for n in PARAMETERS}, "te": 20.0, "rev": app.state.values_rev}
    path = app.result_file("synthetic", {"contrast": "PDw", **current})  # newer than the state: applied
    assert read_provenance(path).protocol == Protocol("se", 4000, 20) and app.state.contrast == "Custom spin echo"


def test_a_file_dropped_with_its_refused_set_leaves_the_refusal_on_screen(app):
    app.state.error = "pd.nrrd: the file is empty"
    app.uploaded("t2", False, "t2.nrrd: not kept: the set of maps it belonged to was refused or replaced meanwhile")
    assert app.state.error == "pd.nrrd: the file is empty"
    app.uploaded("t2", False, "t2.nrrd: more than this server accepts (1 MiB; syntheticmri web --max-upload-mb)")
    assert app.state.error.startswith("t2.nrrd: more than")  # a refusal of its own is shown


def test_the_maps_stay_while_a_job_runs(app):
    app.state.job = "segment"
    try:
        app.open_source("sub-01")
        assert "wait for the running job" in app.state.error and app.state.source == "Bundled sample"
    finally:
        app.state.job = ""


def test_a_study_subject_opens_from_the_list(app):
    app.state.source = "sub-02"
    app._on_source("sub-02", app.state.units)
    study_maps = load_maps(*app.sources["sub-02"])
    assert app.state.source == "sub-02" and shown(app).shape == study_maps.t1.shape
    np.testing.assert_allclose(shown(app), expected(study_maps, app.protocol()), atol=1e-6)
    app.state.units = "s"  # these maps are in ms: refused in s, and the page keeps what it shows
    app._on_source("sub-02", "s")
    assert app.state.units == "ms" and "T1" in app.state.error
