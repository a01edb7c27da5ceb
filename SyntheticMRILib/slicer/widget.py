"""The module's widget: the .ui wired to the parameter node and to the logic.

``SyntheticMRI/SyntheticMRI.py`` embeds it. The selectors, combo boxes and check
boxes are bound with the parameter node wrapper's ``connectParametersToGui``
(:data:`BINDINGS`); the sliders are driven here, since their bounds move with TR
and TI (:func:`SyntheticMRILib.physics.protocols.parameter_bounds`). The section
"Re-parameterize a scan" is the mixin
:class:`SyntheticMRILib.slicer.reparam_section.ReparamSection`.

What real Slicer does, and why the code below is as it is (read in Slicer 5.8.1 and 5.10):

* ``connectGui`` returns no tag before 5.10, so ``disconnectGui`` cannot undo it and every
  ``enter()`` would add another set of connectors: the mapping is built here and connected
  with ``connectParametersToGui``, which returns the tag in both.
* ``ctkSliderWidget`` emits ``valueChanged`` for every keystroke in its spin box
  (``setTracking(False)`` affects the slider only): keyboard tracking is turned off on the
  spin boxes, so a typed TR 2500 is one change, not TR 2, 25, 250, 2500.
* A change the widget makes to the node while it handles a ModifiedEvent (a clamp, a preset
  edited into "Custom") fires a nested event: it is handled after the current pass, never
  dropped, so the sliders always end with the bounds of the final values.
"""
import logging
from typing import Annotated, Callable, Dict, List, Optional, Tuple

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.util import VTKObservationMixin

from ..devices import DEVICES
from ..io.maps import UNITS
from ..physics.protocols import (PARAMETERS, PRESETS, RANGES, SEQUENCES, START_CONTRAST, clamp_parameters,
                                 parameter_bounds, preset_values, start_values)
from ..physics.routine import RANGES_MS, SERIES
from .logic import CONTRASTS, PROTOCOL_ATTRIBUTE, custom_contrast_of, sequence_of
from .process import ChildJob
from .reparam_section import REPARAM_SLIDERS, REPARAM_SPIN_BOXES, ReparamSection, disableKeyboardTracking

__all__ = ["SyntheticMRIParameterNode", "SyntheticMRIWidget", "BINDINGS", "SLIDERS", "REPARAM_SLIDERS",
           "REPARAM_SPIN_BOXES"]


@parameterNodeWrapper
class SyntheticMRIParameterNode:
    """The module's state, saved with the scene: times in ms, flip angle in degrees, ``ti2`` the shorter inversion
    time of double IR and dSIR. The defaults are the catalogue's (:func:`~SyntheticMRILib.physics.protocols.start_values`)."""

    t1Volume: vtkMRMLScalarVolumeNode
    t2Volume: vtkMRMLScalarVolumeNode
    pdVolume: vtkMRMLScalarVolumeNode
    units: Annotated[str, Choice(list(UNITS))] = "ms"
    contrast: Annotated[str, Choice(list(CONTRASTS))] = START_CONTRAST
    tr: Annotated[float, WithinRange(*RANGES["tr"])] = start_values()["tr"]
    te: Annotated[float, WithinRange(*RANGES["te"])] = start_values()["te"]
    ti: Annotated[float, WithinRange(*RANGES["ti"])] = start_values()["ti"]
    ti2: Annotated[float, WithinRange(*RANGES["ti2"])] = start_values()["ti2"]
    flip: Annotated[float, WithinRange(*RANGES["flip"])] = start_values()["flip"]
    outputVolume: vtkMRMLScalarVolumeNode
    autoUpdate: bool = True
    fused: bool = True
    device: Annotated[str, Choice(list(DEVICES))] = "auto"


# Parameter -> the .ui widget bound to it through the wrapper; the sliders (SLIDERS) are the widget's own.
BINDINGS = {
    "t1Volume": "t1Selector", "t2Volume": "t2Selector", "pdVolume": "pdSelector", "units": "unitsComboBox",
    "contrast": "contrastComboBox", "outputVolume": "outputSelector", "autoUpdate": "autoUpdateCheckBox",
    "fused": "fusedCheckBox", "device": "deviceComboBox",
}
SLIDERS = {name: f"{name}Slider" for name in PARAMETERS}
OPTIONAL_SLIDERS = ("ti", "ti2", "flip")  # shown only for the sequences that take them
SERIES_LABELS = {"t1w": "T1w", "t2w": "T2w", "flair": "T2-FLAIR"}  # the routine series, as the section names them


class SyntheticMRIWidget(ReparamSection, VTKObservationMixin):
    """The GUI over ``logic`` (a :class:`SyntheticMRILib.slicer.logic.SyntheticMRILogic` with
    ``getParameterNode()``); ``ui`` holds the .ui's named widgets (``slicer.util.childWidgetVariables``)."""

    def __init__(self, ui, logic) -> None:
        VTKObservationMixin.__init__(self)
        self.ui, self.logic = ui, logic
        self._parameterNode = self._guiTag = None
        self._entered = False
        self._shownContrast = None  # the contrast the widgets were last laid out for
        self._appliedPreset = None  # (name, values) of the preset last applied, to notice edits to it
        self._dragValues: Dict[str, float] = {}  # slider values while a slider is dragged, not yet in the node
        self._lastUpdateKey = None  # what the output volume was last computed from
        self._resetWindowLevel = False  # a new contrast was picked: window the next result afresh
        self._handling = self._pending = False
        self._batchJob = self._mapsJob = None  # running ChildJobs
        self._sliders = {name: getattr(ui, widget) for name, widget in SLIDERS.items()}
        self._sliderLabels = {name: getattr(ui, f"{name}Label") for name in OPTIONAL_SLIDERS}
        for name, slider in self._sliders.items():
            disableKeyboardTracking(slider)
            # Not tracking (.ui): valueIsChanging fires while a slider is dragged and drives the preview of the
            # visible slices; valueChanged fires on release (or Enter) and the whole volume follows.
            slider.connect("valueIsChanging(double)", lambda value, name=name: self.onSliderMoving(name, value))
            slider.connect("valueChanged(double)", lambda value, name=name: self.onSliderReleased(name, value))
        ui.loadSampleButton.connect("clicked(bool)", self.onLoadSample)
        ui.applyButton.connect("clicked(bool)", lambda: self._synthesizeVolume(interactive=True))
        ui.batchPresetList.addItems(list(PRESETS))
        for widget, signal in ((ui.batchInputPathLineEdit, "currentPathChanged(QString)"),
                               (ui.batchOutputPathLineEdit, "currentPathChanged(QString)"),
                               (ui.batchPresetList, "itemSelectionChanged()"),
                               (ui.batchLearnedCheckBox, "toggled(bool)"), (ui.batchSegmentCheckBox, "toggled(bool)")):
            widget.connect(signal, self._updateBatchButtons)
        ui.batchRunButton.connect("clicked(bool)", self.onBatchRun)
        ui.batchCancelButton.connect("clicked(bool)", lambda: self._batchJob and self._batchJob.cancel())
        ui.segmentButton.connect("clicked(bool)", lambda: self.onMapsJob("segment"))
        ui.learnedContrastButton.connect("clicked(bool)", lambda: self.onMapsJob("contrast"))
        ui.segmentationCancelButton.connect("clicked(bool)", lambda: self._mapsJob and self._mapsJob.cancel())
        # Maps from routine scans: the series and their TR/TE/TI (ms) are read when the button is pressed.
        self._seriesSelectors = {series: getattr(ui, f"{series}Selector") for series in SERIES}
        self._seriesSpinBoxes = {series: {name: getattr(ui, f"{series}{name.capitalize()}SpinBox")
                                          for name in RANGES_MS[series]} for series in SERIES}
        for series, selector in self._seriesSelectors.items():
            selector.connect("currentNodeChanged(vtkMRMLNode*)",
                             lambda node, series=series: self.onSeriesChanged(series, node))
        ui.routineMapsButton.connect("clicked(bool)", self.onRoutineMaps)
        ui.routineCancelButton.connect("clicked(bool)", lambda: self._mapsJob and self._mapsJob.cancel())
        self._setUpReparam()
        self._updateBatchButtons()
        self._updateMapsJobButtons()
        # Zero-interval single-shot timers coalesce a burst of events into one computation.
        self._previewTimer, self._updateTimer, self._reparamTimer = qt.QTimer(), qt.QTimer(), qt.QTimer()
        for timer, callback in ((self._previewTimer, self._runPreview), (self._updateTimer, self._synthesizeVolume),
                                (self._reparamTimer, self._runReparamPreview)):
            timer.setSingleShot(True)
            timer.setInterval(0)
            timer.connect("timeout()", callback)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

    # ------------------------------------------------------------------ the module's life
    def enter(self) -> None:
        # Inputs are not guessed: three maps picked at random are worse than three empty selectors.
        self._entered = True
        self.setParameterNode(self.logic.getParameterNode())

    def exit(self) -> None:
        self._entered = False
        self.setParameterNode(None)

    def cleanup(self) -> None:
        self._previewTimer.stop()
        self._updateTimer.stop()
        self._reparamTimer.stop()
        for job in (self._batchJob, self._mapsJob):  # module reloaded or Slicer closing
            if job is not None:
                job.kill()
        self.setParameterNode(None)
        self.removeObservers()

    def onSceneStartClose(self, caller=None, event=None) -> None:
        self.setParameterNode(None)
        self.logic.clearCache()
        self._scanMaps = self._scanMapsKey = None  # their scan leaves with the scene

    def onSceneEndClose(self, caller=None, event=None) -> None:
        if self._entered:  # the module is shown: a fresh node for the new scene
            self.enter()

    def setParameterNode(self, parameterNode: Optional[SyntheticMRIParameterNode]) -> None:
        if self._parameterNode is not None:
            self._parameterNode.disconnectGui(self._guiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode, self._guiTag, self._shownContrast, self._appliedPreset = parameterNode, None, None, None
        if parameterNode is not None:
            self._guiTag = parameterNode.connectParametersToGui({name: getattr(self.ui, widget) for name, widget in BINDINGS.items()})
            self.addObserver(parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    # ------------------------------------------------------------------ the parameter node drives the sliders
    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        if self._parameterNode is None:
            return
        if self._handling:  # a change made by the pass below: handled right after it
            self._pending = True
            return
        self._handling = True
        try:
            self._pending = True
            while self._pending:
                self._pending = False
                self._updateFromParameterNode()
        finally:
            self._handling = False
        if self._parameterNode.autoUpdate and self._outputIsSynthetic():
            self._updateTimer.start()

    def _updateFromParameterNode(self) -> None:
        """One pass: apply a newly picked preset, keep TE < TR, TI < TR, TI2 < TI, mark an edited preset Custom,
        then show the final values on sliders with their bounds."""
        p = self._parameterNode
        values = {name: float(getattr(p, name)) for name in PARAMETERS}
        if p.contrast != self._shownContrast:
            chosenByUser = self._shownContrast is not None  # None: the node was just (re)connected
            self._shownContrast = p.contrast
            if chosenByUser:
                self._resetWindowLevel = True
                if p.contrast in PRESETS:  # no torch needed: the presets are the library's torch-free catalogue
                    self._appliedPreset = (p.contrast, preset_values(p.contrast))
                    values.update(self._appliedPreset[1])  # the others stay, clamped below
        values = clamp_parameters(values, sequence_of(p.contrast))
        with slicer.util.NodeModify(p):
            for name, value in values.items():
                if getattr(p, name) != value:
                    setattr(p, name, value)
            self._switchToCustomIfPresetEdited(values)
        self._showSliders(values, sequence_of(p.contrast))
        self._layOutContrast()
        problem = self._inputProblem()
        self.ui.applyButton.enabled = problem is None
        self.ui.applyButton.toolTip = problem or _("Synthesize the whole volume with the current contrast.")

    def _showSliders(self, values: Dict[str, float], sequence: str, sliders: Optional[dict] = None) -> None:
        """Bounds first (those of ``sequence``: every value inside makes a valid protocol), then values, signals
        blocked: nothing writes back, nothing is clipped by stale bounds. ``sliders``: the synthesis section's by default."""
        bounds = parameter_bounds(values["tr"], values["ti"], sequence)
        for name, slider in (sliders or self._sliders).items():
            wasBlocked = slider.blockSignals(True)
            slider.minimum, slider.maximum = bounds[name]
            slider.value = values[name]
            slider.blockSignals(wasBlocked)

    def _switchToCustomIfPresetEdited(self, values: Dict[str, float]) -> None:
        """A preset whose values were changed is no longer that preset: say so in the contrast list."""
        name, presetValues = self._appliedPreset or (None, {})
        p = self._parameterNode
        edited = any(abs(values[key] - value) > 1e-6 for key, value in presetValues.items())
        if name is not None and (p.contrast != name or edited):
            self._appliedPreset = None
            if p.contrast == name:
                self._shownContrast = p.contrast = custom_contrast_of(PRESETS[name].protocol.sequence)

    def _layOutContrast(self) -> None:
        """Show the sliders the sequence uses, and what the contrast shows."""
        uses = SEQUENCES[sequence_of(self._parameterNode.contrast)].needs
        for name, label in self._sliderLabels.items():
            self._sliders[name].setVisible(name in uses)
            label.setVisible(name in uses)
        self.ui.tiLabel.text = _("TI1 (longer):") if "ti2" in uses else _("TI:")
        self.ui.contrastInfoLabel.text = self.logic.contrastDescription(self._parameterNode.contrast)

    def _inputProblem(self) -> Optional[str]:
        p = self._parameterNode
        if p is None:
            return _("No parameter node.")
        if not all((p.t1Volume, p.t2Volume, p.pdVolume)):
            return _("Select the T1, T2 and PD maps (or load the sample).")
        if p.outputVolume is not None and p.outputVolume in (p.t1Volume, p.t2Volume, p.pdVolume):
            return _("The output volume must not be one of the input maps.")
        return None

    def _outputIsSynthetic(self) -> bool:
        output = self._parameterNode.outputVolume if self._parameterNode else None
        return bool(output is not None and output.GetImageData() and output.GetAttribute(PROTOCOL_ATTRIBUTE))

    # ------------------------------------------------------------------ sliders and synthesis
    def onSliderMoving(self, name: str, value: float) -> None:
        self._dragValues[name] = value
        self._previewTimer.start()

    def onSliderReleased(self, name: str, value: float) -> None:
        self._dragValues.pop(name, None)
        if self._parameterNode is not None and getattr(self._parameterNode, name) != value:
            setattr(self._parameterNode, name, value)

    def onLoadSample(self) -> None:
        if not self.logic.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay(_("Could not load the sample maps."), waitCursor=True):
            nodes = self.logic.loadSample()
            with slicer.util.NodeModify(self._parameterNode):
                p = self._parameterNode
                p.t1Volume, p.t2Volume, p.pdVolume, p.units = nodes["t1"], nodes["t2"], nodes["pd"], "ms"
        self._synthesizeVolume(interactive=True)

    def _synthesizeVolume(self, interactive: bool = False) -> None:
        """The whole volume, in process (see SyntheticMRILogic.synthesize); not ``interactive``: an automatic
        update, which opens no dialog and skips what was computed already."""
        p = self._parameterNode
        if p is None or self._inputProblem():
            return
        if not self.logic.ensureDependencies(askConfirmation=interactive):
            self.ui.statusLabel.text = _("PyTorch is needed: press Synthesize to install it.")
            return
        try:
            with slicer.util.WaitCursor():
                protocol = self._protocol()
                if not interactive and self._updateKey(protocol) == self._lastUpdateKey:
                    return
                created = p.outputVolume is None
                output = self.logic.synthesize(
                    p.t1Volume, p.t2Volume, p.pdVolume, protocol, outputNode=p.outputVolume, units=p.units,
                    device=p.device, fused=p.fused, name=self.logic.outputName(p.contrast))
        except Exception as error:  # shown to the user; InputError (a ValueError) messages are written for them
            (logging.error if isinstance(error, ValueError) else logging.exception)(f"SyntheticMRI: synthesis failed: {error}")
            self.ui.statusLabel.text = _("Failed: {error}").format(error=error)
            if interactive:
                slicer.util.errorDisplay(_("Synthesis failed: {error}").format(error=error))
            return
        if created:
            p.outputVolume = output
        elif self._resetWindowLevel:
            from .bridge import rewindow  # torch is there: synthesis just ran

            # A new contrast, a new intensity range: window it once, then keep the window so that sliders show the change.
            rewindow(output)
        self._resetWindowLevel = False
        self._lastUpdateKey = self._updateKey(protocol)
        if created or interactive:
            slicer.util.setSliceViewerLayers(background=output, fit=created)
        self.ui.statusLabel.text = _("{contrast}, {caption}: {milliseconds:.0f} ms").format(
            contrast=p.contrast, caption=protocol.caption(), milliseconds=1000.0 * self.logic.lastDuration)

    def _protocol(self, overrides: Optional[Dict[str, float]] = None):
        """The protocol of the parameter node, with ``overrides`` (a dragged slider) kept physical."""
        contrast = self._parameterNode.contrast
        values = {name: float(getattr(self._parameterNode, name)) for name in PARAMETERS}
        return self.logic.protocol(contrast, **clamp_parameters({**values, **(overrides or {})}, sequence_of(contrast)))

    def _updateKey(self, protocol) -> tuple:
        from .bridge import node_stamps  # torch is there: this runs after ensureDependencies

        p = self._parameterNode
        inputs = node_stamps((p.t1Volume, p.t2Volume, p.pdVolume))
        return (inputs, p.units, p.device, protocol, p.outputVolume.GetID() if p.outputVolume else None)

    def _runPreview(self) -> None:
        """Recompute only the voxels the slice views show, with the dragged value."""
        values, self._dragValues = self._dragValues, {}
        p = self._parameterNode
        if (not values or p is None or not p.autoUpdate or self._inputProblem() or not self._outputIsSynthetic()
                or not self.logic.libraryLoaded()):
            return  # nothing to preview into yet: the release computes the whole volume
        try:
            self.logic.updateVisibleSlices(p.t1Volume, p.t2Volume, p.pdVolume, self._protocol(values), p.outputVolume,
                                           units=p.units, device=p.device)
        except Exception as error:  # a preview never interrupts a drag with a dialog
            logging.debug(f"SyntheticMRI: preview skipped ({error})")

    # ------------------------------------------------------------------ batch, out of process
    def _batchRequest(self) -> Tuple[str, str, List[str]]:
        presets = [item.text() for item in self.ui.batchPresetList.selectedItems()]
        return self.ui.batchInputPathLineEdit.currentPath, self.ui.batchOutputPathLineEdit.currentPath, presets

    def _updateBatchButtons(self, *unused) -> None:
        running, (study, output, presets) = self._batchJob is not None, self._batchRequest()
        steps = presets or self.ui.batchLearnedCheckBox.checked or self.ui.batchSegmentCheckBox.checked
        self.ui.batchRunButton.enabled = not running and bool(study and output and steps)
        self.ui.batchCancelButton.enabled = running
        for widget in (self.ui.batchInputPathLineEdit, self.ui.batchOutputPathLineEdit, self.ui.batchPresetList,
                       self.ui.batchLearnedCheckBox, self.ui.batchSegmentCheckBox, self.ui.batchWorkersSpinBox,
                       self.ui.batchRetryCheckBox, self.ui.batchOverwriteCheckBox):
            widget.enabled = not running

    def onBatchRun(self) -> None:
        """The chosen contrasts and steps for every subject, in a PythonSlicer process (and its workers) reporting on
        stdout; nothing waits. Running it again into the same folder finishes an interrupted run."""
        ui = self.ui
        extras = ui.batchLearnedCheckBox.checked or ui.batchSegmentCheckBox.checked or ui.batchWorkersSpinBox.value > 1
        if self._batchJob is not None or not self.logic.ensureDependencies(extras=extras):
            return
        from .. import jobs

        p, (study, output, presets) = self._parameterNode, self._batchRequest()
        argv = jobs.batch_command(jobs.slicer_python(), study, presets, output, units=p.units, device=p.device,
                                  overwrite=ui.batchOverwriteCheckBox.checked, learned=ui.batchLearnedCheckBox.checked,
                                  segment=ui.batchSegmentCheckBox.checked, retry_failed=ui.batchRetryCheckBox.checked,
                                  workers=int(ui.batchWorkersSpinBox.value))
        describe = lambda done, total, last: _("{done} of {total} subjects done").format(done=done, total=total) + (
            _("; last: {last}").format(last=last) if last else "")
        self._batchJob = ChildJob(argv, self.ui.batchProgressBar, self.ui.batchStatusLabel,
                                  lambda *result: self._onBatchFinished(output, *result), describe)
        self._updateBatchButtons()
        self._batchJob.start()

    def _onBatchFinished(self, output: str, ok: bool, cancelled: bool, error: str, messages: List[str]) -> None:
        from .. import jobs

        self._batchJob = None
        if ok:
            status = _("Done: written under {output}.").format(output=output)
        elif cancelled:
            jobs.remove_partial_files(output)  # left only where the child was killed while writing
            status = _("Cancelled: the outputs written so far are complete; Run batch finishes the rest.")
        else:
            status = "\n".join([_("Failed: {error}").format(error=error)] + messages)
        self.ui.batchStatusLabel.text = status
        self._updateBatchButtons()

    # ------------------------------------------------------------------ segmentation and learned contrasts, out of process
    def _updateMapsJobButtons(self) -> None:
        """One maps job at a time (segmentation, learned contrasts, maps from routine scans or re-parameterization):
        each is a process holding a network; Cancel is offered in the section of the one running."""
        ui, job = self.ui, self._mapsJob
        ui.segmentButton.enabled = ui.learnedContrastButton.enabled = ui.routineMapsButton.enabled = job is None
        ui.reparamApplyButton.enabled = job is None
        ui.reparamPredictButton.enabled = job is None and self._reparamEngine() == "physics"  # the direct engine has no maps
        ui.segmentationCancelButton.enabled = job is not None and job.progressBar is ui.segmentationProgressBar
        ui.routineCancelButton.enabled = job is not None and job.progressBar is ui.routineProgressBar
        ui.reparamCancelButton.enabled = job is not None and job.progressBar is ui.reparamProgressBar

    def onMapsJob(self, command: str) -> None:
        """``segment`` or ``contrast`` (the learned contrasts) on the input maps, in a PythonSlicer process."""
        problem = self._inputProblem()
        if problem:
            self.ui.segmentationStatusLabel.text = problem
            return
        if self._mapsJob is not None or not self.logic.ensureDependencies(extras=True):
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Could not write the maps for the segmenter."), waitCursor=True):
            folder, argv = self.logic.mapsJob(command, p.t1Volume, p.t2Volume, p.pdVolume, p.units, p.device)
        describe = lambda done, total, what: _("{what}: {done} of {total}").format(what=what, done=done, total=total)
        self._startMapsJob(folder, argv, self.ui.segmentationProgressBar, self.ui.segmentationStatusLabel, describe,
                           lambda messages: self._loadMapsJobResults(command, folder), _("Could not load the results."))

    def _startMapsJob(self, folder: str, argv: List[str], progressBar, label, describe,
                      load: Callable[[List[str]], str], loadError: str) -> None:
        """Run a maps job (one at a time) in a PythonSlicer child; when it ends, ``load(messages)`` brings its results
        into the scene and gives the status text, and its folder is removed whatever happened."""
        self._mapsJob = ChildJob(argv, progressBar, label,
                                 lambda *result: self._onMapsJobFinished(folder, label, load, loadError, *result), describe)
        self._updateMapsJobButtons()
        self._mapsJob.start()

    def _onMapsJobFinished(self, folder: str, label, load: Callable[[List[str]], str], loadError: str, ok: bool,
                           cancelled: bool, error: str, messages: List[str]) -> None:
        self._mapsJob = None
        self._updateMapsJobButtons()
        try:
            if not ok:
                label.text = _("Cancelled.") if cancelled else _("Failed: {error}").format(error=error)
                return
            with slicer.util.tryWithErrorDisplay(loadError, waitCursor=True):
                label.text = load(messages)
        finally:
            self.logic.removeJobFolder(folder)

    def _loadMapsJobResults(self, command: str, folder: str) -> str:
        if command == "segment":
            segmentation, table = self.logic.loadSegmentation(folder, self._parameterNode.t1Volume)
            self.ui.volumesTableView.setMRMLTableNode(table)
            total = sum(float(table.GetCellText(row, 2)) for row in range(table.GetNumberOfRows()))
            return _("{count} structures, {total:.1f} ml in all.").format(
                count=segmentation.GetSegmentation().GetNumberOfSegments(), total=total)
        nodes = self.logic.loadLearnedContrasts(folder)
        slicer.util.setSliceViewerLayers(background=nodes[0], fit=True)
        return "\n".join(node.GetName() + ": " + node.GetAttribute(PROTOCOL_ATTRIBUTE) for node in nodes)

    # ------------------------------------------------------------------ maps from routine scans, out of process
    def onSeriesChanged(self, series: str, node) -> None:
        """Fill in the TR/TE/TI a chosen volume is known to have (DICOM, or a contrast synthesized here)."""
        for name, value in self.logic.protocolValuesFromNode(node, series).items():
            self._seriesSpinBoxes[series][name].value = value

    def _routineProblem(self) -> Optional[str]:
        missing = [SERIES_LABELS[s] for s, selector in self._seriesSelectors.items() if selector.currentNode() is None]
        if missing:
            return _("Select the {series} volume(s).").format(series=", ".join(missing))
        unknown = [f"{SERIES_LABELS[s]} {name.upper()}" for s, boxes in self._seriesSpinBoxes.items()
                   for name, box in boxes.items() if box.value <= 0]
        return _("Enter the {unknown} (ms).").format(unknown=", ".join(unknown)) if unknown else None

    def onRoutineMaps(self) -> None:
        """T1/T2/PD maps from the T1w, T2w and FLAIR in a PythonSlicer process; they become the input maps."""
        problem = self._routineProblem()
        if problem:
            self.ui.routineStatusLabel.text = problem
            return
        if self._mapsJob is not None or not self.logic.ensureDependencies(extras=True):
            return
        nodes = [self._seriesSelectors[series].currentNode() for series in SERIES]
        values = {series: {name: float(box.value) for name, box in boxes.items()}
                  for series, boxes in self._seriesSpinBoxes.items()}
        with slicer.util.tryWithErrorDisplay(_("Could not write the series for the map estimator."), waitCursor=True):
            folder, argv = self.logic.routineMapsJob(*nodes, values, device=self.logic.getParameterNode().device)
        describe = lambda done, total, what: _("Estimating the maps: slice {done} of {total}").format(
            done=done, total=total)
        self._startMapsJob(folder, argv, self.ui.routineProgressBar, self.ui.routineStatusLabel, describe,
                           lambda messages: self._loadEstimatedMaps(folder, messages),
                           _("Could not load the estimated maps."))

    def _loadEstimatedMaps(self, folder: str, messages: List[str]) -> str:
        t1, t2, pd = self.logic.loadEstimatedMaps(folder)
        p = self.logic.getParameterNode()  # the module's, even if it was left while the job ran
        with slicer.util.NodeModify(p):
            p.t1Volume, p.t2Volume, p.pdVolume, p.units = t1, t2, pd, "ms"
        slicer.util.setSliceViewerLayers(background=t1, fit=True)
        # e.g. a TR outside the training ranges: the maps may be less accurate, and the user should know
        warnings = [line for line in messages if line.startswith("warning:")]
        return "\n".join([_("Estimated T1, T2 (ms) and PD: they are the input maps now.")] + warnings)
