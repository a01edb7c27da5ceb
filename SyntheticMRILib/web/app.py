"""The page of ``syntheticmri web``: Slicer views beside the module's controls, on trame-slicer.

trame-slicer renders real Slicer slice and 3-D views on the server (offscreen, EGL) and streams pictures; the
controls are Vuetify widgets bound to the trame state. Every action is a call the Slicer widget makes too:
:class:`~SyntheticMRILib.slicer.logic.SyntheticMRILogic` (synthesis, visible-slice preview, the segment and
learned-contrast child processes and their results), the bridge (maps into nodes, nodes into files, the scene),
the catalogue's bounds (:func:`~SyntheticMRILib.physics.protocols.parameter_bounds`). This module lays them out
and keeps the state; it has no physics and no checks of its own.

One server is one session: every browser connected to it sees and drives the same scene.
"""
from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional

from trame.app import TrameApp, asynchronous
from trame.app.file_upload import ClientFile
from trame.decorators import change, trigger
from trame.ui.vuetify3 import SinglePageWithDrawerLayout
from trame.widgets import html
from trame.widgets import vuetify3 as v3
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
from .session import Session

__all__ = ["WebApp", "SAMPLE", "UPLOADED"]

SAMPLE, UPLOADED = "Bundled sample", "Uploaded maps"
_LABELS = {"tr": "TR (ms)", "te": "TE (ms)", "ti": "TI (ms)", "ti2": "TI2 (ms)", "flip": "Flip angle (°)"}
_MAP_TITLES = {"t1": "T1 map", "t2": "T2 map", "pd": "PD map"}
_JOB_TITLES = {"segment": "Segment", "contrast": "Optimized contrast"}


class WebApp(TrameApp):
    """The app: a quad layout of Slicer views and a drawer with the controls.

    Args:
        server: a trame server (default: a new one) or its name.
        session: where uploads and results go (default: a new :class:`~SyntheticMRILib.web.session.Session`).
        data: a folder of maps (``t1``, ``t2``, ``pd``) or a study (sub-folders of maps) offered in the map list.

    Examples::

        app = WebApp(data="study/")
        app.server.start(port=8080, host="127.0.0.1")
    """

    def __init__(self, server=None, session: Optional[Session] = None, data: Optional[str] = None) -> None:
        super().__init__(server)
        self.session = session or Session()
        self.sources = {SAMPLE: [Path(sample_paths()[name]) for name in MAP_NAMES], **_data_sources(data)}
        self.server.enable_module(trame_slicer_module)
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
        self._cancel = False
        self._source, self._units = SAMPLE, "ms"  # what the shown maps are
        self._showing = "synthetic"  # the volume in the slice views: a slider brings the synthetic one back
        self.state.update(dict(
            sources=list(self.sources), source=SAMPLE, units="ms", unit_items=list(UNITS), contrasts=list(CONTRASTS),
            contrast=START_CONTRAST, sequence=sequence_of(START_CONTRAST), needs=list(SEQUENCES[sequence_of(START_CONTRAST)].needs),
            description=self.logic.contrastDescription(START_CONTRAST), error="", status="", preview_ms=0, synth_ms=0,
            job="", job_done=0, job_total=0, job_text="", structures=[], learned=[], downloads=[],
            **{f"upload_{name}": None for name in MAP_NAMES}, **start_values()))
        self._bounds()
        with bridge.QuietVTK():
            self._build_page()
        self.open_source(SAMPLE)
        bridge.show_slices_in_3d(self.scene)

    # ------------------------------------------------------------------ maps
    def open_source(self, name: str) -> None:
        """Show the maps of ``name`` (the sample, a subject of ``--data``, or the uploads) in the chosen units."""
        try:
            maps = load_maps(*self.sources[name], units=self.state.units)
        except InputError as error:
            self.state.update(dict(error=str(error), source=self._source, units=self._units))  # what is shown
            return
        self._source, self._units = name, self.state.units
        self.state.source = name
        self._show_maps(maps)

    def _show_maps(self, maps) -> None:
        """The checked maps (ms, fraction) as the scene's map nodes; earlier maps and their results go."""
        bridge.remove_nodes([*self.maps.values(), *self.results.values()])
        self.maps = {name: bridge.node_from_volume(maps.volume(getattr(maps, name)), _MAP_TITLES[name], scene=self.scene)
                     for name in MAP_NAMES}
        self.results = {}
        self.state.update(dict(error="", structures=[], learned=[]))
        self._downloads()
        self.synthesize(reset=True)
        self.show_result("synthetic")
        self.slicer.display_manager.reset_views()

    @change("upload_t1", "upload_t2", "upload_pd")
    def _on_upload(self, **_) -> None:
        """Once all three maps are there, they are stored (names from the server) and checked like any maps."""
        files = {name: self.state[f"upload_{name}"] for name in MAP_NAMES}
        if not all(files.values()):
            return
        paths, client_names = [], {}
        try:
            for name, value in files.items():
                upload = ClientFile(value[0] if isinstance(value, list) else value)
                path = self.session.upload(name, upload.name, upload.content, upload.size)
                paths.append(path)
                client_names[str(path)] = upload.name
            maps = load_maps(*paths, units=self.state.units)
        except InputError as error:  # the library's message, with the browser's file names, not the server's paths
            message = str(error)
            for path, client_name in client_names.items():
                message = message.replace(path, client_name)
            self.state.error = message
            return
        finally:
            self.state.update({f"upload_{name}": None for name in MAP_NAMES})
        self.sources[UPLOADED] = paths
        self._source, self._units = UPLOADED, self.state.units
        self.state.update(dict(sources=list(self.sources), source=UPLOADED))
        self._show_maps(maps)

    @change("source", "units")
    def _on_source(self, source: str, units: str, **_) -> None:
        if self.maps and (source != self._source or units != self._units):
            self.open_source(source)

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
            self.logic.synthesize(*self._map_nodes(), self.protocol(), outputNode=self.output,
                                  name=self.logic.outputName(self.state.contrast))
        except InputError as error:
            self.state.error = str(error)
            return
        if reset:  # a new contrast, a new intensity range (as the widget does)
            bridge.rewindow(self.output)
        if self._showing != "synthetic":
            self.show_result("synthetic")
        self.state.update(dict(error="", synth_ms=round(1000 * (time.perf_counter() - start)),  # as the preview: node included
                               status=f"{self.state.contrast}, {self.protocol().caption()}"))
        self._downloads()

    def release(self, name: str, value: float) -> None:
        """A slider let go at ``value``: the whole volume. The value comes with the event, since the page may send
        the slider's last moves after it."""
        self.state[name] = float(value)
        self._on_parameter()
        self.synthesize()

    def preview(self) -> None:
        """The voxels the views show, while a slider moves."""
        start = time.perf_counter()
        try:
            if self._showing != "synthetic":
                self.show_result("synthetic")
            self.logic.updateVisibleSlices(*self._map_nodes(), self.protocol(), self.output)
        except InputError as error:
            self.state.error = str(error)
            return
        self.state.update(dict(error="", preview_ms=round((time.perf_counter() - start) * 1000)))

    def _bounds(self) -> None:
        """Slider ranges for the sequence at the current TR and TI; values clamped into them (as the widget does)."""
        s, sequence = self.state, sequence_of(self.state.contrast)
        values = clamp_parameters({name: float(s[name]) for name in PARAMETERS}, sequence)
        bounds = parameter_bounds(values["tr"], values["ti"], sequence)
        s.update({name: value for name, value in values.items() if s[name] != value})
        s.update({f"{name}_min": low for name, (low, _) in bounds.items()})
        s.update({f"{name}_max": high for name, (_, high) in bounds.items()})

    @change("contrast")
    def _on_contrast(self, contrast: str, **_) -> None:
        sequence = sequence_of(contrast)
        self.state.update(dict(sequence=sequence, needs=list(SEQUENCES[sequence].needs),
                               description=self.logic.contrastDescription(contrast)))
        if contrast in PRESETS:
            self.state.update(preset_values(contrast))
        self._bounds()
        if self.maps:
            self.synthesize(reset=True)

    @change(*PARAMETERS)
    def _on_parameter(self, **_) -> None:
        contrast = self.state.contrast
        if contrast in PRESETS and any(float(self.state[n]) != v for n, v in preset_values(contrast).items()):
            self.state.contrast = custom_contrast_of(sequence_of(contrast))  # a preset moved is a custom contrast
        self._bounds()
        if self.maps:
            self.preview()

    # ------------------------------------------------------------------ segmentation and learned contrasts
    def run_job(self, command: str) -> None:
        """``segment`` or ``contrast`` (learned contrasts) in a child process; the page shows its progress."""
        if not self.state.job:
            self._cancel = False
            self.state.update(dict(job=command, job_done=0, job_total=0, job_text="Starting...", error=""))
            asynchronous.create_task(self._job(command))

    def cancel_job(self) -> None:
        self._cancel = True
        self.state.job_text = "Cancelling..."

    async def _job(self, command: str) -> None:
        loop, folder = asyncio.get_running_loop(), None

        def on_line(line: str) -> None:  # the runner's thread
            progress = jobs.parse_progress(line)
            if progress is not None:
                loop.call_soon_threadsafe(self._show_progress, *progress)

        try:
            folder, argv = self.logic.mapsJob(command, *self._map_nodes(), temporaryPath=str(self.session.folder))
            code, stderr = await asyncio.to_thread(jobs.run_batch_process, argv, on_line, lambda: self._cancel)
            with self.state:
                if self._cancel:
                    self.state.job_text = "Cancelled."
                elif code != 0:
                    self.state.update(dict(job_text="", error=jobs.error_line(stderr) or f"exit code {code}"))
                else:
                    self._load_results(command, Path(folder))
        except InputError as error:
            with self.state:
                self.state.error = str(error)
        finally:
            if folder is not None:
                self.logic.removeJobFolder(folder)
            with self.state:
                self.state.job = ""

    def _show_progress(self, done: int, total: int, what: str) -> None:
        with self.state:
            self.state.update(dict(job_done=done, job_total=total, job_text=f"{what}: {done} of {total}" if what else ""))

    def _load_results(self, command: str, folder: Path) -> None:
        if command == "segment":
            bridge.remove_nodes([self.results.pop(key, None) for key in ("segmentation", "volumes")])
            segmentation, table = self.logic.loadSegmentation(str(folder), self.maps["t1"])
            segmentation.CreateClosedSurfaceRepresentation()  # the structures in the 3-D view
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
            self.show_result(rows[0]["key"])
        self._downloads()

    def show_result(self, key: str) -> None:
        """Show a learned contrast (or, with ``synthetic``, the synthesized volume) in the slice views."""
        node = self.output if key == "synthetic" else self.results[key]
        self.slicer.display_manager.show_volume_in_slice_background(node)
        self._showing = key

    # ------------------------------------------------------------------ downloads
    def _downloads(self) -> None:
        """What the page offers to download: the synthesized volume, the results there are, and the scene."""
        entries = [("synthetic", self.output.GetName(), ".nrrd")]
        if "segmentation" in self.results:
            entries += [("segmentation", "segmentation", ".nrrd"), ("volumes", "volumes", ".csv")]
        entries += [(key, node.GetName(), ".nrrd") for key, node in self.results.items() if key.startswith("learned")]
        entries.append(("scene", "SyntheticMRI scene", ".mrb"))
        self.state.downloads = [dict(key=key, file=self.session.result_path(label, ext).name) for key, label, ext in entries]

    def result_file(self, key: str) -> Path:
        """The file of a download entry, written now for the volumes the sliders keep changing and the scene."""
        label = {"synthetic": self.output.GetName(), "scene": "SyntheticMRI scene"}.get(key)
        if key == "scene":
            return bridge.save_scene(self.session.result_path(label, ".mrb"), self.scene)
        if key == "synthetic" or key.startswith("learned"):
            node = self.output if key == "synthetic" else self.results[key]
            return write_contrast(bridge.volume_from_node(node), self.session.result_path(node.GetName(), ".nrrd"),
                                  bridge.contrast_provenance(node), overwrite=True)  # float32, as synth writes
        if key in ("segmentation", "volumes"):
            return self.session.result_path(key, ".nrrd" if key == "segmentation" else ".csv")
        raise InputError(f"no result {key!r} to download")

    @trigger("download")
    def download(self, key: str):
        """The bytes of a result, as an attachment the page saves (``utils.download``)."""
        return self.server.protocol.addAttachment(self.result_file(key).read_bytes())

    # ------------------------------------------------------------------ the page
    def _build_page(self) -> None:
        with SinglePageWithDrawerLayout(self.server, full_height=True) as page:
            page.title.set_text("SyntheticMRI")
            with page.toolbar:
                v3.VSpacer()
                html.Div("{{ status }} · {{ synth_ms }} ms · preview {{ preview_ms }} ms", classes="status text-caption mr-4")
            with page.drawer as drawer:
                drawer.width = 360
                v3.VAlert(v_if=("error",), text=("error",), type="error", density="compact", classes="error ma-2",
                          closable=True, click_close="error = ''")
                self._maps_panel()
                self._contrast_panel()
                self._jobs_panel()
                self._downloads_panel()
            with page.content:
                self.layouts.initialize_layout_grid(page)

    def _maps_panel(self) -> None:
        v3.VListSubheader("Maps")
        v3.VSelect(v_model=("source",), items=("sources",), label="Maps", classes="source mx-2", density="compact")
        v3.VSelect(v_model=("units",), items=("unit_items",), label="T1/T2 units", classes="units mx-2", density="compact")
        for name in MAP_NAMES:
            v3.VFileInput(v_model=(f"upload_{name}",), label=f"Upload {_MAP_TITLES[name]} (NRRD, NIfTI, MHA)",
                          classes=f"upload-{name} mx-2", density="compact", show_size=True, prepend_icon="")

    def _contrast_panel(self) -> None:
        v3.VListSubheader("Contrast")
        v3.VSelect(v_model=("contrast",), items=("contrasts",), label="Contrast", classes="contrast mx-2", density="compact")
        html.Div("{{ description }}", classes="description text-caption mx-3 mb-2")
        for name in PARAMETERS:
            v3.VSlider(v_model=(name,), min=(f"{name}_min",), max=(f"{name}_max",), step=1, label=_LABELS[name],
                       thumb_label=True, hide_details=True, classes=f"{name} mx-2", end=(self.release, f"[{name!r}, $event]"),
                       v_show=(f"{name!r} === 'tr' || {name!r} === 'te' || needs.includes({name!r})",))
            html.Div(f"{{{{ {name} }}}}", v_show=(f"{name!r} === 'tr' || {name!r} === 'te' || needs.includes({name!r})",),
                     classes=f"{name}-value text-caption mx-4 mb-1 text-right")
        v3.VBtn("Synthesize", click=self.synthesize, classes="synthesize ma-2", size="small")

    def _jobs_panel(self) -> None:
        v3.VListSubheader("Segmentation and learned contrasts")
        with html.Div(classes="d-flex flex-wrap ga-2 mx-2"):
            for command, title in _JOB_TITLES.items():
                v3.VBtn(title, click=(self.run_job, f"[{command!r}]"), disabled=("job !== ''",), size="small",
                        classes=f"run-{command}")
            v3.VBtn("Cancel", click=self.cancel_job, disabled=("job === ''",), size="small", classes="cancel")
        v3.VProgressLinear(v_show=("job !== ''",), model_value=("job_total ? 100 * job_done / job_total : 0",),
                           indeterminate=("job !== '' && !job_total",), classes="job-progress mx-2 my-1")
        html.Div("{{ job_text }}", classes="job-text text-caption mx-3")
        with v3.VTable(v_show=("structures.length",), density="compact", classes="structures mx-2"):
            with html.Thead():
                with html.Tr():
                    html.Th("Structure")
                    html.Th("ml", classes="text-right")
            with html.Tbody():
                with html.Tr(v_for="row in structures", key="row.name", classes="structure"):
                    with html.Td():
                        html.Span(style=("`display:inline-block;width:10px;height:10px;margin-right:6px;background:${row.colour}`",))
                        html.Span("{{ row.name }}")
                    html.Td("{{ row.ml.toFixed(2) }}", classes="text-right")
        with v3.VList(v_show=("learned.length",), density="compact", classes="learned mx-2"):
            v3.VListItem(v_for="row in learned", key="row.key", title=("row.name",),
                         click=(self.show_result, "[row.key]"), classes="learned-contrast")

    def _downloads_panel(self) -> None:
        v3.VListSubheader("Download")
        with html.Div(classes="downloads mx-2"):
            v3.VBtn("{{ item.file }}", v_for="item in downloads", key="item.key", size="x-small", variant="tonal",
                    classes="download ma-1 text-none",
                    click="utils.download(item.file, trigger('download', [item.key]), 'application/octet-stream')")


def _data_sources(data: Optional[str]) -> Dict[str, List[Path]]:
    """``--data``: one folder of maps, or a study whose sub-folders hold maps; name -> the three files."""
    if data is None:
        return {}
    folder = Path(data)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    if any(p.name.lower().startswith("t1.") for p in folder.iterdir()):
        return {folder.name: map_files(folder)}
    return {subject.name: map_files(subject) for subject in find_subjects(folder)}
