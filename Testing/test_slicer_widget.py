"""The module's widget (SyntheticMRILib.slicer.widget) over fake Qt widgets built from the .ui, a fake parameter
node wrapper that behaves as Slicer 5.8.1's, real MRML (slicer-core) and real child processes.

Four defects of the earlier module are pinned here, each by a test that failed with it (see each docstring for
what real Slicer does)."""
from __future__ import annotations

import os
import re
import time
import types
import typing

import numpy as np
import pytest

from slicer_fakes import ROOT, FakeParameterNode, FakeTimer, FakeWidget, fake_ui, import_widget_module, install_gui_stubs
from SyntheticMRILib.devices import DEVICES
from SyntheticMRILib.io.maps import UNITS
from SyntheticMRILib.physics.protocols import GAP_MS, PARAMETERS, PRESETS, RANGES, SEQUENCES, parameter_bounds
from SyntheticMRILib.physics.routine import RANGES_MS, SERIES
from SyntheticMRILib.slicer.logic import CONTRASTS, SyntheticMRILogic, sequence_of
from conftest import write_study
from test_slicer_logic import ijk_to_ras, routine_nodes, routine_values, tiny_mapper, tiny_reparam
from test_slicer_preview import slice_to_ras


@pytest.fixture
def gui(monkeypatch, tmp_path):
    """The widget module imported over the GUI stubs."""
    install_gui_stubs(monkeypatch, tmp_path)
    return import_widget_module()


def node_fields(gui) -> dict:
    """name -> (default, annotation metadata) of the parameter node class."""
    hints = typing.get_type_hints(gui.SyntheticMRIParameterNode, include_extras=True)
    return {name: (getattr(gui.SyntheticMRIParameterNode, name, None), getattr(hint, "__metadata__", (None,))[0])
            for name, hint in hints.items()}


def parameter_node(gui, **values) -> FakeParameterNode:
    fields = node_fields(gui)
    choices = {name: meta[1] for name, (_, meta) in fields.items() if meta and meta[0] == "Choice"}
    ranges = {name: meta[1:] for name, (_, meta) in fields.items() if meta and meta[0] == "WithinRange"}
    return FakeParameterNode({**{name: default for name, (default, _) in fields.items()}, **values}, choices, ranges)


class Logic(SyntheticMRILogic):
    """The library's logic with a parameter node, and PyTorch "missing": the user declines its install."""

    def __init__(self, node):
        super().__init__()
        self.node, self.asked = node, []

    def getParameterNode(self):
        return self.node

    def ensureDependencies(self, extras=False, askConfirmation=True):
        self.asked.append((extras, askConfirmation))
        return False


class FakeComboBox(FakeWidget):
    """A QComboBox the widget reads itself (not bound to the parameter node): the items, ``currentIndex``, which emits
    currentIndexChanged(int) when it changes (from the user or the code, as Qt), ``currentText`` and ``findText``."""

    @property
    def currentIndex(self):
        return self.__dict__.get("_index", 0 if self.items else -1)

    @currentIndex.setter
    def currentIndex(self, index):
        if index != self.currentIndex:
            self.__dict__["_index"] = index
            self.emit("currentIndexChanged(int)", index)

    @property
    def currentText(self):
        return self.items[self.currentIndex] if 0 <= self.currentIndex < len(self.items) else ""

    def findText(self, text):
        return self.items.index(text) if text in self.items else -1

    def userPicks(self, text):
        assert text in self.items, text
        self.currentIndex = self.findText(text)


def widget_ui():
    """The .ui's fakes, with real-like combo boxes for those the widget reads (the others are bound)."""
    ui = fake_ui()
    for name in ("reparamSequenceComboBox", "reparamEngineComboBox", "reparamTargetComboBox"):
        getattr(ui, name).__class__ = FakeComboBox
    return ui


def make_widget(gui, **values):
    node = parameter_node(gui, **values)
    ui = widget_ui()
    widget = gui.SyntheticMRIWidget(ui, Logic(node))
    widget.enter()
    return widget, ui, node


def preset_values(name):
    return {key: float(value) for key, value in PRESETS[name].protocol.values().items()}


def physical(node) -> bool:
    return node.te < node.tr and node.ti < node.tr and node.ti2 < node.ti


# --------------------------------------------------------------------------- the parameter node
def test_the_parameter_node_is_the_catalogue(gui):
    fields = node_fields(gui)
    assert {name: fields[name][0] for name in PARAMETERS} == {
        name: float(preset_values("T2-FLAIR").get(name, fields[name][0])) for name in PARAMETERS}
    assert fields["contrast"][0] == "T2-FLAIR"
    assert {name: fields[name][1][1:] for name in PARAMETERS} == {name: RANGES[name] for name in PARAMETERS}
    assert (fields["contrast"][1][1], fields["units"][1][1], fields["device"][1][1]) == (CONTRASTS, UNITS, DEVICES)
    # every parameter has one widget: bound through the wrapper, or a slider the widget drives
    assert set(gui.BINDINGS) | set(gui.SLIDERS) == set(fields) and not set(gui.BINDINGS) & set(gui.SLIDERS)
    ui = widget_ui()
    kinds = {"qMRMLNodeComboBox": "vtkMRMLScalarVolumeNode", "QComboBox": "Choice", "QCheckBox": "bool"}
    for name, widget in gui.BINDINGS.items():
        hint = typing.get_type_hints(gui.SyntheticMRIParameterNode, include_extras=True)[name]
        kind = (fields[name][1] or (None,))[0] or getattr(hint, "__name__", None)
        assert kind == kinds[getattr(ui, widget).cls], (name, widget)
    assert {getattr(ui, widget).cls for widget in gui.SLIDERS.values()} == {"ctkSliderWidget"}


def test_reentering_the_module_keeps_one_gui_connection_and_the_users_choices(gui):
    """Defect 1. Slicer 5.6/5.8's ``connectGui`` returns no tag, so ``disconnectGui`` cannot undo it: each
    ``enter()`` added a set of connectors, and refilling the combo boxes made the stale ones write the first
    choice back: the module re-opened showing "T1w" with another contrast's TR/TE, and units "s" became "ms"."""
    widget, ui, node = make_widget(gui)
    node.userPicks("contrast", "STIR")
    node.userPicks("units", "s")
    for _ in range(3):
        widget.exit()
        widget.enter()
    assert (node.contrast, node.units) == ("STIR", "s")
    assert {name: getattr(node, name) for name in preset_values("STIR")} == preset_values("STIR")
    assert len(node.connections) == 1 and ui.contrastComboBox.bound == "STIR"
    widget.exit()
    assert not node.connections


def test_a_typed_number_counts_once(gui):
    """Defect 2. ctkSliderWidget emits valueChanged for every keystroke in its spin box (``setTracking(False)``
    affects the slider only): typing TR 2500 passed through TR 2 and 25, clamped TE and TI down for good and
    ran a synthesis per keystroke."""
    widget, ui, node = make_widget(gui)
    node.userPicks("contrast", "T1w")
    changes = []
    node.AddObserver("ModifiedEvent", lambda *a: changes.append(node.tr))
    ui.trSlider.spinBox.type("2500")
    assert (node.tr, node.te) == (2500.0, 10.0)
    assert set(changes) == {2500.0}
    assert all(getattr(ui, name).spinBox.keyboardTracking is False for name in gui.SLIDERS.values())


def test_presets_apply_bounds_follow_and_an_edited_preset_turns_custom(gui):
    """Defect 3. A preset edited into "Custom" changed the node while its ModifiedEvent was being handled; the
    nested event re-opened the slider ranges and was dropped, so TE could be dragged past TR. Here every pass
    ends with the sliders at the bounds of the final values."""
    widget, ui, node = make_widget(gui)
    sliders = {name: getattr(ui, widget) for name, widget in gui.SLIDERS.items()}

    def bounds_hold():
        lows = parameter_bounds(node.tr, node.ti, sequence_of(node.contrast))
        return (all(sliders[name].minimum == lows[name][0] for name in PARAMETERS)
                and sliders["te"].maximum == min(RANGES["te"][1], node.tr - GAP_MS)
                and sliders["ti"].maximum == min(RANGES["ti"][1], node.tr - GAP_MS)
                and sliders["ti2"].maximum == min(RANGES["ti2"][1], node.ti - GAP_MS)
                and all(sliders[name].value == getattr(node, name) for name in PARAMETERS))

    assert bounds_hold() and [n for n in ("ti", "ti2", "flip") if sliders[n].visible] == ["ti"]
    for name, preset in PRESETS.items():  # every preset, from whatever came before
        node.userPicks("contrast", name)
        assert node.contrast == name, f"{name} did not stay selected"
        assert {key: getattr(node, key) for key in preset_values(name)} == preset_values(name)
        assert sorted(n for n in ("ti", "ti2", "flip") if sliders[n].visible) == sorted(SEQUENCES[preset.protocol.sequence].needs)
        assert physical(node) and bounds_hold(), name
    node.userPicks("contrast", "T1w")
    sliders["te"].userSets(20.0)  # an edited preset is not that preset any more
    assert (node.contrast, node.te) == ("Custom spin echo", 20.0) and bounds_hold()
    sliders["te"].userSets(5000.0)  # past TR: the slider stops at its bound
    assert node.te == node.tr - GAP_MS == 499.0 and bounds_hold()
    node.userPicks("contrast", "DIR")
    sliders["tr"].userSets(1000.0)  # TR pulls TI down, and TI pulls TI2
    assert node.contrast == "Custom double IR" and physical(node) and node.ti == 1000.0 - GAP_MS and bounds_hold()
    assert ui.tiLabel.text.startswith("TI1")
    was = node.StartModify()  # several values at once, as from the console or a scene
    node.tr, node.ti = 9000.0, 5000.0
    node.EndModify(was)
    assert (node.tr, node.ti, sliders["ti"].value) == (9000.0, 5000.0, 5000.0) and bounds_hold()
    assert ui.applyButton.enabled is False  # no maps selected


def test_a_preset_applies_without_pytorch(gui):
    """Defect 4. Applying a preset needed PyTorch (the preset table was in the torch side of the library): when
    the user declined the install, the new preset's values were never applied and Synthesize labelled FLAIR
    parameters "T1w". The catalogue imports no torch now, and picking a preset asks nothing."""
    widget, ui, node = make_widget(gui)
    node.userPicks("contrast", "T1w")
    node.userPicks("contrast", "T2-FLAIR")
    assert node.contrast == "T2-FLAIR" and {k: getattr(node, k) for k in preset_values("T2-FLAIR")} == preset_values("T2-FLAIR")
    assert widget.logic.asked == [] and "CSF nulled" in ui.contrastInfoLabel.text
    widget._synthesizeVolume(interactive=True)  # no maps: nothing to do, nothing asked
    assert widget.logic.asked == []


def test_a_new_scene_reconnects_a_shown_module(gui):
    import slicer

    widget, ui, node = make_widget(gui)
    slicer.mrmlScene.Clear(0)  # StartClose / EndClose, as File > Close Scene
    assert len(node.connections) == 1 and widget._parameterNode is node
    widget.exit()
    slicer.mrmlScene.Clear(0)
    assert widget._parameterNode is None and not node.connections
    widget.cleanup()


# --------------------------------------------------------------------------- batch, out of process
def batch_widget(gui):
    widget, ui, node = make_widget(gui, units="ms", device="cpu")
    widget.logic.ensureDependencies = lambda extras=False, askConfirmation=True: True
    return widget, ui, node


def test_the_widget_runs_a_batch_out_of_process_and_reports_it(gui, tmp_path):
    widget, ui, _ = batch_widget(gui)
    assert ui.batchPresetList.items == list(PRESETS)
    assert not ui.batchRunButton.enabled and not ui.batchCancelButton.enabled  # nothing chosen yet
    study, out = write_study(tmp_path / "study", subjects=2), tmp_path / "out"
    ui.batchInputPathLineEdit.currentPath, ui.batchOutputPathLineEdit.currentPath = str(study), str(out)
    ui.batchInputPathLineEdit.emit("currentPathChanged(QString)", str(study))
    assert not ui.batchRunButton.enabled  # no preset
    ui.batchPresetList.selected = ["T1w", "DIR"]
    ui.batchPresetList.emit("itemSelectionChanged()")
    assert ui.batchRunButton.enabled and not ui.batchCancelButton.enabled
    ui.batchRunButton.emit("clicked(bool)", True)
    process = widget._batchJob.process
    assert process.environment["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)
    assert not ui.batchRunButton.enabled and ui.batchCancelButton.enabled and not ui.batchPresetList.enabled
    assert ui.batchProgressBar.maximum == 0  # busy until the child reports
    widget.onBatchRun()  # a second click while running starts nothing
    assert widget._batchJob.process is process
    assert process.pump()
    assert ui.batchStatusLabel.text == f"Done: written under {out}."
    assert (ui.batchProgressBar.value, ui.batchProgressBar.maximum) == (2, 2)
    assert ui.batchRunButton.enabled and not ui.batchCancelButton.enabled and ui.batchPresetList.enabled
    assert sorted(p.name for p in out.rglob("*.nrrd")) == ["DIR.nrrd", "DIR.nrrd", "T1w.nrrd", "T1w.nrrd"]

    widget.onBatchRun()  # again: the run is complete, every output is checked and kept
    widget._batchJob.process.pump()
    assert ui.batchStatusLabel.text == f"Done: written under {out}."
    (study / "sub-01" / "pd.nrrd").unlink()
    ui.batchPresetList.selected = ["T1w", "DIR", "T2w"]  # one more contrast; one subject has lost a map
    widget.onBatchRun()
    widget._batchJob.process.pump()
    status = ui.batchStatusLabel.text.splitlines()
    assert status[0].startswith("Failed: syntheticmri: error: 1 subject(s) failed: sub-01")
    assert any(line.startswith("sub-01: failed:") and "pd" in line for line in status[1:])
    assert sorted(p.name for p in (out / "sub-00").iterdir()) == ["DIR.nrrd", "T1w.nrrd", "T2w.nrrd"]


def test_the_batch_steps_workers_and_retry_reach_the_child(gui, tmp_path):
    widget, ui, _ = batch_widget(gui)
    asked = []
    widget.logic.ensureDependencies = lambda extras=False, askConfirmation=True: asked.append(extras) or True
    ui.batchInputPathLineEdit.currentPath, ui.batchOutputPathLineEdit.currentPath = str(tmp_path), str(tmp_path / "o")
    ui.batchInputPathLineEdit.emit("currentPathChanged(QString)", str(tmp_path))
    assert not ui.batchRunButton.enabled and ui.batchWorkersSpinBox.value == 1
    ui.batchSegmentCheckBox.checked = True  # a step without any preset is a batch too
    ui.batchSegmentCheckBox.emit("toggled(bool)", True)
    assert ui.batchRunButton.enabled
    ui.batchLearnedCheckBox.checked = ui.batchRetryCheckBox.checked = True
    ui.batchWorkersSpinBox.value = 2
    widget.onBatchRun()
    argv = widget._batchJob.argv
    assert asked == [True]  # the segmenter's packages and Dask
    assert argv[argv.index("--workers") + 1] == "2"
    assert {"--learned", "--segment", "--retry-failed"} <= set(argv) and "--preset" not in argv
    assert not ui.batchWorkersSpinBox.enabled and not ui.batchSegmentCheckBox.enabled
    widget._batchJob.process.pump()  # an empty study: the child's one-line error
    assert "no subject folders" in ui.batchStatusLabel.text


def test_cancel_stops_the_batch_and_the_buttons_follow(gui, big_study, tmp_path):
    widget, ui, _ = batch_widget(gui)
    timers = FakeTimer.singleShots
    out = tmp_path / "out"
    ui.batchInputPathLineEdit.currentPath, ui.batchOutputPathLineEdit.currentPath = str(big_study), str(out)
    ui.batchPresetList.selected = ["T2w"]
    widget.onBatchRun()
    process = widget._batchJob.process
    assert not process.pump(until=lambda: ui.batchProgressBar.value > 0)
    assert re.fullmatch(r"\d+ of 40 subjects done; last: sub-\d\d \(.* subjects/h, .* left\)", ui.batchStatusLabel.text)
    cancelled = time.monotonic()
    ui.batchCancelButton.emit("clicked(bool)", True)
    assert ui.batchStatusLabel.text == "Cancelling..." and [ms for ms, _ in timers] == [5000]
    assert process.pump(timeout=5.0) and time.monotonic() - cancelled < 5.0  # stopped through its stdin, no kill
    assert ui.batchStatusLabel.text == "Cancelled: the outputs written so far are complete; Run batch finishes the rest."
    assert ui.batchRunButton.enabled and not ui.batchCancelButton.enabled
    written = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert written.count("T2w.nrrd") < 40  # subjects done (each also writes a record): the batch did not finish
    assert set(written) <= {"T2w.nrrd", "lock", "request.json"} | {f"sub-{n:02d}.json" for n in range(40)}  # no partial file


def test_the_widget_reports_a_python_that_does_not_start(gui, monkeypatch, tmp_path):
    from SyntheticMRILib import jobs

    widget, ui, _ = batch_widget(gui)
    monkeypatch.setattr(jobs, "slicer_python", lambda: str(tmp_path / "PythonSlicer"))
    ui.batchInputPathLineEdit.currentPath, ui.batchOutputPathLineEdit.currentPath = str(tmp_path), str(tmp_path / "o")
    ui.batchPresetList.selected = ["T1w"]
    widget.onBatchRun()
    assert ui.batchStatusLabel.text == f"Failed: could not start {tmp_path / 'PythonSlicer'}"
    assert widget._batchJob is None and ui.batchRunButton.enabled and not ui.batchCancelButton.enabled


# --------------------------------------------------------------------------- segmentation, out of process
def maps_widget(gui):
    widget, ui, node = batch_widget(gui)
    nodes = widget.logic.loadSample()
    node.t1Volume, node.t2Volume, node.pdVolume = nodes["t1"], nodes["t2"], nodes["pd"]
    return widget, ui


def test_the_widget_segments_and_synthesizes_the_learned_contrasts_out_of_process(gui, tmp_path):
    import slicer

    widget, ui = maps_widget(gui)
    ui.segmentButton.emit("clicked(bool)", True)
    assert not ui.segmentButton.enabled and ui.segmentationCancelButton.enabled
    assert widget._mapsJob.process.pump(timeout=300)
    assert re.fullmatch(r"14 structures, [\d.]+ ml in all\.", ui.segmentationStatusLabel.text), ui.segmentationStatusLabel.text
    assert ui.segmentButton.enabled and not ui.segmentationCancelButton.enabled
    segmentation = slicer.mrmlScene.GetFirstNodeByName("Subcortical segmentation").GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 14 and segmentation.GetSegment("Left-Thalamus") is not None
    (table,) = ui.volumesTableView.tables
    assert table.GetNumberOfRows() == 14 and table.GetCellText(0, 0) == "Left-Thalamus" and float(table.GetCellText(0, 2)) > 4
    assert not any(tmp_path.iterdir())  # the job folder is gone

    ui.learnedContrastButton.emit("clicked(bool)", True)
    assert widget._mapsJob.process.pump(timeout=300)
    lines = ui.segmentationStatusLabel.text.splitlines()
    assert len(lines) == 3 and lines[0].startswith("Learned contrast 1 (SE TR ")
    node = slicer.mrmlScene.GetFirstNodeByName(lines[2].split(": ")[0])
    assert node.GetAttribute("SyntheticMRI.Protocol").startswith("ir TR ")


def test_the_widget_cancels_a_segmentation(gui, tmp_path):
    import slicer

    widget, ui = maps_widget(gui)
    widget.onMapsJob("segment")
    process = widget._mapsJob.process
    ui.segmentationCancelButton.emit("clicked(bool)", True)
    assert process.pump(timeout=30)
    assert ui.segmentationStatusLabel.text == "Cancelled." and ui.segmentButton.enabled
    assert slicer.mrmlScene.GetFirstNodeByName("Subcortical segmentation") is None and not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- maps from routine scans, out of process
def test_the_widget_refuses_missing_series_or_values_and_starts_nothing(gui, tmp_path):
    import slicer

    widget, ui, node = batch_widget(gui)
    assert ui.routineMapsButton.enabled and not ui.routineCancelButton.enabled
    ui.routineMapsButton.emit("clicked(bool)", True)
    assert ui.routineStatusLabel.text == "Select the T1w, T2w, T2-FLAIR volume(s)."
    t1w, t2w, flair = routine_nodes(widget.logic)
    ui.t1wSelector.setCurrentNode(t1w)  # a contrast synthesized here brings its TR/TE
    assert (ui.t1wTrSpinBox.value, ui.t1wTeSpinBox.value) == (500.0, 10.0)
    ui.t2wSelector.setCurrentNode(slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode"))  # values unknown: left 0
    ui.flairSelector.setCurrentNode(flair)
    widget.onRoutineMaps()
    assert ui.routineStatusLabel.text == "Enter the T2w TR, T2w TE (ms)."
    assert widget._mapsJob is None and not any(tmp_path.iterdir()) and node.t1Volume is None


def test_the_widget_estimates_maps_from_routine_scans_and_synthesizes_from_them(gui, tmp_path, tmp_path_factory):
    import functools

    import slicer

    widget, ui, node = batch_widget(gui)
    logic = widget.logic
    model = tiny_mapper(tmp_path_factory.mktemp("model") / "m.pt")
    logic.routineMapsJob = functools.partial(logic.routineMapsJob, model=str(model))  # the shipped one comes later
    for selector, series in zip((ui.t1wSelector, ui.t2wSelector, ui.flairSelector), routine_nodes(logic)):
        selector.setCurrentNode(series)
    shown = {s: {n: getattr(ui, f"{s}{n.capitalize()}SpinBox").value for n in RANGES_MS[s]} for s in SERIES}
    assert shown == routine_values()  # filled in from the synthesized series
    ui.t1wTeSpinBox.value = 600.0  # past TR: the child refuses it
    ui.routineMapsButton.emit("clicked(bool)", True)
    assert not ui.routineMapsButton.enabled and not ui.segmentButton.enabled  # one maps job at a time
    assert ui.routineCancelButton.enabled and not ui.segmentationCancelButton.enabled
    assert widget._mapsJob.process.pump(timeout=120)
    assert ui.routineStatusLabel.text == "Failed: syntheticmri: error: t1w: TE must be below TR, got TE 600 ms, TR 500 ms"
    assert node.t1Volume is None and not any(tmp_path.iterdir()) and ui.routineMapsButton.enabled

    ui.t1wTeSpinBox.value = 10.0
    widget.onRoutineMaps()
    assert widget._mapsJob.process.pump(timeout=120)
    assert ui.routineStatusLabel.text == "Estimated T1, T2 (ms) and PD: they are the input maps now."
    assert ui.routineProgressBar.maximum > 0 and ui.routineProgressBar.value == ui.routineProgressBar.maximum
    names = [volume.GetName() if volume else None for volume in (node.t1Volume, node.t2Volume, node.pdVolume)]
    assert names == ["T1 map (estimated)", "T2 map (estimated)", "PD map (estimated)"] and node.units == "ms"
    assert ui.routineMapsButton.enabled and ui.segmentButton.enabled and not ui.routineCancelButton.enabled
    assert not any(tmp_path.iterdir())  # the job folder is gone
    widget._synthesizeVolume(interactive=True)  # the estimated maps drive the synthesis at once
    output = node.outputVolume
    assert output is not None
    assert slicer.util.arrayFromVolume(output).shape == slicer.util.arrayFromVolume(node.t1Volume).shape


# --------------------------------------------------------------------------- re-parameterize a scan
def reparam_widget(gui, tmp_path_factory=None):
    """The widget, its ui and the section's scan (a T1w synthesized here: it carries SE TR 500 TE 10); with
    ``tmp_path_factory``, the logic's jobs use tiny seeded models of both engines."""
    import functools

    widget, ui, _ = batch_widget(gui)
    logic = widget.logic
    if tmp_path_factory is not None:
        folder = tmp_path_factory.mktemp("models")
        models = {engine: str(tiny_reparam(folder / f"{engine}.pt", engine)) for engine in ("physics", "direct")}
        job = logic.reparamJob
        logic.reparamJob = lambda *args, engine="physics", **kw: functools.partial(job, model=models[engine])(
            *args, engine=engine, **kw)  # the shipped models come later
    return widget, ui, routine_nodes(logic)[0]


def show_in_red_view(node, plane):
    """A slice view of the layout ("Red") showing ``node`` through ``plane`` (its SliceToRAS)."""
    import slicer

    sliceNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceNode")
    sliceNode.SetLayoutName("Red")
    sliceNode.SetMappedInLayout(True)
    slicer.util.updateVTKMatrixFromArray(sliceNode.GetSliceToRAS(), plane)
    composite = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    composite.SetLayoutName("Red")
    composite.SetBackgroundVolumeID(node.GetID())


def test_the_reparam_section_refuses_bad_inputs_and_starts_nothing(gui, tmp_path, monkeypatch):
    import slicer

    widget, ui, scan = reparam_widget(gui)
    status = lambda: ui.reparamStatusLabel.text  # noqa: E731
    assert ui.reparamSequenceComboBox.items == ["SE", "IR"] and ui.reparamEngineComboBox.items == ["physics", "direct"]
    assert ui.reparamTargetComboBox.items == list(CONTRASTS) and ui.reparamTargetComboBox.currentText == "T2-FLAIR"
    assert ui.reparamPredictButton.enabled and ui.reparamApplyButton.enabled and not ui.reparamCancelButton.enabled
    ui.reparamPredictButton.emit("clicked(bool)", True)
    assert status() == "Select the scan to re-parameterize."
    plain = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "plain")
    ui.reparamInputSelector.setCurrentNode(plain)
    assert ui.reparamProtocolLabel.text.startswith("The volume does not say how it was acquired")
    ui.reparamApplyButton.emit("clicked(bool)", True)
    assert status() == "Enter the scan's TR, TE (ms)."

    ui.reparamInputSelector.setCurrentNode(scan)  # a contrast made here: its protocol is filled in
    assert (ui.reparamSequenceComboBox.currentText, ui.reparamTrSpinBox.value, ui.reparamTeSpinBox.value) == ("SE", 500.0, 10.0)
    assert ui.reparamProtocolLabel.text == "SE TR, TE from the volume's provenance." and not ui.reparamTiSpinBox.visible
    ui.reparamTeSpinBox.value = 600.0
    ui.reparamPredictButton.emit("clicked(bool)", True)
    assert status() == "TE must be below TR, got TE 600 ms, TR 500 ms."
    ui.reparamTeSpinBox.value = 10.0
    ui.reparamSequenceComboBox.userPicks("IR")
    assert ui.reparamTiSpinBox.visible
    widget.onReparamApply()
    assert status() == "Enter the scan's TI (ms)."
    ui.reparamSequenceComboBox.userPicks("SE")
    ui.reparamOutputSelector.setCurrentNode(scan)
    widget.onReparamPredict()
    assert status() == "The output volume must not be the scan."
    ui.reparamOutputSelector.setCurrentNode(None)
    ui.reparamEngineComboBox.userPicks("direct")
    assert not ui.reparamPredictButton.enabled and ui.reparamApplyButton.enabled  # the direct engine has no maps
    ui.reparamTargetComboBox.userPicks("DIR")
    assert ui.reparamTi2Slider.visible and ui.reparamTiLabel.text == "TI1 (longer):"
    widget.onReparamApply()
    assert status().startswith("The direct engine makes spin-echo and inversion-recovery targets only")
    ui.reparamTeSlider.emit("valueIsChanging(double)", 30.0)  # no maps: a slider previews nothing, and asks nothing
    widget._reparamTimer.slot()
    assert widget._mapsJob is None and not any(tmp_path.iterdir())  # no job, no folder

    headers = {"/dicom/1": {"0018,0080": "20", "0018,0081": "4", "0018,0020": "GR"},
               "/dicom/2": {"0018,0080": "9000", "0018,0081": "90", "0018,0082": "2500", "0018,0020": "SE\\IR"}}
    database = types.SimpleNamespace(fileForInstance=lambda uid: f"/dicom/{uid}",
                                     fileValue=lambda path, tag: headers[path].get(tag, ""))
    monkeypatch.setattr(slicer, "dicomDatabase", database, raising=False)
    gradientEcho, flair = (slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", n) for n in ("GRE", "FLAIR"))
    gradientEcho.SetAttribute("DICOM.instanceUIDs", "1")
    flair.SetAttribute("DICOM.instanceUIDs", "2 3")
    ui.reparamInputSelector.setCurrentNode(gradientEcho)
    assert ui.reparamProtocolLabel.text.startswith("A gradient-echo scan (ScanningSequence GR)")
    assert (ui.reparamTrSpinBox.value, ui.reparamTeSpinBox.value) == (0.0, 0.0)
    ui.reparamInputSelector.setCurrentNode(flair)
    assert ui.reparamProtocolLabel.text == "IR TR, TE, TI from the DICOM header."
    assert [ui.reparamSequenceComboBox.currentText] + [box.value for box in (
        ui.reparamTrSpinBox, ui.reparamTeSpinBox, ui.reparamTiSpinBox)] == ["IR", 9000.0, 90.0, 2500.0]


def test_the_widget_predicts_a_scans_maps_then_the_target_sliders_are_live(gui, tmp_path, tmp_path_factory):
    """Predict maps runs the child once; then a dragged slider renders only the slices in view (as ScanMaps.render
    has them), its release the whole volume, a new target the whole volume: no child any more."""
    import slicer
    from SyntheticMRILib.physics.protocols import Protocol
    from SyntheticMRILib.slicer import bridge

    widget, ui, scan = reparam_widget(gui, tmp_path_factory)
    ui.reparamInputSelector.setCurrentNode(scan)
    ui.reparamTargetComboBox.userPicks("T2w")
    sliders = {name: getattr(ui, f"reparam{name.capitalize()}Slider") for name in PARAMETERS}
    assert (sliders["tr"].value, sliders["te"].value) == (4500.0, 100.0) and not sliders["ti"].visible
    assert sliders["ti"].maximum == 4500.0 - GAP_MS  # the bounds of the target's TR
    ui.reparamPredictButton.emit("clicked(bool)", True)
    assert not ui.reparamPredictButton.enabled and not ui.reparamApplyButton.enabled  # one maps job at a time
    assert not ui.routineMapsButton.enabled and ui.reparamCancelButton.enabled and not ui.routineCancelButton.enabled
    assert widget._mapsJob.process.pump(timeout=180)
    assert ui.reparamStatusLabel.text.startswith("Maps predicted: the target sliders run the physics layer now.")
    assert ui.reparamPredictButton.enabled and not ui.reparamCancelButton.enabled and not any(tmp_path.iterdir())
    maps, output = widget._scanMaps, ui.reparamOutputSelector.currentNode()
    assert output.GetName() == "t1w as T2w" and np.array_equal(ijk_to_ras(output), ijk_to_ras(scan))
    assert np.array_equal(slicer.util.arrayFromVolume(output), maps.render(Protocol("se", 4500.0, 100.0)))
    assert output.GetAttribute("SyntheticMRI.ReparameterizedFrom") == "t1w: se TR 500 TE 10, physics engine"

    show_in_red_view(output, slice_to_ras(2, bridge.volume_from_node(output), (80, 100, 5)))  # the k = 5 slice
    before = slicer.util.arrayFromVolume(output).copy()
    sliders["te"].emit("valueIsChanging(double)", 30.0)
    assert widget._reparamTimer.started
    widget._reparamTimer.slot()  # the timer fires: the slice in view follows the drag, nothing else
    after, dragged = slicer.util.arrayFromVolume(output), maps.render(Protocol("se", 4500.0, 30.0))
    np.testing.assert_allclose(after[5], dragged[5], rtol=1e-5, atol=1e-5 * float(dragged.max()))
    np.testing.assert_array_equal(np.delete(after, 5, axis=0), np.delete(before, 5, axis=0))
    assert not np.allclose(after[5], before[5]) and ui.reparamTargetComboBox.currentText == "T2w"

    sliders["te"].userSets(30.0)  # released: the whole volume; an edited preset is custom
    assert ui.reparamTargetComboBox.currentText == "Custom spin echo" and output.GetName() == "t1w as spin echo"
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(output), dragged)
    assert output.GetAttribute("SyntheticMRI.Protocol") == "se TR 4500 TE 30"
    ui.reparamTargetComboBox.userPicks("DIR")  # a target only the physics layer makes
    assert sliders["ti2"].visible and not sliders["flip"].visible and output.GetName() == "t1w as DIR"
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(output), maps.render(PRESETS["DIR"].protocol))
    assert widget._mapsJob is None  # no child ran for any of these

    ui.reparamTeSpinBox.value = 12.0  # the scan's protocol changed: the maps are not its maps any more
    sliders["tr"].userSets(8000.0)
    assert ui.reparamStatusLabel.text.startswith("The scan or its protocol changed since the maps were predicted")
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(output), maps.render(PRESETS["DIR"].protocol))
    ui.reparamTeSpinBox.value = 10.0
    ui.reparamApplyButton.emit("clicked(bool)", True)  # Apply: in process, from the maps
    assert widget._mapsJob is None
    assert ui.reparamTargetComboBox.currentText == "Custom double IR"
    expected = maps.render(Protocol("dir", 8000.0, *(widget._reparamValues[n] for n in ("te", "ti", "ti2"))))
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(output), expected)
    assert re.fullmatch(r"DIR TR 8000 TE 25 TI \d+ TI2 \d+: \d+ ms", ui.reparamStatusLabel.text), ui.reparamStatusLabel.text


def test_the_widget_runs_the_direct_engine_and_cancels_a_prediction(gui, tmp_path, tmp_path_factory):
    import slicer

    widget, ui, scan = reparam_widget(gui, tmp_path_factory)
    ui.reparamInputSelector.setCurrentNode(scan)
    ui.reparamEngineComboBox.userPicks("direct")
    ui.reparamTargetComboBox.userPicks("T2-FLAIR")
    ui.reparamApplyButton.emit("clicked(bool)", True)  # the direct engine: the target's image, from the child
    assert ui.reparamCancelButton.enabled and not ui.segmentButton.enabled
    assert widget._mapsJob.process.pump(timeout=180)
    output = ui.reparamOutputSelector.currentNode()
    assert ui.reparamStatusLabel.text.startswith("t1w as T2-FLAIR: the direct engine's image."), ui.reparamStatusLabel.text
    assert np.array_equal(ijk_to_ras(output), ijk_to_ras(scan)) and widget._scanMaps is None
    voxels = slicer.util.arrayFromVolume(output)
    assert voxels.shape == slicer.util.arrayFromVolume(scan).shape and np.isfinite(voxels).all() and voxels.max() > 0
    assert output.GetAttribute("SyntheticMRI.Preset") == "T2-FLAIR"
    assert output.GetAttribute("SyntheticMRI.ReparameterizedFrom") == "t1w: se TR 500 TE 10, direct engine"
    assert not any(tmp_path.iterdir())

    ui.reparamEngineComboBox.userPicks("physics")
    volumes = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    ui.reparamApplyButton.emit("clicked(bool)", True)  # the physics engine without maps: Apply predicts them first
    assert "--keep-maps" in widget._mapsJob.argv and ui.reparamCancelButton.enabled
    process = widget._mapsJob.process
    ui.reparamCancelButton.emit("clicked(bool)", True)
    assert process.pump(timeout=30)
    assert ui.reparamStatusLabel.text == "Cancelled." and ui.reparamPredictButton.enabled and not ui.reparamCancelButton.enabled
    assert widget._scanMaps is None and not any(tmp_path.iterdir())
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == volumes  # nothing added


def test_every_input_of_the_ui_is_wired_bound_or_read(gui):
    """A widget in the .ui that nothing listens to is a control that does nothing."""
    widget, ui, node = make_widget(gui)
    signals = {"QPushButton": {"clicked(bool)"}, "ctkPathLineEdit": {"currentPathChanged(QString)"},
               "QListWidget": {"itemSelectionChanged()"}, "ctkSliderWidget": {"valueChanged(double)", "valueIsChanging(double)"}}
    bound = set(gui.BINDINGS.values())
    read_when_run = {"batchOverwriteCheckBox", "batchRetryCheckBox", "batchWorkersSpinBox",  # read when Run is pressed
                     "batchLearnedCheckBox", "batchSegmentCheckBox"}
    read_when_run |= {f"{s}{n.capitalize()}SpinBox" for s in SERIES for n in RANGES_MS[s]}  # and when Estimate is
    for series in SERIES:  # a chosen series fills in its values
        assert "currentNodeChanged(vtkMRMLNode*)" in getattr(ui, f"{series}Selector").slots
        read_when_run.add(f"{series}Selector")
    # Re-parameterize a scan: a chosen scan fills in its protocol; a picked sequence, engine or target lays out the
    # section; the protocol and the output are read when Predict maps or Apply is pressed.
    assert "currentNodeChanged(vtkMRMLNode*)" in ui.reparamInputSelector.slots
    for name in ("reparamSequenceComboBox", "reparamEngineComboBox", "reparamTargetComboBox"):
        assert "currentIndexChanged(int)" in getattr(ui, name).slots, name
    read_when_run |= {"reparamInputSelector", "reparamSequenceComboBox", "reparamEngineComboBox",
                      "reparamTargetComboBox", "reparamOutputSelector"} | set(gui.REPARAM_SPIN_BOXES.values())
    for name, fake in vars(ui).items():
        if fake.cls in signals:
            assert signals[fake.cls] <= set(fake.slots), f"{name} is not connected to {signals[fake.cls] - set(fake.slots)}"
        elif fake.cls in ("QComboBox", "qMRMLNodeComboBox", "QCheckBox", "QSpinBox", "QDoubleSpinBox"):
            assert name in bound | read_when_run, f"{name} is neither bound to a parameter nor read"
