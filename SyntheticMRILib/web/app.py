"""The state and actions of ``syntheticmri web``: Slicer views beside the module's controls, on trame-slicer.

trame-slicer renders real Slicer slice and 3-D views on the server (offscreen, EGL) and streams pictures; the
page (:mod:`SyntheticMRILib.web.page`) binds Vuetify widgets to the trame state kept here. Every action is a
call the Slicer widget makes too: :class:`~SyntheticMRILib.slicer.logic.SyntheticMRILogic` (synthesis, the
visible-slice preview, the segment and learned-contrast child processes and their results), the bridge (maps
into nodes, nodes into files, the scene), the catalogue's bounds
(:func:`~SyntheticMRILib.physics.protocols.parameter_bounds`). No physics and no checks of its own.

One server is one session: every browser connected to it sees and drives the same scene.
"""
from __future__ import annotations

import asyncio
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence
from urllib.parse import urlsplit

from trame.app import TrameApp, asynchronous
from trame.decorators import change, trigger
from trame_slicer import module as trame_slicer_module
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories

from .. import jobs
from ..cohort.subject import find_subjects, map_files
from ..errors import InputError
from ..io.maps import MAP_NAMES, UNITS, load_maps
from ..io.provenance import write_contrast
from ..physics.protocols import (PARAMETERS, PRESETS, SEQUENCES, START_CONTRAST, clamp_parameters,
                                 parameter_bounds, preset_values, start_values)
from ..resources import sample_paths
from ..slicer import bridge
from ..slicer.logic import CONTRASTS, SyntheticMRILogic, custom_contrast_of, sequence_of
from .page import MAP_TITLES, UPLOAD_ROUTE, build_page
from .session import SET_DROPPED, Session, UploadSet

__all__ = ["WebApp", "SAMPLE", "UPLOADED", "SETTLE_S", "LOOPBACK"]

SAMPLE, UPLOADED = "Bundled sample", "Uploaded maps"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SETTLE_S = 0.4  # after the last slider change (keys send no release): the whole volume follows the preview
_SCENE = "SyntheticMRI scene"


class WebApp(TrameApp):
    """The app: a quad layout of Slicer views and a drawer with the controls.

    Args:
        server: a trame server (default: a new one) or its name.
        session: where uploads and results go (default: a new :class:`~SyntheticMRILib.web.session.Session`).
        data: a folder of maps (``t1``, ``t2``, ``pd``) or a study (sub-folders of maps) offered in the map list.
        hosts: the host names requests may address (default: this machine's loopback names); None: any, for a
            server on the network (behind a proxy, which knows its names).

    Examples::

        app = WebApp(data="study/")
        app.server.start(port=8080, host="127.0.0.1")
    """

    def __init__(self, server=None, session: Optional[Session] = None, data: Optional[str] = None,
                 hosts: Optional[Sequence[str]] = LOOPBACK) -> None:
        super().__init__(server)
        self.session = session or Session()
        self.hosts = None if hosts is None else set(hosts)
        self.sources = {SAMPLE: [Path(sample_paths()[name]) for name in MAP_NAMES], **_data_sources(data)}
        self.server.enable_module(trame_slicer_module)
        self.server.controller.on_server_bind.add(self._bind_routes)
        with bridge.QuietVTK():  # offscreen views warn about X and resize events they do not need
            self.slicer = SlicerApp()
            self.scene = self.slicer.scene
            register_rca_factories(self.slicer.view_manager, self.server)
            self.layouts = LayoutManager(self.scene, self.slicer.view_manager, self.server)
            self.layouts.register_layout_dict(LayoutManager.default_grid_configuration())
            self.layouts.set_layout("Quad View")
        self.logic = SyntheticMRILogic()
        self.maps: Dict[str, object] = {}
        self.output = bridge.empty_volume_node(self.scene, "Synthetic " + START_CONTRAST)
        self.results: Dict[str, object] = {}  # nodes of the last segmentation and learned contrasts
        self._source, self._units = SAMPLE, "ms"  # what the shown maps are
        self._showing = "synthetic"  # the volume in the slice views: a slider brings the synthetic one back
        self._volume = None  # the protocol the whole output volume holds
        self._stale = False  # the preview changed voxels since: downloads and SETTLE_S make the whole volume
        self._settle: Optional[asyncio.TimerHandle] = None
        self._edited = False  # a preset was just edited into the custom contrast: keep window and volume
        self.uploads = UploadSet(self.session)  # the maps being uploaded
        self._cancel = False
        self._child_done = threading.Event()
        self._child_done.set()
        self.state.update(dict(
            sources=list(self.sources), source=SAMPLE, units="ms", unit_items=list(UNITS), contrasts=list(CONTRASTS),
            contrast=START_CONTRAST, sequence=sequence_of(START_CONTRAST), needs=list(SEQUENCES[sequence_of(START_CONTRAST)].needs),
            description=self.logic.contrastDescription(START_CONTRAST), error="", status="", preview_ms=0, synth_ms=0,
            upload_text="", values_rev=0, job="", job_done=0, job_total=0, job_text="", structures=[], learned=[], downloads=[],
            **start_values()))
        self._bounds()
        with bridge.QuietVTK():
            build_page(self)
        self.open_source(SAMPLE)
        bridge.show_slices_in_3d(self.scene)

    # ------------------------------------------------------------------ maps
    def open_source(self, name: str) -> None:
        """Show the maps of ``name`` (the sample, a subject of ``--data``, or the uploads) in the chosen units."""
        try:
            self._refuse_during_job("changing the maps")
            maps = load_maps(*self.sources[name], units=self.state.units)
        except InputError as error:
            self.state.update(dict(error=str(error), source=self._source, units=self._units))  # what is shown
            return
        self._source, self._units = name, self.state.units
        self.state.source = name
        self._show_maps(maps)

    def _refuse_during_job(self, what: str) -> None:
        """Results belong to the maps they were made from: no new maps while a job runs."""
        if self.state.job:
            raise InputError(f"wait for the running job to end (or cancel it) before {what}")

    def _show_maps(self, maps) -> None:
        """The checked maps (ms, fraction) as the scene's map nodes; earlier maps and their results go."""
        bridge.remove_nodes([*self.maps.values(), *self.results.values()])
        self.maps = {name: bridge.node_from_volume(maps.volume(getattr(maps, name)), MAP_TITLES[name], scene=self.scene)
                     for name in MAP_NAMES}
        self.results = {}
        self.state.update(dict(error="", structures=[], learned=[]))
        self.synthesize(reset=True)
        self.show_result("synthetic")
        self.slicer.display_manager.reset_views()

    @change("source", "units")
    def _on_source(self, source: str, units: str, **_) -> None:
        if self.maps and (source != self._source or units != self._units):
            self.open_source(source)

    def _bind_routes(self, wslink_server) -> None:
        """The upload route, and a check on every request (the page, its websocket, uploads) of where it comes from."""
        from aiohttp import web

        @web.middleware
        async def same_origin(request, handler):
            # A page of another site the user opens (or a DNS-rebinding name) must not drive this one: browsers send
            # Origin with websocket handshakes and POSTs, and Host with everything.
            origin = request.headers.get("Origin")
            try:
                host = urlsplit("//" + request.host).hostname
            except ValueError:  # a malformed Host
                return web.Response(status=403, text="refused: a malformed Host")
            if origin is not None and urlsplit(origin).netloc != request.host:
                return web.Response(status=403, text=f"refused: a request from {origin}")
            if self.hosts is not None and host not in self.hosts:
                return web.Response(status=403, text=f"refused: this server answers to {', '.join(sorted(self.hosts))}")
            return await handler(request)

        async def receive(request):
            client = request.query.get("name", "")
            try:
                text = await self.receive(request.match_info["map"], client, request.content.iter_chunked(1 << 20),
                                          request.content_length)
            except InputError as error:
                return web.Response(status=400, text=str(error))
            except OSError as error:  # the disk: full, or the session folder gone as the server stops
                return web.Response(status=500, text=f"{client}: could not be stored ({error.strerror or error})")
            return web.Response(text=text)

        wslink_server.app.middlewares.append(same_origin)
        wslink_server.app.router.add_post(f"/{UPLOAD_ROUTE}/{{map}}", receive)

    async def receive(self, name: str, client: str, chunks, length: Optional[int] = None) -> str:
        """One map of the set being uploaded (:class:`~SyntheticMRILib.web.session.UploadSet`); with the three in,
        they are checked like any maps and shown. Returns what to tell the user; InputError (its message for the
        user) when refused: the set is then dropped, and the next file starts a new one."""
        self._refuse_during_job("uploading maps")
        paths = await self.uploads.receive(name, client, chunks, length)
        with self.state:  # the server's order, not the order the page hears the answers in
            if paths is None:
                missing = ", ".join(MAP_TITLES[n] for n in self.uploads.missing())
                self.state.update(dict(error="", upload_text=f"{MAP_TITLES[name]} received; now {missing}."))
            else:
                self._open_upload(paths)
        return self.state.upload_text

    def _open_upload(self, paths: List[Path]) -> None:
        """The three maps of the set, checked like any maps; shown, or refused with the library's words."""
        try:
            self._refuse_during_job("uploading maps")  # a job may have started while the files arrived
            maps = load_maps(*paths, units=self.state.units)
        except InputError as error:  # the library's words, with the browser's file names, not the server's paths
            message = self.uploads.in_browser_words(str(error))
            self.uploads.drop()
            self.state.error = message
            raise InputError(message) from None
        if UPLOADED in self.sources:
            self.session.drop(self.sources[UPLOADED][0].parent)
        self.uploads.accept()
        self.sources[UPLOADED], self._source, self._units = paths, UPLOADED, self.state.units
        self.state.update(dict(sources=list(self.sources), source=UPLOADED, upload_text="Uploaded maps shown."))
        self._show_maps(maps)

    @trigger("uploaded")
    def uploaded(self, name: str, ok: bool, text: str) -> None:
        """The page's word on an upload that failed (refused, or lost on the way), shown; a file dropped with its
        refused set leaves the refusal on screen. Accepted files were shown by :meth:`receive`."""
        if not ok and not (text.endswith(SET_DROPPED) and self.state.error):
            self.state.update(dict(upload_text="", error=text))

    # ------------------------------------------------------------------ synthesis
    def protocol(self):
        s = self.state
        return self.logic.protocol(s.contrast, s.tr, s.te, s.ti, s.ti2, s.flip)

    def _map_nodes(self) -> list:
        return [self.maps[name] for name in MAP_NAMES]

    def synthesize(self, *_args, reset: bool = False) -> None:
        """The whole volume (a slider released, a contrast chosen, new maps); ``reset``: window it afresh."""
        start = time.perf_counter()
        try:
            protocol = self.protocol()
            self.logic.synthesize(*self._map_nodes(), protocol, outputNode=self.output,
                                  name=self.logic.outputName(self.state.contrast))
        except InputError as error:
            self.state.error = str(error)
            return
        self._volume, self._stale = protocol, False
        if reset:  # a new contrast, a new intensity range (as the widget does)
            bridge.rewindow(self.output)
        if self._showing != "synthetic":
            self.show_result("synthetic")
        self.state.update(dict(error="", synth_ms=round(1000 * (time.perf_counter() - start)),  # as the preview: node included
                               status=f"{self.state.contrast}, {protocol.caption()}"))
        self._downloads()

    def release(self, name: str, value: float) -> None:
        """A slider let go at ``value``: the whole volume. The value comes with the event, since the page may send
        the slider's last moves after it."""
        self.state[name] = float(value)
        self._follow_parameters()
        if self._stale or self._volume != self.protocol():
            self.synthesize()

    def preview(self) -> None:
        """The voxels the views show, while a slider moves; the whole volume follows on release or after SETTLE_S."""
        start = time.perf_counter()
        try:
            if self._showing != "synthetic":
                self.show_result("synthetic")
            self.logic.updateVisibleSlices(*self._map_nodes(), self.protocol(), self.output)
        except InputError as error:
            self.state.error = str(error)
            return
        self._stale = True
        self.state.update(dict(error="", preview_ms=round((time.perf_counter() - start) * 1000)))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no server loop (a console, a test): downloads make the whole volume first
            return
        if self._settle is not None:
            self._settle.cancel()
        self._settle = loop.call_later(SETTLE_S, self._settled)

    def _settled(self) -> None:
        self._settle = None
        if self._stale:
            with self.state:
                self.synthesize()

    def _bounds(self) -> None:
        """Slider ranges for the sequence at the current TR and TI; values clamped into them (as the widget does)."""
        s, sequence = self.state, sequence_of(self.state.contrast)
        values = clamp_parameters({name: float(s[name]) for name in PARAMETERS}, sequence)
        bounds = parameter_bounds(values["tr"], values["ti"], sequence)
        changed = {name: value for name, value in values.items() if s[name] != value}
        if changed:
            s.update(changed)
            s.values_rev += 1
        s.update({f"{name}_min": low for name, (low, _) in bounds.items()})
        s.update({f"{name}_max": high for name, (_, high) in bounds.items()})

    @change("contrast")
    def _on_contrast(self, contrast: str, **_) -> None:
        sequence = sequence_of(contrast)
        self.state.update(dict(sequence=sequence, needs=list(SEQUENCES[sequence].needs),
                               description=self.logic.contrastDescription(contrast)))
        edited, self._edited = self._edited, False
        if contrast in PRESETS:
            self.state.update(preset_values(contrast))
            self.state.values_rev += 1
        self._bounds()
        if self.maps and not edited:  # an edit keeps the window: the image changes as the slider moves
            self.synthesize(reset=True)

    @change(*PARAMETERS)
    def _on_parameter(self, **_) -> None:
        self._follow_parameters()
        if self.maps and (self._stale or self.protocol() != self._volume):
            self.preview()

    def _follow_parameters(self) -> None:
        """A preset moved becomes the custom contrast of its sequence; bounds and values follow the new values."""
        contrast = self.state.contrast
        if contrast in PRESETS and any(float(self.state[n]) != v for n, v in preset_values(contrast).items()):
            self._edited = True
            self.state.contrast = custom_contrast_of(sequence_of(contrast))
        self._bounds()

    # ------------------------------------------------------------------ segmentation and learned contrasts
    def run_job(self, command: str) -> None:
        """``segment`` or ``contrast`` (learned contrasts) in a child process; the page shows its progress."""
        if not self.state.job and self.maps:
            self._cancel = False
            self.state.update(dict(job=command, job_done=0, job_total=0, job_text="Starting...", error=""))
            asynchronous.create_task(self._job(command))

    def cancel_job(self) -> None:
        self._cancel = True
        self.state.job_text = "Cancelling..."

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel a running job and wait until its process has ended (the server stops; the session folder goes next)."""
        self._cancel = True
        self._child_done.wait(timeout)

    async def _job(self, command: str) -> None:
        loop, folder, maps = asyncio.get_running_loop(), None, dict(self.maps)

        def on_line(line: str) -> None:  # the runner's thread
            progress = jobs.parse_progress(line)
            if progress is not None:
                loop.call_soon_threadsafe(self._show_progress, *progress)

        def child(argv) -> tuple:
            try:
                return jobs.run_batch_process(argv, on_line, lambda: self._cancel)
            finally:
                self._child_done.set()

        with self.state:  # one update of the page at the end: the outcome and the buttons back together
            try:
                folder, argv = self.logic.mapsJob(command, *self._map_nodes(), temporaryPath=str(self.session.folder))
                self._child_done.clear()
                code, stderr = await asyncio.to_thread(child, argv)
                if code == 0 and self.maps == maps:
                    self._load_results(command, Path(folder))
                elif code == 0:
                    self.state.job_text = "The maps changed while it ran: run it again."
                elif self._cancel:
                    self.state.job_text = "Cancelled."
                else:
                    self.state.update(dict(job_text="", error=jobs.error_line(stderr) or f"exit code {code}"))
            except Exception as error:  # shown in the page: an InputError in the library's words, anything else too
                if not isinstance(error, InputError):
                    logging.exception("SyntheticMRI web: %s failed", command)
                self.state.update(dict(job_text="", error=str(error)))
            finally:
                if folder is not None:
                    self.logic.removeJobFolder(folder)
                self.state.job = ""

    def _show_progress(self, done: int, total: int, what: str) -> None:
        with self.state:
            self.state.update(dict(job_done=done, job_total=total, job_text=f"{what}: {done} of {total}" if what else ""))

    def _load_results(self, command: str, folder: Path) -> None:
        if command == "segment":
            bridge.remove_nodes([self.results.pop(key, None) for key in ("segmentation", "volumes")])
            segmentation, table = self.logic.loadSegmentation(str(folder), self.maps["t1"])
            bridge.show_surfaces_in_3d(segmentation)
            self.results.update(segmentation=segmentation, volumes=table)
            shutil.copy(folder / jobs.SEGMENTATION_FILE, self.session.result_path("segmentation", ".nrrd"))
            shutil.copy(folder / jobs.VOLUMES_FILE, self.session.result_path("volumes", ".csv"))
            rows = bridge.structure_rows(segmentation, table)
            total = sum(row["ml"] for row in rows)
            self.state.update(dict(structures=rows, job_text=f"{len(rows)} structures, {total:.1f} ml in all."))
        else:
            bridge.remove_nodes([self.results.pop(key) for key in [k for k in self.results if k.startswith("learned")]])
            nodes = self.logic.loadLearnedContrasts(str(folder), scene=self.scene)
            rows = []
            for k, node in enumerate(nodes, 1):
                self.results[f"learned{k}"] = node
                rows.append(dict(key=f"learned{k}", name=node.GetName()))
            self.state.update(dict(learned=rows, job_text=f"{len(rows)} learned contrasts."))
            if rows:
                self.show_result(rows[0]["key"])
        self._downloads()

    def _node(self, key: str):
        if key == "synthetic":
            return self.output
        if key.startswith("learned") and key in self.results:
            return self.results[key]
        raise InputError(f"no result {key!r}")

    def show_result(self, key: str) -> None:
        """Show a learned contrast (or, with ``synthetic``, the synthesized volume) in the slice views."""
        self.slicer.display_manager.show_volume_in_slice_background(self._node(key))
        self._showing = key

    # ------------------------------------------------------------------ downloads
    def _downloads(self) -> None:
        """What the page offers to download: the synthesized volume, the results there are, and the scene."""
        entries = [("synthetic", self.output.GetName(), ".nrrd")]
        if "segmentation" in self.results:
            entries += [("segmentation", "segmentation", ".nrrd"), ("volumes", "volumes", ".csv")]
        entries += [(key, node.GetName(), ".nrrd") for key, node in self.results.items() if key.startswith("learned")]
        entries.append(("scene", _SCENE, ".mrb"))
        self.state.downloads = [dict(key=key, file=self.session.result_path(label, ext).name) for key, label, ext in entries]

    def result_file(self, key: str, values: Optional[Mapping] = None) -> Path:
        """The file of a download entry, written now for the volumes the sliders keep changing and the scene;
        ``values``: the contrast and slider values the page shows, which may not have reached the state yet."""
        if values:
            self._apply(values)
        if key in ("synthetic", "scene") and (self._stale or self._volume != self.protocol()):
            self.synthesize()  # never the preview's slices over an older volume
        if key == "scene":
            return bridge.save_scene(self.session.result_path(_SCENE, ".mrb"), self.scene)
        if key in ("segmentation", "volumes") and key in self.results:
            return self.session.result_path(key, ".nrrd" if key == "segmentation" else ".csv")
        node = self._node(key)
        return write_contrast(bridge.volume_from_node(node), self.session.result_path(node.GetName(), ".nrrd"),
                              bridge.contrast_provenance(node), overwrite=True)  # float32, as synth writes

    def _apply(self, values: Mapping) -> None:
        """The page's contrast and slider values, unless the server has set the values since the page last heard
        (``values_rev``: a preset just chosen, a value clamped)."""
        if int(values.get("rev", -1)) < self.state.values_rev:
            return
        contrast = values.get("contrast", self.state.contrast)
        if contrast != self.state.contrast and contrast in CONTRASTS:
            self.state.contrast = contrast
            self._on_contrast(contrast)
        self.state.update({name: float(values[name]) for name in PARAMETERS if name in values})
        self._follow_parameters()

    @trigger("download")
    def download(self, key: str, values: Optional[Mapping] = None):
        """The bytes of a result, as an attachment the page saves (``utils.download``)."""
        return self.server.protocol.addAttachment(self.result_file(key, values).read_bytes())


def _data_sources(data: Optional[str]) -> Dict[str, List[Path]]:
    """``--data``: one folder of maps, or a study whose sub-folders hold maps; name -> the three files."""
    if data is None:
        return {}
    folder = Path(data)
    if not folder.is_dir():
        what = "is a file; --data takes a folder of maps or of subjects" if folder.exists() else "no such folder"
        raise InputError(f"{folder}: {what}")
    if any(p.name.lower().startswith("t1.") for p in folder.iterdir()):
        return {folder.name: map_files(folder)}
    return {subject.name: map_files(subject) for subject in find_subjects(folder)}
