"""SyntheticMRI: synthetic MR contrasts from quantitative T1, T2 and PD maps (3D Slicer module).

GUI wiring and a thin logic over ``SyntheticMRILib`` (physics, map checks, live preview, MRML bridge).
Importing this file imports neither torch nor SyntheticMRILib: they load on first use, after PyTorch
has been installed with the user's consent.

Console use (more in the README): ``logic = SyntheticMRILogic(); logic.ensureDependencies()``, then
``logic.synthesize(t1Node, t2Node, pdNode, "T2-FLAIR")`` or with ``logic.protocol("Custom double IR", tr=..., ...)``.

Long work runs out of process via PythonSlicer (SyntheticMRILib.batch: study folders, segmentation, the learned
contrasts; ChildJob below reads its progress; run_batch_process blocks, for the console); synthesis of one volume is
sub-second and runs in process.
"""
import importlib.util
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Dict, List, Optional, Tuple

import qt
import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _, translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest,
                                           ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

# What the GUI offers: copies of SyntheticMRILib's PRESETS / SEQUENCES (protocols), UNITS (maps) and DEVICES,
# because the library imports torch and the GUI draws before torch is installed. Preset *values* are read from
# the library. Testing/test_module_static.py fails when a copy drifts from its source.
PRESET_SEQUENCES = {
    "T1w": "se", "T2w": "se", "PDw": "se", "T2-FLAIR": "ir", "T1-FLAIR": "ir", "STIR": "ir",
    "PSIR": "psir", "DIR": "dir", "WM-nulled": "ir", "GM-nulled": "ir", "dSIR": "dsir", "T1w-GRE": "gre",
}
CUSTOM_SEQUENCES = {
    "Custom spin echo": "se", "Custom inversion recovery": "ir", "Custom phase-sensitive IR": "psir",
    "Custom double IR": "dir", "Custom gradient echo": "gre", "Custom dSIR": "dsir",
}
SEQUENCE_PARAMETERS = {"se": (), "ir": ("ti",), "psir": ("ti",), "dir": ("ti", "ti2"), "gre": ("flip",), "dsir": ("ti", "ti2")}
CONTRASTS = tuple(PRESET_SEQUENCES) + tuple(CUSTOM_SEQUENCES)
UNITS = ("ms", "s")
DEVICES = ("auto", "cpu", "cuda")
# Requirements as in pyproject.toml (checked by the static tests). numpy and SimpleITK ship with Slicer;
# tqdm, matplotlib, monai and scipy serve the library's extras (progress bars, figures, the segmenter) and are
# installed on demand.
TORCH_MINIMUM = (2, 1)
EXTRA_REQUIREMENTS = {"tqdm": "tqdm>=4.60", "matplotlib": "matplotlib>=3.5", "monai": "monai>=1.3", "scipy": "scipy>=1.9"}

# Slider ranges (ms, degrees); parameterBounds() also keeps TE < TR, TI < TR and TI2 < TI, strict by GAP_MS
# (the minima leave room for it). Spoiled gradient echo is used below 90 degrees; Protocol accepts up to 180.
SLIDER_PARAMETERS = ("tr", "te", "ti", "ti2", "flip")
TR_RANGE = (5.0, 15000.0)
TE_RANGE = (0.0, 1000.0)
TI_RANGE = (2.0, 10000.0)
TI2_RANGE = (1.0, 5000.0)
FLIP_RANGE = (1.0, 90.0)
GAP_MS = 1.0

# The node attribute of a synthesized volume (as in SyntheticMRILib.slicer_bridge): live updates may overwrite it.
PROTOCOL_ATTRIBUTE = "SyntheticMRI.Protocol"


def library(name: str):
    """``SyntheticMRILib.<name>``, imported on first use: it imports torch, so only after ensureDependencies()."""
    return importlib.import_module("SyntheticMRILib." + name)


def sequenceOf(contrast: str) -> str:
    """The sequence key ('se', 'ir', ...) of a GUI contrast: a preset name or a custom entry."""
    return PRESET_SEQUENCES[contrast] if contrast in PRESET_SEQUENCES else CUSTOM_SEQUENCES[contrast]


def customContrastOf(sequence: str) -> str:
    """The custom GUI entry of a sequence key."""
    return next(label for label, key in CUSTOM_SEQUENCES.items() if key == sequence)


def parameterBounds(tr: float, ti: float) -> Dict[str, Tuple[float, float]]:
    """The (minimum, maximum) of each slider for a given TR and TI: TE < TR, TI < TR, TI2 < TI."""
    return {
        "tr": TR_RANGE,
        "te": (TE_RANGE[0], min(TE_RANGE[1], tr - GAP_MS)),
        "ti": (TI_RANGE[0], min(TI_RANGE[1], tr - GAP_MS)),
        "ti2": (TI2_RANGE[0], min(TI2_RANGE[1], ti - GAP_MS)),
        "flip": FLIP_RANGE,
    }


def clampParameters(values: Dict[str, float]) -> Dict[str, float]:
    """``values`` (all of SLIDER_PARAMETERS) moved inside their bounds; TR first, then TI, then the rest."""
    clamped = dict(values)
    for name in ("tr", "ti", "te", "ti2", "flip"):  # each bound depends only on the values clamped before it
        low, high = parameterBounds(float(clamped["tr"]), float(clamped["ti"]))[name]
        clamped[name] = min(max(float(clamped[name]), low), high)
    return clamped


class SyntheticMRI(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Synthetic MRI")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.contributors = ["SlicerSyntheticMRI developers"]
        self.parent.helpText = _(
            "Synthesizes any weighted MR contrast (spin echo, inversion recovery with FLAIR, STIR, DIR, PSIR and dSIR, "
            "spoiled gradient echo) from quantitative T1 and T2 maps in ms and a proton-density map, as produced by "
            "SyMRI/MAGiC/QRAPMASTER or MR fingerprinting. Pick a preset or set TR, TE, TI and the flip angle; the "
            "slices in view follow the sliders while they move and the whole volume is computed on release. The result "
            "lies exactly on the grid of the T1 map. With no T2* map, the gradient echo uses T2 in place of T2*. "
            '<a href="https://github.com/SlicerSyntheticMRI/SlicerSyntheticMRI">Documentation</a>.'
        )
        self.parent.acknowledgementText = _(
            "Signal equations after Bernstein, King and Zhou, Handbook of MRI Pulse Sequences (2004); presets after "
            "the MAGiC/SyMRI defaults (Tanenbaum 2017, Hagiwara 2017). Computation runs on PyTorch."
        )


@parameterNodeWrapper
class SyntheticMRIParameterNode:
    """The module's state, saved with the scene: times in ms, flip angle in degrees, ``ti2`` the shorter inversion
    time of double IR and dSIR. The defaults are the T2-FLAIR preset (checked by the static tests)."""

    t1Volume: vtkMRMLScalarVolumeNode
    t2Volume: vtkMRMLScalarVolumeNode
    pdVolume: vtkMRMLScalarVolumeNode
    units: Annotated[str, Choice(list(UNITS))] = "ms"
    contrast: Annotated[str, Choice(list(CONTRASTS))] = "T2-FLAIR"
    tr: Annotated[float, WithinRange(*TR_RANGE)] = 9000.0
    te: Annotated[float, WithinRange(*TE_RANGE)] = 90.0
    ti: Annotated[float, WithinRange(*TI_RANGE)] = 2372.0
    ti2: Annotated[float, WithinRange(*TI2_RANGE)] = 551.0
    flip: Annotated[float, WithinRange(*FLIP_RANGE)] = 25.0
    outputVolume: vtkMRMLScalarVolumeNode
    autoUpdate: bool = True
    fused: bool = True
    device: Annotated[str, Choice(list(DEVICES))] = "auto"


class SyntheticMRIWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = self._parameterNodeGuiTag = None
        self._shownContrast = None  # the contrast the widgets were last laid out for
        self._appliedPreset = None  # (name, values) of the preset last applied, to notice edits to it
        self._dragValues = {}  # slider values while a slider is dragged, not yet in the parameter node
        self._lastUpdateKey = None  # what the output volume was last computed from
        self._resetWindowLevel = False  # a new contrast was picked: window the next result afresh
        self._handlingModified = False
        self._batchJob = None  # the ChildJob of a running batch
        self._segmentationJob = None  # the ChildJob of a running segmentation or learned-contrast synthesis

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SyntheticMRI.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SyntheticMRILogic()
        self._sliders = {"tr": self.ui.trSlider, "te": self.ui.teSlider, "ti": self.ui.tiSlider, "ti2": self.ui.ti2Slider,
                         "flip": self.ui.flipSlider}
        self._sliderLabels = {"ti": self.ui.tiLabel, "ti2": self.ui.ti2Label, "flip": self.ui.flipLabel}
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        # The sliders do not track (see the .ui): valueIsChanging fires while one is dragged and drives the
        # preview of the visible slices; valueChanged fires on release, reaches the parameter node through
        # the parameterNodeWrapper binding, and the whole volume follows.
        for name, slider in self._sliders.items():
            slider.connect("valueIsChanging(double)", lambda value, name=name: self.onSliderMoving(name, value))
        self.ui.loadSampleButton.connect("clicked(bool)", self.onLoadSample)
        self.ui.applyButton.connect("clicked(bool)", lambda: self._synthesizeVolume(interactive=True))
        self.ui.batchPresetList.addItems(list(PRESET_SEQUENCES))
        self.ui.batchInputPathLineEdit.connect("currentPathChanged(QString)", self._updateBatchButtons)
        self.ui.batchOutputPathLineEdit.connect("currentPathChanged(QString)", self._updateBatchButtons)
        self.ui.batchPresetList.connect("itemSelectionChanged()", self._updateBatchButtons)
        self.ui.batchRunButton.connect("clicked(bool)", self.onBatchRun)
        self.ui.batchCancelButton.connect("clicked(bool)", self.onBatchCancel)
        self._updateBatchButtons()
        self.ui.segmentButton.connect("clicked(bool)", lambda: self.onMapsJob("segment"))
        self.ui.learnedContrastButton.connect("clicked(bool)", lambda: self.onMapsJob("contrast"))
        self.ui.segmentationCancelButton.connect("clicked(bool)", lambda: self._segmentationJob and self._segmentationJob.cancel())
        self._updateSegmentationButtons()
        # Zero-interval single-shot timers coalesce a burst of events into one computation.
        self._previewTimer, self._updateTimer = qt.QTimer(), qt.QTimer()
        for timer, callback in ((self._previewTimer, self._runPreview), (self._updateTimer, self._synthesizeVolume)):
            timer.setSingleShot(True)
            timer.setInterval(0)
            timer.connect("timeout()", callback)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._previewTimer.stop()
        self._updateTimer.stop()
        for job in (self._batchJob, self._segmentationJob):  # module reloaded or Slicer closing
            if job is not None:
                job.kill()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self._disconnectParameterNode()

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        self.logic.clearCache()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        # Inputs are not guessed: three maps picked at random are worse than three empty selectors.
        self.setParameterNode(self.logic.getParameterNode())

    def _disconnectParameterNode(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            for callback in (self._openSliderRanges, self._onParameterNodeModified):
                self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, callback)

    def setParameterNode(self, parameterNode: Optional[SyntheticMRIParameterNode]) -> None:
        self._disconnectParameterNode()
        self._parameterNode, self._shownContrast, self._appliedPreset = parameterNode, None, None
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            # Two observers around the wrapper's own (priority 0: it refreshes its cached values and writes
            # them into the widgets). Before it, the sliders open to their full ranges, so that no new value
            # is clipped by the bounds of the old ones; after it, the module reacts to the new values and
            # narrows the sliders to their physical bounds.
            modified = vtk.vtkCommand.ModifiedEvent
            self.addObserver(self._parameterNode, modified, self._openSliderRanges, priority=1.0)
            self.addObserver(self._parameterNode, modified, self._onParameterNodeModified, priority=-1.0)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None or self._handlingModified:
            return
        self._handlingModified = True
        try:
            values = {name: float(getattr(p, name)) for name in SLIDER_PARAMETERS}
            if p.contrast != self._shownContrast:
                chosenByUser = self._shownContrast is not None  # None: the node was just (re)connected
                self._shownContrast = p.contrast
                if chosenByUser:
                    self._resetWindowLevel = True
                    if p.contrast in PRESET_SEQUENCES and self.logic.ensureDependencies():
                        self._appliedPreset = (p.contrast, self.logic.presetValues(p.contrast))
                        values.update(self._appliedPreset[1])  # the others stay, clamped below
            # TE < TR, TI < TR, TI2 < TI: when TR (or TI) moved, the others follow, and the sliders show the bounds.
            values = clampParameters(values)
            with slicer.util.NodeModify(p):
                for name, value in values.items():
                    if getattr(p, name) != value:
                        setattr(p, name, value)
            self._setSliderRanges(values)
            self._switchToCustomIfPresetEdited()
            self._layOutContrast()
            problem = self._inputProblem()
            self.ui.applyButton.enabled = problem is None
            self.ui.applyButton.toolTip = problem or _("Synthesize the whole volume with the current contrast.")
        finally:
            self._handlingModified = False
        if p.autoUpdate and self._outputIsSynthetic():
            self._updateTimer.start()

    def _openSliderRanges(self, caller=None, event=None) -> None:
        self._setSliderRanges({"tr": TR_RANGE[1], "ti": TI_RANGE[1]})

    def _setSliderRanges(self, values: Dict[str, float]) -> None:
        """Slider ranges for the TR and TI in ``values``; signals blocked, so that nothing writes back."""
        for name, (low, high) in parameterBounds(values["tr"], values["ti"]).items():
            slider = self._sliders[name]
            wasBlocked = slider.blockSignals(True)
            slider.minimum, slider.maximum = low, high
            slider.blockSignals(wasBlocked)

    def _switchToCustomIfPresetEdited(self) -> None:
        """A preset whose values were changed is no longer that preset: say so in the contrast list."""
        name, presetValues = self._appliedPreset or (None, {})
        p = self._parameterNode
        edited = any(abs(getattr(p, key) - value) > 1e-6 for key, value in presetValues.items())
        if name is not None and (p.contrast != name or edited):
            self._appliedPreset = None
            if p.contrast == name:
                self._shownContrast = p.contrast = customContrastOf(PRESET_SEQUENCES[name])

    def _layOutContrast(self) -> None:
        """Show the sliders the sequence uses, and what the contrast shows."""
        uses = SEQUENCE_PARAMETERS[sequenceOf(self._parameterNode.contrast)]
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

    def onLoadSample(self) -> None:
        if not self.logic.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay(_("Could not load the sample maps."), waitCursor=True):
            nodes = self.logic.loadSample()
            with slicer.util.NodeModify(self._parameterNode):
                p = self._parameterNode
                p.t1Volume, p.t2Volume, p.pdVolume, p.units = nodes["t1"], nodes["t2"], nodes["pd"], "ms"
        self._synthesizeVolume(interactive=True)

    def onSliderMoving(self, name: str, value: float) -> None:
        self._dragValues[name] = value
        self._previewTimer.start()

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
                protocol = self.logic.protocolFromParameters(p)
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
        elif self._resetWindowLevel and output.GetDisplayNode() is not None:
            # A new contrast, a new intensity range: window it once, then keep the window so that sliders show the change.
            output.GetDisplayNode().AutoWindowLevelOn()
            output.GetDisplayNode().AutoWindowLevelOff()
        self._resetWindowLevel = False
        self._lastUpdateKey = self._updateKey(protocol)
        if created or interactive:
            slicer.util.setSliceViewerLayers(background=output, fit=created)
        self.ui.statusLabel.text = _("{contrast}, {caption}: {milliseconds:.0f} ms").format(
            contrast=p.contrast, caption=protocol.caption(), milliseconds=1000.0 * self.logic.lastDuration)

    def _updateKey(self, protocol) -> tuple:
        p = self._parameterNode
        inputs = library("slicer_bridge").node_stamps((p.t1Volume, p.t2Volume, p.pdVolume))
        return (inputs, p.units, p.device, protocol, p.outputVolume.GetID() if p.outputVolume else None)

    def _runPreview(self) -> None:
        """Recompute only the voxels the slice views show, with the dragged value."""
        values, self._dragValues = self._dragValues, {}
        p = self._parameterNode
        if (not values or p is None or not p.autoUpdate or self._inputProblem() or not self._outputIsSynthetic()
                or not self.logic.libraryLoaded()):
            return  # nothing to preview into yet: the release computes the whole volume
        try:
            protocol = self.logic.protocolFromParameters(p, overrides=values)
            self.logic.updateVisibleSlices(
                p.t1Volume, p.t2Volume, p.pdVolume, protocol, p.outputVolume, units=p.units, device=p.device)
        except Exception as error:  # a preview never interrupts a drag with a dialog
            logging.debug(f"SyntheticMRI: preview skipped ({error})")

    def _batchRequest(self) -> Tuple[str, str, List[str]]:
        presets = [item.text() for item in self.ui.batchPresetList.selectedItems()]
        return self.ui.batchInputPathLineEdit.currentPath, self.ui.batchOutputPathLineEdit.currentPath, presets

    def _updateBatchButtons(self, *unused) -> None:
        running, (study, output, presets) = self._batchJob is not None, self._batchRequest()
        self.ui.batchRunButton.enabled = not running and bool(study and output and presets)
        self.ui.batchCancelButton.enabled = running
        for widget in (self.ui.batchInputPathLineEdit, self.ui.batchOutputPathLineEdit, self.ui.batchPresetList,
                       self.ui.batchOverwriteCheckBox):
            widget.enabled = not running

    def onBatchRun(self) -> None:
        """The selected presets for every subject, in a PythonSlicer process reporting on stdout; nothing waits."""
        if self._batchJob is not None or not self.logic.ensureDependencies():
            return
        batch, p, (study, output, presets) = library("batch"), self._parameterNode, self._batchRequest()
        argv = batch.batch_command(batch.slicer_python(), study, presets, output, units=p.units, device=p.device,
                                   overwrite=self.ui.batchOverwriteCheckBox.checked)
        describe = lambda done, total, subject: _("{subject} ({number} of {total})").format(
            subject=subject, number=done + 1, total=total) if subject else ""
        self._batchJob = ChildJob(argv, self.ui.batchProgressBar, self.ui.batchStatusLabel,
                                  lambda *result: self._onBatchFinished(output, *result), describe)
        self._updateBatchButtons()
        self._batchJob.start()

    def onBatchCancel(self) -> None:
        if self._batchJob is not None:
            self._batchJob.cancel()

    def _onBatchFinished(self, output: str, ok: bool, cancelled: bool, error: str, messages: List[str]) -> None:
        self._batchJob = None
        if ok:
            status = _("Done: written under {output}.").format(output=output)
        elif cancelled:
            library("batch").remove_partial_files(output)  # left only where the child was killed while writing
            status = _("Cancelled: the volumes written so far are complete.")
        else:
            status = "\n".join([_("Failed: {error}").format(error=error)] + messages)
        self.ui.batchStatusLabel.text = status
        self._updateBatchButtons()

    def _updateSegmentationButtons(self) -> None:
        running = self._segmentationJob is not None
        self.ui.segmentButton.enabled = self.ui.learnedContrastButton.enabled = not running
        self.ui.segmentationCancelButton.enabled = running

    def onMapsJob(self, command: str) -> None:
        """``segment`` or ``contrast`` (the learned contrasts) on the input maps, in a PythonSlicer process."""
        problem = self._inputProblem()
        if problem:
            self.ui.segmentationStatusLabel.text = problem
            return
        if self._segmentationJob is not None or not self.logic.ensureDependencies(extras=True):
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Could not write the maps for the segmenter."), waitCursor=True):
            folder, argv = self.logic.mapsJob(command, p.t1Volume, p.t2Volume, p.pdVolume, p.units, p.device)
        describe = lambda done, total, what: _("{what}: {done} of {total}").format(what=what, done=done, total=total)
        self._segmentationJob = ChildJob(argv, self.ui.segmentationProgressBar, self.ui.segmentationStatusLabel,
                                         lambda *result: self._onMapsJobFinished(command, folder, *result), describe)
        self._updateSegmentationButtons()
        self._segmentationJob.start()

    def _onMapsJobFinished(self, command: str, folder: str, ok: bool, cancelled: bool, error: str, messages: List[str]) -> None:
        self._segmentationJob = None
        self._updateSegmentationButtons()
        label = self.ui.segmentationStatusLabel
        try:
            if not ok:
                label.text = _("Cancelled.") if cancelled else _("Failed: {error}").format(error=error)
                return
            with slicer.util.tryWithErrorDisplay(_("Could not load the results."), waitCursor=True):
                reference = self._parameterNode.t1Volume
                if command == "segment":
                    segmentation, table = self.logic.loadSegmentation(folder, reference)
                    self.ui.volumesTableView.setMRMLTableNode(table)
                    total = sum(float(table.GetCellText(row, 2)) for row in range(table.GetNumberOfRows()))
                    label.text = _("{count} structures, {total:.1f} ml in all.").format(
                        count=segmentation.GetSegmentation().GetNumberOfSegments(), total=total)
                else:
                    nodes = self.logic.loadLearnedContrasts(folder)
                    label.text = "\n".join(node.GetName() + ": " + node.GetAttribute(PROTOCOL_ATTRIBUTE) for node in nodes)
                    slicer.util.setSliceViewerLayers(background=nodes[0], fit=True)
        finally:
            self.logic.removeJobFolder(folder)


class ChildJob:
    """A ``syntheticmri`` command in a PythonSlicer process, off the GUI thread: its ``progress DONE/TOTAL WHAT`` lines
    drive ``progressBar`` and, through ``describe(done, total, what)``, ``statusLabel``; other lines are kept as
    messages. When it ends, ``onFinished(ok, cancelled, error, messages)`` runs. cancel() closes the child's stdin and
    the child stops itself within a second, dropping the file it was writing. QProcess.kill() alone would not do:
    PythonSlicer is a launcher running python-real as its own child, and kill() ends the launcher only; kill() follows
    for a hung launcher."""

    def __init__(self, argv: List[str], progressBar, statusLabel, onFinished, describe) -> None:
        batch = library("batch")
        self.progressBar, self.statusLabel, self.onFinished, self.describe = progressBar, statusLabel, onFinished, describe
        self.lines, self.messages, self.cancelled = batch.LineBuffer(), [], False
        self.process = qt.QProcess()
        # PYTHONPATH leads the child to this SyntheticMRILib: the module's folder installed, the repository checked out.
        self.process.setEnvironment([f"{name}={value}" for name, value in batch.child_environment().items()])
        self.process.connect("readyReadStandardOutput()", self._onOutput)
        self.process.connect("finished(int,QProcess::ExitStatus)", self._onFinished)
        self.process.connect("errorOccurred(QProcess::ProcessError)", lambda error: error == qt.QProcess.FailedToStart and (
            self._onFinished(-1, 1, _("could not start {program}").format(program=self.argv[0]))))  # no finished() then
        self.argv = argv

    def start(self) -> None:
        """Start the child; call it once the job is stored, since a child that fails to start finishes at once."""
        self.progressBar.maximum = 0  # busy until the first progress line: the child imports torch first
        self.statusLabel.text = _("Starting...")
        self.process.start(self.argv[0], self.argv[1:])

    def _onOutput(self, final: bool = False) -> None:
        batch = library("batch")
        lines = self.lines.feed(self.process.readAllStandardOutput()) + (self.lines.flush() if final else [])
        for line in lines:
            progress = batch.parse_progress(line)
            if progress is None:  # e.g. "sub-03: skipped: ..."
                self.messages.append(line)
                logging.info(f"SyntheticMRI: {line}")
            else:
                self.progressBar.maximum, self.progressBar.value = progress[1], progress[0]
                self.statusLabel.text = self.describe(*progress) or self.statusLabel.text

    def cancel(self) -> None:
        self.cancelled = True
        self.statusLabel.text = _("Cancelling...")
        self.process.closeWriteChannel()
        qt.QTimer.singleShot(5000, self.process.kill)  # a no-op once it has finished

    def kill(self) -> None:
        self.process.closeWriteChannel()
        self.process.kill()

    def _onFinished(self, exitCode, exitStatus, problem: Optional[str] = None) -> None:
        self._onOutput(final=True)
        stderr, bar = self.process.readAllStandardError(), self.progressBar
        bar.maximum = max(bar.maximum, 1)
        ok = problem is None and exitStatus == 0 and exitCode == 0
        if ok:
            bar.value = bar.maximum
        error = "" if ok else (problem or library("batch").error_line(stderr) or _("exit code {code}").format(code=exitCode))
        if error and not self.cancelled:
            logging.error(f"SyntheticMRI: {error}")
        self.onFinished(ok, self.cancelled, error, self.messages)


class SyntheticMRILogic(ScriptedLoadableModuleLogic):
    """Synthetic contrasts into volume nodes: a thin layer over SyntheticMRILib, usable without the GUI.
    The maps of the last inputs stay cached as tensors, so that slider moves do not convert three volumes."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.lastDuration = 0.0  # seconds of the last whole-volume synthesis
        self._cache = None  # a SyntheticMRILib.preview.MapCache, made on first use (the library imports torch)

    def getParameterNode(self) -> SyntheticMRIParameterNode:
        return SyntheticMRIParameterNode(super().getParameterNode())

    def clearCache(self) -> None:
        self._cache = None

    @staticmethod
    def missingPackages(extras: bool = False) -> List[str]:
        """What to install before SyntheticMRILib runs: torch (also if older than TORCH_MINIMUM); ``extras``: tqdm, matplotlib."""
        import importlib.metadata

        missing = [name for name in ["torch", *(EXTRA_REQUIREMENTS if extras else ())] if importlib.util.find_spec(name) is None]
        try:
            version = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            return missing
        major, minor = (int("".join(ch for ch in part if ch.isdigit()) or 0) for part in version.split(".")[:2])
        return (["torch"] if "torch" not in missing and (major, minor) < TORCH_MINIMUM else []) + missing

    def ensureDependencies(self, extras: bool = False, askConfirmation: bool = True) -> bool:
        """True when SyntheticMRILib can be imported; otherwise offers, in one dialog, to install what is missing:
        torch from the PyTorch extension (PyTorch Utils picks the build for the GPU driver), else from PyPI.
        With ``askConfirmation=False`` nothing is installed and the answer is False (no dialogs on auto-updates)."""
        missing = self.missingPackages(extras)
        if missing:
            question = _("Synthetic MRI needs these Python packages, which are not installed yet:\n\n    {packages}\n\n"
                         "Install them now? PyTorch is a download of several hundred MB and may take a few minutes.")
            if not askConfirmation or not (slicer.app.testingEnabled() or slicer.util.confirmOkCancelDisplay(
                    question.format(packages=", ".join(missing)), windowTitle=_("Install Python packages"))):
                return False
            try:
                with slicer.util.WaitCursor():
                    if "torch" in missing:
                        self._installTorch()
                    others = [EXTRA_REQUIREMENTS[name] for name in missing if name != "torch"]
                    if others:
                        slicer.util.pip_install(" ".join(others))
            except Exception as error:
                slicer.util.errorDisplay(_("Installing {packages} failed: {error}").format(packages=", ".join(missing), error=error))
                return False
            importlib.invalidate_caches()
            if self.missingPackages(extras):
                return False
        # Installed, the package sits next to this file; in a source checkout one folder up, unless pip-installed.
        checkout = Path(__file__).resolve().parent.parent
        if importlib.util.find_spec("SyntheticMRILib") is None and (checkout / "SyntheticMRILib" / "__init__.py").is_file():
            sys.path.insert(0, str(checkout))
        return True

    @staticmethod
    def _installTorch() -> None:
        requirement = ">=%d.%d" % TORCH_MINIMUM
        try:
            import PyTorchUtils
        except ImportError:  # the PyTorch extension is a declared dependency, but may have been removed
            slicer.util.pip_install("torch" + requirement)
            return
        # Our dialog was the one confirmation; PyTorch Utils is not to ask again.
        if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=requirement) is None:
            raise RuntimeError(_("PyTorch Utils did not install PyTorch"))

    @staticmethod
    def libraryLoaded() -> bool:
        """Whether SyntheticMRILib (and so torch) is imported already; nothing is imported to find out."""
        return "SyntheticMRILib.synthesis" in sys.modules

    def protocol(self, contrast: str, tr: float, te: float, ti=None, ti2=None, flip=None):
        """A validated SyntheticMRILib Protocol for a GUI contrast; parameters the sequence does not take are dropped."""
        return library("preview").protocol_from_sliders(sequenceOf(contrast), dict(tr=tr, te=te, ti=ti, ti2=ti2, flip=flip))

    def protocolFromParameters(self, parameterNode: SyntheticMRIParameterNode, overrides: Optional[Dict[str, float]] = None):
        """The protocol of the parameter node, with ``overrides`` (a dragged slider) kept physical."""
        values = {name: float(getattr(parameterNode, name)) for name in SLIDER_PARAMETERS}
        return self.protocol(parameterNode.contrast, **clampParameters({**values, **(overrides or {})}))

    def presetValues(self, name: str) -> Dict[str, float]:
        """The slider values of a preset, read from SyntheticMRILib.protocols.PRESETS."""
        return library("preview").preset_values(name)

    def presetProtocol(self, name: str):
        """The Protocol of a preset (case-insensitive); InputError naming the presets if there is none."""
        return library("protocols").preset(name).protocol

    def contrastDescription(self, contrast: str) -> str:
        """What a contrast shows, once SyntheticMRILib is loaded (an empty string before: no import for a label)."""
        if not self.libraryLoaded():
            return ""
        return library("preview").contrast_description(contrast if contrast in PRESET_SEQUENCES else sequenceOf(contrast))

    @staticmethod
    def outputName(contrast: str) -> str:
        return "Synthetic " + (contrast if contrast in PRESET_SEQUENCES else contrast[len("Custom ") :])

    def loadSample(self) -> dict:
        """The bundled sample as nodes: 't1', 't2' (ms), 'pd' (fraction) and 'segmentation' (its FreeSurfer labels)."""
        return library("slicer_bridge").load_sample()

    def _mapTensors(self, t1Node, t2Node, pdNode, units: str, device: str):
        bridge, nodes = library("slicer_bridge"), (t1Node, t2Node, pdNode)
        self._cache = self._cache or library("preview").MapCache()
        return self._cache.get((bridge.node_stamps(nodes), units), lambda: bridge.maps_from_nodes(*nodes, units=units), device)

    def synthesize(self, t1Node, t2Node, pdNode, contrast, outputNode=None, units: str = "ms", device: str = "auto",
                   fused: bool = True, name: Optional[str] = None):
        """The whole synthetic volume on the T1 map's grid, into ``outputNode`` (a new node when None); returns it.
        ``contrast`` is a preset name or a SyntheticMRILib Protocol, ``units`` those of the T1/T2 maps ("ms" or "s")."""
        # In process: the fused kernel (torch.compile) takes ~45 ms for 256^3 on 2 CPU threads, well under 1 ms on a GPU
        # (DESIGN.md), after a compile of seconds; eager torch without a compiler ~0.4 s. A worker would cost more.
        protocol = self.presetProtocol(contrast) if isinstance(contrast, str) else contrast.validate()
        if outputNode is not None and outputNode in (t1Node, t2Node, pdNode):
            raise ValueError(_("The output volume must not be one of the input maps."))
        maps, (t1, t2, pd) = self._mapTensors(t1Node, t2Node, pdNode, units, device)
        start = time.perf_counter()
        array = library("synthesis").synthesize_volume(t1, t2, pd, protocol, fused=fused).cpu().numpy()
        self.lastDuration = time.perf_counter() - start
        if name is None and isinstance(contrast, str):  # the name follows the contrast unless the user renamed the node
            name = "Synthetic " + contrast
        return library("slicer_bridge").node_from_contrast(maps.volume(array), protocol, node=outputNode, name=name)

    def mapsJob(self, command: str, t1Node, t2Node, pdNode, units: str = "ms", device: str = "auto") -> Tuple[str, List[str]]:
        """Write the maps into a new temporary folder; return it and the argv of a ``segment`` or ``contrast --learned``
        child (SyntheticMRILib.batch.maps_job) that writes its results there."""
        import tempfile

        bridge, volumes, batch = library("slicer_bridge"), library("volumes"), library("batch")
        folder = tempfile.mkdtemp(prefix="SyntheticMRI-", dir=slicer.app.temporaryPath)
        try:
            for name, node in zip(batch.MAP_NAMES, (t1Node, t2Node, pdNode)):
                volumes.write_volume(bridge.volume_from_node(node), Path(folder) / f"{name}.nrrd")
        except Exception:
            self.removeJobFolder(folder)  # a map that cannot be written leaves no folder behind
            raise
        return folder, batch.maps_job(batch.slicer_python(), command, folder, units, device)

    def loadSegmentation(self, folder: str, referenceNode=None):
        """The ``segment`` results of ``folder`` as a segmentation node (named, colored, coded segments on the
        reference's grid) and a table node of the structure volumes (ml); returns both."""
        import csv

        bridge, labels = library("slicer_bridge"), library("volumes").read_volume(Path(folder) / "seg.nrrd")
        with open(Path(folder) / "volumes.csv", newline="", encoding="utf-8") as handle:
            volumesMl = {row["structure"]: float(row["volume_ml"]) for row in csv.DictReader(handle)}
        segmentation = bridge.segmentation_from_labels(labels, referenceNode, "Subcortical segmentation")
        return segmentation, bridge.volumes_table(volumesMl, "Subcortical volumes (ml)", segmentation.GetScene())

    def loadLearnedContrasts(self, folder: str) -> list:
        """The ``contrast --learned`` results of ``folder`` as volume nodes that carry their protocols."""
        import json

        bridge, volumes, protocols = library("slicer_bridge"), library("volumes"), library("protocols")
        learned = Path(folder) / "learned"
        nodes = []
        for k, entry in enumerate(json.loads((learned / "learned.json").read_text())):
            protocol = protocols.Protocol(**{key: value for key, value in entry.items() if key != "file"})
            name = f"Learned contrast {k + 1} ({protocol.sequence.upper()} {protocol.caption()})"
            nodes.append(bridge.node_from_contrast(volumes.read_volume(learned / entry["file"]), protocol, name=name))
        return nodes

    @staticmethod
    def removeJobFolder(folder: str) -> None:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)

    def segment(self, t1Node, t2Node, pdNode, units: str = "ms", device: str = "auto"):
        """Console use: segment in a child process and wait; returns (segmentation node, volumes table node)."""
        folder, argv = self.mapsJob("segment", t1Node, t2Node, pdNode, units, device)
        try:
            code, stderr = library("batch").run_batch_process(argv)
            if code != 0:
                raise RuntimeError(library("batch").error_line(stderr) or f"segment failed (exit code {code})")
            return self.loadSegmentation(folder, t1Node)
        finally:
            self.removeJobFolder(folder)

    def updateVisibleSlices(self, t1Node, t2Node, pdNode, protocol, outputNode, units="ms", device="auto", sliceNodes=None) -> int:
        """Recompute, in place, only the voxels of ``outputNode`` (synthesized before, on the maps' grid) that the
        ``sliceNodes`` show (default: the views showing it); returns how many views. One voxel slice per view
        (a few for a view oblique to the grid), not the volume: see SyntheticMRILib.preview."""
        maps, tensors = self._mapTensors(t1Node, t2Node, pdNode, units, device)
        return library("slicer_bridge").update_visible_slices(maps, tensors, protocol, outputNode, sliceNodes)


class SyntheticMRITest(ScriptedLoadableModuleTest):
    """End to end on the bundled sample: T2-FLAIR on the input grid, CSF dark against white matter,
    the slice preview equal to the whole-volume result, and the subcortical segmentation."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SampleFlair()
        self.setUp()
        self.test_SampleSegment()

    def test_SampleSegment(self):
        import numpy as np

        logic = SyntheticMRILogic()
        self.assertTrue(logic.ensureDependencies(extras=True), "the Python packages could not be installed")
        nodes = logic.loadSample()
        self.delayDisplay("Segmenting the sample (out of process)")
        segmentation, table = logic.segment(nodes["t1"], nodes["t2"], nodes["pd"])
        self.assertEqual(segmentation.GetSegmentation().GetNumberOfSegments(), 14)
        self.assertEqual(table.GetNumberOfRows(), 14)
        bridge = library("slicer_bridge")
        found = bridge.labels_from_segmentation(segmentation, nodes["t1"]).array
        truth = bridge.labels_from_segmentation(nodes["segmentation"], nodes["t1"]).array
        dice = library("segmentation").structure_dice(found, truth)
        self.assertGreater(np.mean(list(dice.values())), 0.8, dice)

    def test_SampleFlair(self):
        import numpy as np

        logic = SyntheticMRILogic()
        self.assertTrue(logic.ensureDependencies(), "PyTorch could not be installed")
        self.delayDisplay("Loading the sample maps")
        nodes = logic.loadSample()
        maps = nodes["t1"], nodes["t2"], nodes["pd"]
        self.delayDisplay("Synthesizing T2-FLAIR")
        # Eager: the fused kernel gives the same numbers (library tests) after a compile that would only slow this down.
        flair = logic.synthesize(*maps, "T2-FLAIR", fused=False)
        self.assertEqual(flair.GetImageData().GetDimensions(), maps[0].GetImageData().GetDimensions())
        bridge, tissues = library("slicer_bridge"), library("tissues").FREESURFER_TISSUE
        ijkToRAS = np.linalg.inv(bridge.world_to_ijk(flair))
        np.testing.assert_allclose(ijkToRAS, np.linalg.inv(bridge.world_to_ijk(maps[0])), atol=1e-6)
        image = slicer.util.arrayFromVolume(flair)
        labels = bridge.labels_from_segmentation(nodes["segmentation"], maps[0]).array
        csf, wm = (np.isin(labels, [k for k, v in tissues.items() if v == t]) for t in ("csf", "cerebral_wm"))
        self.assertTrue(csf.any() and wm.any())
        self.assertLess(np.median(image[csf]), 0.25 * np.median(image[wm]), "CSF is not dark on T2-FLAIR")
        self.delayDisplay("Previewing one slice of T1w")
        expected = slicer.util.arrayFromVolume(logic.synthesize(*maps, "T1w", fused=False, name="T1w reference")).copy()
        before, k = image.copy(), image.shape[0] // 2
        sliceToRAS = np.eye(4)  # a view through the middle k slice, whatever the grid's orientation
        sliceToRAS[:3, :3] = ijkToRAS[:3, :3] / np.linalg.norm(ijkToRAS[:3, :3], axis=0)
        sliceToRAS[:, 3] = ijkToRAS @ np.array([(image.shape[2] - 1) / 2.0, (image.shape[1] - 1) / 2.0, k, 1.0])
        sliceNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceNode")
        slicer.util.updateVTKMatrixFromArray(sliceNode.GetSliceToRAS(), sliceToRAS)
        self.assertEqual(logic.updateVisibleSlices(*maps, logic.presetProtocol("T1w"), flair, sliceNodes=[sliceNode]), 1)
        after = slicer.util.arrayFromVolume(flair)
        np.testing.assert_allclose(after[k], expected[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(np.delete(after, k, axis=0), np.delete(before, k, axis=0))
        self.delayDisplay("Test passed")
