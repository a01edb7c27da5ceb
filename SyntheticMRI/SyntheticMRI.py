"""SyntheticMRI: synthetic MR contrasts from quantitative T1, T2 and PD maps (3D Slicer module).

This file is GUI wiring plus a thin logic over ``SyntheticMRILib``, where the
physics, the map checks and the geometry handling live. Importing it never
imports torch or SyntheticMRILib: they load on first use, after PyTorch has
been installed with the user's consent.

Console use (the batch API)::

    from SyntheticMRI import SyntheticMRILogic
    logic = SyntheticMRILogic()
    logic.ensureDependencies()
    flair = logic.synthesize(t1Node, t2Node, pdNode, "T2-FLAIR")        # a preset name
    custom = logic.synthesize(t1Node, t2Node, pdNode, logic.protocol("Custom inversion recovery", tr=6000, te=80, ti=1800))

Long work (segmentation, training) will run out of process via PythonSlicer; synthesis is sub-second.
"""
import importlib
import importlib.util
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Dict, List, Optional, Sequence, Tuple

import qt
import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#
# What the GUI offers. The preset names (with the sequence each uses), the sequences (with the
# parameters besides TR and TE that each takes), the units and the devices are copies of
# SyntheticMRILib.protocols.PRESETS / SEQUENCES, SyntheticMRILib.maps.UNITS and
# SyntheticMRILib.devices.DEVICES: the library imports torch, and the GUI has to draw before torch
# is installed. Preset *values* are always read from the library. Testing/test_module_static.py
# fails when a copy drifts from its source.
#
PRESET_SEQUENCES = {
    "T1w": "se",
    "T2w": "se",
    "PDw": "se",
    "T2-FLAIR": "ir",
    "T1-FLAIR": "ir",
    "STIR": "ir",
    "PSIR": "psir",
    "DIR": "dir",
    "WM-nulled": "ir",
    "GM-nulled": "ir",
    "dSIR": "dsir",
    "T1w-GRE": "gre",
}
CUSTOM_SEQUENCES = {
    "Custom spin echo": "se",
    "Custom inversion recovery": "ir",
    "Custom phase-sensitive IR": "psir",
    "Custom double IR": "dir",
    "Custom gradient echo": "gre",
    "Custom dSIR": "dsir",
}
SEQUENCE_PARAMETERS = {
    "se": (),
    "ir": ("ti",),
    "psir": ("ti",),
    "dir": ("ti", "ti2"),
    "gre": ("flip",),
    "dsir": ("ti", "ti2"),
}
CONTRASTS = tuple(PRESET_SEQUENCES) + tuple(CUSTOM_SEQUENCES)
UNITS = ("ms", "s")
DEVICES = ("auto", "cpu", "cuda")
# Requirements as in pyproject.toml (checked by the static tests). numpy and SimpleITK ship with Slicer;
# tqdm and matplotlib serve the library's extras (progress bars, figures) and are installed on demand.
TORCH_MINIMUM = (2, 1)
EXTRA_REQUIREMENTS = {"tqdm": "tqdm>=4.60", "matplotlib": "matplotlib>=3.5"}

# Slider ranges: times in ms, flip angle in degrees. On top of them parameterBounds() keeps the
# physical order TE < TR, TI < TR and TI2 < TI, strict by GAP_MS (the minima leave room for it).
# Spoiled gradient echo is used below 90 degrees; Protocol itself accepts up to 180 from the console.
SLIDER_PARAMETERS = ("tr", "te", "ti", "ti2", "flip")
TR_RANGE = (5.0, 15000.0)
TE_RANGE = (0.0, 1000.0)
TI_RANGE = (2.0, 10000.0)
TI2_RANGE = (1.0, 5000.0)
FLIP_RANGE = (1.0, 90.0)
GAP_MS = 1.0

# Node attributes written on a synthesized volume: its protocol (provenance, and the mark that the
# node holds a synthetic image that live updates may overwrite) and whether the module named it.
PROTOCOL_ATTRIBUTE = "SyntheticMRI.Protocol"
AUTO_NAME_ATTRIBUTE = "SyntheticMRI.AutoName"


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

    def clip(name: str, bounds: Dict[str, Tuple[float, float]]) -> None:
        low, high = bounds[name]
        clamped[name] = min(max(float(clamped[name]), low), high)

    clip("tr", parameterBounds(TR_RANGE[1], TI_RANGE[1]))
    clip("ti", parameterBounds(clamped["tr"], TI_RANGE[1]))
    bounds = parameterBounds(clamped["tr"], clamped["ti"])
    for name in ("te", "ti2", "flip"):
        clip(name, bounds)
    return clamped


def planeVoxels(sliceToRAS, rasToIJK, shape: Sequence[int]):
    """The voxels a slice view's plane shows: ``(array axis, indices)``, or None if it misses the volume.

    ``sliceToRAS`` is the view's 4x4 SliceToRAS matrix, ``rasToIJK`` the volume's 4x4 world-to-IJK
    matrix and ``shape`` its array shape, indexed (k, j, i) as slicer.util.arrayFromVolume gives it.
    ``indices`` has shape ``(width, *other two dimensions)``: for each column of voxels along the array
    axis most normal to the plane, the band of indices the view interpolates from (trilinear, so the
    neighbours on either side of the crossing; nearest neighbour is among them). A view aligned with
    the grid through voxel centres gives a band of width 1, one voxel slice; an oblique view (Slicer's
    default views on an oblique acquisition) gives a few voxels per column.
    """
    import numpy as np

    sliceToRAS = np.asarray(sliceToRAS, dtype=float)
    rasToIJK = np.asarray(rasToIJK, dtype=float)
    point = (rasToIJK @ sliceToRAS[:, 3])[:3]
    normal = np.linalg.inv(rasToIJK[:3, :3]).T @ sliceToRAS[:3, 2]  # normals map with the inverse transpose
    axis = int(np.argmax(np.abs(normal)))  # IJK axis; IJK axis a is array axis 2 - a
    arrayAxis = 2 - axis
    rest = [r for r in range(3) if r != arrayAxis]
    columns = np.meshgrid(*(np.arange(shape[r]) for r in rest), indexing="ij")
    # Where the plane crosses each column, and how far that moves within one voxel of the column.
    crossing = point[axis] - sum(normal[2 - r] * (c - point[2 - r]) for r, c in zip(rest, columns)) / normal[axis]
    reach = sum(abs(normal[2 - r] / normal[axis]) for r in rest)
    low = np.floor(crossing - reach + 1e-6).astype(int)
    high = np.ceil(crossing + reach - 1e-6).astype(int)
    size = shape[arrayAxis]
    if (high < 0).all() or (low > size - 1).all():
        return None
    low, high = np.clip(low, 0, size - 1), np.clip(high, 0, size - 1)
    width = int((high - low).max()) + 1
    indices = np.minimum(low[np.newaxis] + np.arange(width)[:, np.newaxis, np.newaxis], high[np.newaxis])
    return arrayAxis, indices


#
# SyntheticMRI
#


class SyntheticMRI(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Synthetic MRI")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
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


#
# SyntheticMRIParameterNode
#


@parameterNodeWrapper
class SyntheticMRIParameterNode:
    """The module's state, saved with the scene. Times in ms, flip angle in degrees.

    The default values are the T2-FLAIR preset (checked against the library by the static tests).
    ``ti2`` is the shorter of the two inversion times of double IR and dSIR.
    """

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


#
# SyntheticMRIWidget
#


class SyntheticMRIWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._shownContrast = None  # the contrast the widgets were last laid out for
        self._appliedPreset = None  # (name, values) of the preset last applied, to notice edits to it
        self._dragValues = {}  # slider values while a slider is dragged, not yet in the parameter node
        self._lastUpdateKey = None  # what the output volume was last computed from
        self._resetWindowLevel = False  # a new contrast was picked: window the next result afresh
        self._handlingModified = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SyntheticMRI.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = SyntheticMRILogic()
        self._sliders = {
            "tr": self.ui.trSlider,
            "te": self.ui.teSlider,
            "ti": self.ui.tiSlider,
            "ti2": self.ui.ti2Slider,
            "flip": self.ui.flipSlider,
        }
        self._sliderLabels = {"ti": self.ui.tiLabel, "ti2": self.ui.ti2Label, "flip": self.ui.flipLabel}

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        # The sliders do not track (see the .ui): valueIsChanging fires while one is dragged and drives
        # the preview of the visible slices; valueChanged fires on release, reaches the parameter node
        # through the parameterNodeWrapper binding, and the whole volume follows.
        for name, slider in self._sliders.items():
            slider.connect("valueIsChanging(double)", lambda value, name=name: self.onSliderMoving(name, value))
        self.ui.loadSampleButton.connect("clicked(bool)", self.onLoadSample)
        self.ui.applyButton.connect("clicked(bool)", self.onApply)

        # Zero-interval single-shot timers coalesce a burst of events into one computation.
        self._previewTimer = qt.QTimer()
        self._previewTimer.setSingleShot(True)
        self._previewTimer.setInterval(0)
        self._previewTimer.connect("timeout()", self._runPreview)
        self._updateTimer = qt.QTimer()
        self._updateTimer.setSingleShot(True)
        self._updateTimer.setInterval(0)
        self._updateTimer.connect("timeout()", self._runAutoUpdate)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._previewTimer.stop()
        self._updateTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self._removeParameterNodeObservers()

    def _removeParameterNodeObservers(self) -> None:
        self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._openSliderRanges)
        self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        self.logic.clearCache()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        # Inputs are not guessed: three maps picked at random are worse than three empty selectors.
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, parameterNode: Optional[SyntheticMRIParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._removeParameterNodeObservers()
        self._parameterNode = parameterNode
        self._shownContrast = None
        self._appliedPreset = None
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            # Two observers around the wrapper's own (priority 0: it refreshes its cached values and
            # writes them into the widgets). Before it, the sliders open to their full ranges, so that
            # no new value is clipped by the bounds of the old ones; after it, the module reacts to the
            # new values and narrows the sliders to their physical bounds.
            modified = vtk.vtkCommand.ModifiedEvent
            self.addObserver(self._parameterNode, modified, self._openSliderRanges, priority=1.0)
            self.addObserver(self._parameterNode, modified, self._onParameterNodeModified, priority=-1.0)
            self._onParameterNodeModified()

    # --- parameter node -> GUI ------------------------------------------------------------------

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        if self._parameterNode is None or self._handlingModified:
            return
        self._handlingModified = True
        try:
            parameters = self._parameterNode
            if parameters.contrast != self._shownContrast:
                chosenByUser = self._shownContrast is not None  # None: the node was just (re)connected
                self._shownContrast = parameters.contrast
                if chosenByUser:
                    self._resetWindowLevel = True
                    if parameters.contrast in PRESET_SEQUENCES:
                        self._applyPreset(parameters.contrast)
            self._enforceBounds()
            self._switchToCustomIfPresetEdited()
            self._layOutContrast()
            self._checkCanApply()
        finally:
            self._handlingModified = False
        if parameters.autoUpdate and self._outputIsSynthetic():
            self._updateTimer.start()

    def _currentValues(self) -> Dict[str, float]:
        return {name: float(getattr(self._parameterNode, name)) for name in SLIDER_PARAMETERS}

    def _openSliderRanges(self, caller=None, event=None) -> None:
        self._setSliderRanges({"tr": TR_RANGE[1], "ti": TI_RANGE[1]})

    def _setSliderRanges(self, values: Dict[str, float]) -> None:
        """Slider ranges for the TR and TI in ``values``; signals blocked, so that nothing writes back."""
        for name, (low, high) in parameterBounds(values["tr"], values["ti"]).items():
            slider = self._sliders[name]
            wasBlocked = slider.blockSignals(True)
            slider.minimum = low
            slider.maximum = high
            slider.blockSignals(wasBlocked)

    def _writeValues(self, values: Dict[str, float]) -> None:
        changed = {name: value for name, value in values.items() if getattr(self._parameterNode, name) != value}
        with slicer.util.NodeModify(self._parameterNode):
            for name, value in changed.items():
                setattr(self._parameterNode, name, value)

    def _enforceBounds(self) -> None:
        """TE < TR, TI < TR, TI2 < TI: when TR (or TI) moved, the others follow, and the sliders show the bounds."""
        values = clampParameters(self._currentValues())
        self._writeValues(values)
        self._setSliderRanges(values)

    def _applyPreset(self, name: str) -> None:
        if not self.logic.ensureDependencies():
            return
        presetValues = self.logic.presetValues(name)
        values = self._currentValues()
        values.update(presetValues)
        self._writeValues(clampParameters(values))  # parameters the preset leaves alone stay physical too
        self._appliedPreset = (name, presetValues)

    def _switchToCustomIfPresetEdited(self) -> None:
        """A preset whose values were changed is no longer that preset: say so in the contrast list."""
        if self._appliedPreset is None:
            return
        name, presetValues = self._appliedPreset
        parameters = self._parameterNode
        if parameters.contrast != name:
            self._appliedPreset = None
        elif any(abs(getattr(parameters, key) - value) > 1e-6 for key, value in presetValues.items()):
            self._appliedPreset = None
            self._shownContrast = customContrastOf(PRESET_SEQUENCES[name])
            parameters.contrast = self._shownContrast

    def _layOutContrast(self) -> None:
        """Show the sliders the sequence uses, and what the contrast shows."""
        contrast = self._parameterNode.contrast
        uses = SEQUENCE_PARAMETERS[sequenceOf(contrast)]
        for name, label in self._sliderLabels.items():
            self._sliders[name].setVisible(name in uses)
            label.setVisible(name in uses)
        self.ui.tiLabel.text = _("TI1 (longer):") if "ti2" in uses else _("TI:")
        self.ui.contrastInfoLabel.text = self.logic.contrastDescription(contrast)

    def _inputProblem(self) -> Optional[str]:
        parameters = self._parameterNode
        if parameters is None:
            return _("No parameter node.")
        inputs = (parameters.t1Volume, parameters.t2Volume, parameters.pdVolume)
        if not all(inputs):
            return _("Select the T1, T2 and PD maps (or load the sample).")
        if parameters.outputVolume is not None and parameters.outputVolume in inputs:
            return _("The output volume must not be one of the input maps.")
        return None

    def _checkCanApply(self) -> None:
        problem = self._inputProblem()
        self.ui.applyButton.enabled = problem is None
        self.ui.applyButton.toolTip = problem or _("Synthesize the whole volume with the current contrast.")

    def _outputIsSynthetic(self) -> bool:
        output = self._parameterNode.outputVolume if self._parameterNode else None
        return bool(output is not None and output.GetImageData() and output.GetAttribute(PROTOCOL_ATTRIBUTE))

    # --- user actions ---------------------------------------------------------------------------

    def onLoadSample(self) -> None:
        if not self.logic.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay(_("Could not load the sample maps."), waitCursor=True):
            nodes = self.logic.loadSample()
            with slicer.util.NodeModify(self._parameterNode):
                self._parameterNode.t1Volume = nodes["t1"]
                self._parameterNode.t2Volume = nodes["t2"]
                self._parameterNode.pdVolume = nodes["pd"]
                self._parameterNode.units = "ms"
        self._synthesizeVolume(interactive=True)

    def onApply(self) -> None:
        self._synthesizeVolume(interactive=True)

    def onSliderMoving(self, name: str, value: float) -> None:
        self._dragValues[name] = value
        self._previewTimer.start()

    # --- computation ----------------------------------------------------------------------------

    def _runAutoUpdate(self) -> None:
        self._synthesizeVolume(interactive=False)

    def _synthesizeVolume(self, interactive: bool) -> None:
        """The whole volume, in process (see SyntheticMRILogic.synthesize for why that is fine)."""
        parameters = self._parameterNode
        if parameters is None or self._inputProblem():
            return
        if not self.logic.ensureDependencies(askConfirmation=interactive):
            self.ui.statusLabel.text = _("PyTorch is needed: press Synthesize to install it.")
            return
        try:
            with slicer.util.WaitCursor():
                protocol = self.logic.protocolFromParameters(parameters)
                key = self._updateKey(protocol)
                if not interactive and key == self._lastUpdateKey:
                    return
                created = parameters.outputVolume is None
                output = self.logic.synthesize(
                    parameters.t1Volume,
                    parameters.t2Volume,
                    parameters.pdVolume,
                    protocol,
                    outputNode=parameters.outputVolume,
                    units=parameters.units,
                    device=parameters.device,
                    fused=parameters.fused,
                    name=self.logic.outputName(parameters.contrast),
                )
        except Exception as error:  # shown to the user; InputError (a ValueError) messages are written for them
            if isinstance(error, ValueError):
                logging.error(f"SyntheticMRI: {error}")
            else:
                logging.exception("SyntheticMRI: synthesis failed")
            self.ui.statusLabel.text = _("Failed: {error}").format(error=error)
            if interactive:
                slicer.util.errorDisplay(_("Synthesis failed: {error}").format(error=error))
            return
        if created:
            parameters.outputVolume = output
        elif self._resetWindowLevel and output.GetDisplayNode() is not None:
            # A new contrast has a new intensity range: let Slicer window it once, then keep that
            # window while sliders move, so that the view shows the signal change.
            output.GetDisplayNode().AutoWindowLevelOn()
            output.GetDisplayNode().AutoWindowLevelOff()
        self._resetWindowLevel = False
        self._lastUpdateKey = self._updateKey(protocol)
        if created or interactive:
            slicer.util.setSliceViewerLayers(background=output, fit=created)
        self.ui.statusLabel.text = _("{contrast}, {caption}: {milliseconds:.0f} ms").format(
            contrast=parameters.contrast, caption=protocol.caption(), milliseconds=1000.0 * self.logic.lastDuration
        )

    def _updateKey(self, protocol) -> tuple:
        parameters = self._parameterNode
        inputs = (parameters.t1Volume, parameters.t2Volume, parameters.pdVolume)
        output = parameters.outputVolume.GetID() if parameters.outputVolume else None
        return (SyntheticMRILogic.nodeStamps(inputs), parameters.units, parameters.device, protocol, output)

    def _runPreview(self) -> None:
        """Recompute only the slices the Red, Yellow and Green views show, with the dragged value."""
        values, self._dragValues = self._dragValues, {}
        parameters = self._parameterNode
        if not values or parameters is None or not parameters.autoUpdate or self._inputProblem():
            return
        if not self._outputIsSynthetic() or not self.logic.libraryLoaded():
            return  # nothing to preview into yet: the release computes the whole volume
        try:
            protocol = self.logic.protocolFromParameters(parameters, overrides=values)
            self.logic.updateVisibleSlices(
                parameters.t1Volume,
                parameters.t2Volume,
                parameters.pdVolume,
                protocol,
                parameters.outputVolume,
                units=parameters.units,
                device=parameters.device,
            )
        except Exception as error:  # a preview never interrupts a drag with a dialog
            logging.debug(f"SyntheticMRI: preview skipped ({error})")


#
# SyntheticMRILogic
#


class SyntheticMRILogic(ScriptedLoadableModuleLogic):
    """Synthetic contrasts into volume nodes: a thin layer over SyntheticMRILib, usable without the GUI.

    The maps of the last inputs are cached as tensors (keyed by node IDs and modification times), so
    that slider moves do not convert three volumes each time.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.lastDuration = 0.0  # seconds of the last whole-volume synthesis
        self.clearCache()

    def getParameterNode(self) -> SyntheticMRIParameterNode:
        return SyntheticMRIParameterNode(super().getParameterNode())

    def clearCache(self) -> None:
        self._mapsKey = None
        self._maps = None
        self._tensors = None

    # --- dependencies ---------------------------------------------------------------------------

    @staticmethod
    def _torchTooOld() -> bool:
        import importlib.metadata

        try:
            version = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            return False
        major, minor = (int("".join(ch for ch in part if ch.isdigit()) or 0) for part in version.split(".")[:2])
        return (major, minor) < TORCH_MINIMUM

    def missingPackages(self, extras: bool = False) -> List[str]:
        """The packages to install before SyntheticMRILib can run (torch; with ``extras``, tqdm and matplotlib)."""
        names = ["torch"] + (list(EXTRA_REQUIREMENTS) if extras else [])
        missing = [name for name in names if importlib.util.find_spec(name) is None]
        if "torch" not in missing and self._torchTooOld():
            missing.insert(0, "torch")
        return missing

    def ensureDependencies(self, extras: bool = False, askConfirmation: bool = True) -> bool:
        """True when SyntheticMRILib can be imported; otherwise offers, in one dialog, to install what is missing.

        torch comes from the PyTorch extension (PyTorch Utils) when present, which picks the build that
        fits the GPU driver; otherwise from PyPI. With ``askConfirmation=False`` nothing is installed and
        the answer is False (automatic updates must not open dialogs).
        """
        missing = self.missingPackages(extras)
        if missing:
            if not askConfirmation:
                return False
            if not slicer.app.testingEnabled() and not slicer.util.confirmOkCancelDisplay(
                _(
                    "Synthetic MRI needs these Python packages, which are not installed yet:\n\n    {packages}\n\n"
                    "Install them now? PyTorch is a download of several hundred MB and may take a few minutes."
                ).format(packages=", ".join(missing)),
                windowTitle=_("Install Python packages"),
            ):
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
        self._addSourceTreeToPath()
        return True

    def _installTorch(self) -> None:
        requirement = ">=%d.%d" % TORCH_MINIMUM
        try:
            import PyTorchUtils
        except ImportError:  # the PyTorch extension is a declared dependency, but may have been removed
            slicer.util.pip_install("torch" + requirement)
            return
        # Our dialog above was the one confirmation; PyTorch Utils is not to ask again.
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=requirement)
        if torch is None:
            raise RuntimeError(_("PyTorch Utils did not install PyTorch"))

    @staticmethod
    def _addSourceTreeToPath() -> None:
        """Make SyntheticMRILib importable when the module runs from a source checkout.

        Installed, the package sits next to this file; in a checkout (module path .../SyntheticMRI) it is
        one folder up, unless it was pip-installed into Slicer's Python.
        """
        if importlib.util.find_spec("SyntheticMRILib") is not None:
            return
        checkout = Path(__file__).resolve().parent.parent
        if (checkout / "SyntheticMRILib" / "__init__.py").is_file():
            sys.path.insert(0, str(checkout))

    @staticmethod
    def libraryLoaded() -> bool:
        """Whether SyntheticMRILib (and so torch) is imported already; nothing is imported to find out."""
        return "SyntheticMRILib.synthesis" in sys.modules

    # --- contrasts and protocols ----------------------------------------------------------------

    def protocol(self, contrast: str, tr: float, te: float, ti=None, ti2=None, flip=None):
        """A validated SyntheticMRILib Protocol for a GUI contrast; parameters the sequence does not take are dropped."""
        from SyntheticMRILib.protocols import Protocol

        sequence = sequenceOf(contrast)
        uses = SEQUENCE_PARAMETERS[sequence]
        optional = {"ti": ti, "ti2": ti2, "flip": flip}
        kept = {name: (float(value) if name in uses and value is not None else None) for name, value in optional.items()}
        return Protocol(sequence, float(tr), float(te), **kept).validate()

    def protocolFromParameters(self, parameterNode: SyntheticMRIParameterNode, overrides: Optional[Dict[str, float]] = None):
        """The protocol of the parameter node, with ``overrides`` (a dragged slider) kept physical."""
        values = {name: float(getattr(parameterNode, name)) for name in SLIDER_PARAMETERS}
        values.update(overrides or {})
        return self.protocol(parameterNode.contrast, **clampParameters(values))

    def presetValues(self, name: str) -> Dict[str, float]:
        """The slider values of a preset, read from SyntheticMRILib.protocols.PRESETS."""
        from SyntheticMRILib.protocols import PRESETS

        protocol = PRESETS[name].protocol
        values = {key: getattr(protocol, key) for key in SLIDER_PARAMETERS}
        return {key: float(value) for key, value in values.items() if value is not None}

    def presetProtocol(self, name: str):
        """The Protocol of a preset (case-insensitive); InputError naming the presets if there is none."""
        from SyntheticMRILib.protocols import preset

        return preset(name).protocol

    def contrastDescription(self, contrast: str) -> str:
        """What a contrast shows, once SyntheticMRILib is loaded (an empty string before: no import for a label)."""
        if not self.libraryLoaded():
            return ""
        from SyntheticMRILib.protocols import PRESETS, SEQUENCES

        if contrast in PRESETS:
            text = f"{PRESETS[contrast].shows}. {PRESETS[contrast].source}."
        else:
            text = SEQUENCES[sequenceOf(contrast)].description + "."
        return text[:1].upper() + text[1:]

    @staticmethod
    def outputName(contrast: str) -> str:
        return "Synthetic " + (contrast if contrast in PRESET_SEQUENCES else contrast[len("Custom ") :])

    # --- maps -----------------------------------------------------------------------------------

    @staticmethod
    def nodeStamps(nodes) -> tuple:
        """Identity and modification times of volume nodes: a cache key that changes when they do."""
        return tuple(
            (node.GetID(), node.GetMTime(), node.GetImageData().GetMTime() if node.GetImageData() else 0)
            for node in nodes
        )

    def _mapTensors(self, t1Node, t2Node, pdNode, units: str, device: str):
        from SyntheticMRILib import slicer_bridge
        from SyntheticMRILib.devices import pick_device

        key = (self.nodeStamps((t1Node, t2Node, pdNode)), units, device)
        if key != self._mapsKey:
            self.clearCache()
            maps = slicer_bridge.maps_from_nodes(t1Node, t2Node, pdNode, units=units)
            for note in maps.notes:
                logging.info(f"SyntheticMRI: {note}")
            self._tensors = maps.tensors(pick_device(device))
            self._maps = maps
            self._mapsKey = key
        return self._maps, self._tensors

    def loadSample(self) -> dict:
        """The bundled sample as nodes: 't1', 't2' (ms), 'pd' (fraction) and its FreeSurfer labels."""
        from SyntheticMRILib import slicer_bridge

        return slicer_bridge.load_sample()

    # --- synthesis ------------------------------------------------------------------------------

    def synthesize(
        self,
        t1Node,
        t2Node,
        pdNode,
        contrast,
        outputNode=None,
        units: str = "ms",
        device: str = "auto",
        fused: bool = True,
        name: Optional[str] = None,
    ):
        """The whole synthetic volume on the T1 map's grid, into ``outputNode`` (a new node when None).

        ``contrast`` is a preset name (SyntheticMRILib.protocols.PRESETS) or a SyntheticMRILib Protocol;
        ``units`` those of the T1/T2 maps ("ms" or "s"). Returns the output node.
        """
        # In process, on the GUI thread: the fused kernel (torch.compile) synthesizes a 256^3 volume in
        # about 45 ms on 2 CPU threads and well under 1 ms on a GPU (DESIGN.md), so a worker process
        # would cost more than it saves. The first call per sequence and grid compiles for a few
        # seconds; where no compiler exists SyntheticMRILib falls back to eager torch (~0.4 s).
        from SyntheticMRILib import slicer_bridge
        from SyntheticMRILib.synthesis import synthesize_volume

        protocol = self.presetProtocol(contrast) if isinstance(contrast, str) else contrast.validate()
        if outputNode is not None and outputNode in (t1Node, t2Node, pdNode):
            raise ValueError(_("The output volume must not be one of the input maps."))
        maps, (t1, t2, pd) = self._mapTensors(t1Node, t2Node, pdNode, units, device)
        start = time.perf_counter()
        array = synthesize_volume(t1, t2, pd, protocol, fused=fused).cpu().numpy()
        self.lastDuration = time.perf_counter() - start
        # A node this module named (or an empty one, fresh from "Create new volume") follows the contrast,
        # "Synthetic T1w" -> "Synthetic STIR"; a node the user named keeps its name.
        autoName = (
            outputNode is None
            or outputNode.GetImageData() is None
            or outputNode.GetAttribute(AUTO_NAME_ATTRIBUTE) == "1"
        )
        if not autoName:
            name = outputNode.GetName()
        elif name is None:
            name = "Synthetic " + (contrast if isinstance(contrast, str) else protocol.sequence.upper())
        outputNode = slicer_bridge.node_from_volume(maps.volume(array), name, node=outputNode)
        outputNode.SetAttribute(AUTO_NAME_ATTRIBUTE, "1" if autoName else "0")
        outputNode.SetAttribute(PROTOCOL_ATTRIBUTE, f"{protocol.sequence} {protocol.caption()}")
        return outputNode

    def updateVisibleSlices(self, t1Node, t2Node, pdNode, protocol, outputNode, units="ms", device="auto", sliceNodes=None) -> int:
        """Recompute, in place, only the voxels of ``outputNode`` that slice views show; returns how many views.

        ``outputNode`` must already hold a synthesized volume on the maps' grid (see synthesize).
        ``sliceNodes`` default to the Red, Yellow and Green views that display ``outputNode``. Each view
        costs one voxel slice (a few for a view oblique to the grid), not the volume.
        """
        import numpy as np
        import torch
        from SyntheticMRILib.synthesis import synthesize

        maps, (t1, t2, pd) = self._mapTensors(t1Node, t2Node, pdNode, units, device)
        array = slicer.util.arrayFromVolume(outputNode)
        worldToIJK = self._worldToIJK(outputNode)
        onGrid = (
            worldToIJK is not None
            and array.shape == maps.t1.shape
            and np.allclose(np.linalg.inv(worldToIJK), maps.grid.ijk_to_ras(), atol=1e-4)
        )
        if not onGrid:  # not (or no longer) the maps' grid: only a whole-volume update can fix that
            return 0
        if sliceNodes is None:
            sliceNodes = self._sliceNodesShowing(outputNode)
        updated = 0
        with torch.no_grad():
            for sliceNode in sliceNodes:
                found = planeVoxels(slicer.util.arrayFromVTKMatrix(sliceNode.GetSliceToRAS()), worldToIJK, array.shape)
                if found is None:
                    continue
                axis, indices = found
                index = torch.as_tensor(indices, device=t1.device)
                voxels = [torch.gather(m.movedim(axis, 0), 0, index) for m in (t1, t2, pd)]
                image = synthesize(*voxels, protocol).cpu().numpy()
                np.put_along_axis(np.moveaxis(array, axis, 0), indices, image, axis=0)  # a view: writes the node
                updated += 1
        if updated:
            slicer.util.arrayFromVolumeModified(outputNode)
        return updated

    @staticmethod
    def _worldToIJK(volumeNode):
        """The 4x4 world-to-IJK matrix of a volume node (through a linear parent transform), or None."""
        rasToIJK = vtk.vtkMatrix4x4()
        volumeNode.GetRASToIJKMatrix(rasToIJK)
        matrix = slicer.util.arrayFromVTKMatrix(rasToIJK)
        transformNode = volumeNode.GetParentTransformNode()
        if transformNode is not None:
            if not transformNode.IsTransformToWorldLinear():
                return None
            worldToLocal = vtk.vtkMatrix4x4()
            transformNode.GetMatrixTransformFromWorld(worldToLocal)
            matrix = matrix @ slicer.util.arrayFromVTKMatrix(worldToLocal)
        return matrix

    @staticmethod
    def _sliceNodesShowing(volumeNode) -> list:
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:  # no main window (e.g. --no-main-window tests)
            return []
        sliceNodes = []
        for viewName in ("Red", "Yellow", "Green"):
            sliceWidget = layoutManager.sliceWidget(viewName)
            if sliceWidget is None or not sliceWidget.isVisible():
                continue
            sliceLogic = sliceWidget.sliceLogic()
            composite = sliceLogic.GetSliceCompositeNode()
            if volumeNode.GetID() in (composite.GetBackgroundVolumeID(), composite.GetForegroundVolumeID()):
                sliceNodes.append(sliceLogic.GetSliceNode())
        return sliceNodes


#
# SyntheticMRITest
#


class SyntheticMRITest(ScriptedLoadableModuleTest):
    """End to end on the bundled sample: T2-FLAIR on the input grid, CSF dark against white matter,
    and the slice preview equal to the whole-volume result."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SampleFlair()

    def test_SampleFlair(self):
        import numpy as np

        logic = SyntheticMRILogic()
        self.assertTrue(logic.ensureDependencies(), "PyTorch could not be installed")
        self.delayDisplay("Loading the sample maps")
        nodes = logic.loadSample()

        self.delayDisplay("Synthesizing T2-FLAIR")
        # Eager synthesis: the fused kernel gives the same numbers (library tests) after a compile
        # that would only slow this test down.
        flair = logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "T2-FLAIR", fused=False)
        self.assertEqual(flair.GetImageData().GetDimensions(), nodes["t1"].GetImageData().GetDimensions())
        flairToRAS, t1ToRAS = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        flair.GetIJKToRASMatrix(flairToRAS)
        nodes["t1"].GetIJKToRASMatrix(t1ToRAS)
        np.testing.assert_allclose(
            slicer.util.arrayFromVTKMatrix(flairToRAS), slicer.util.arrayFromVTKMatrix(t1ToRAS), atol=1e-6
        )

        image = slicer.util.arrayFromVolume(flair)
        csf, wm = self._csfAndWhiteMatter(nodes)
        self.assertTrue(csf.any() and wm.any())
        self.assertLess(np.median(image[csf]), 0.25 * np.median(image[wm]), "CSF is not dark on T2-FLAIR")

        self.delayDisplay("Previewing one slice of T1w")
        expected = slicer.util.arrayFromVolume(
            logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "T1w", fused=False, name="T1w reference")
        ).copy()
        before = image.copy()
        sliceNode = self._sliceNodeThroughCenter(flair)
        count = logic.updateVisibleSlices(
            nodes["t1"], nodes["t2"], nodes["pd"], logic.presetProtocol("T1w"), flair, sliceNodes=[sliceNode]
        )
        self.assertEqual(count, 1)
        after = slicer.util.arrayFromVolume(flair)
        k = after.shape[0] // 2
        np.testing.assert_allclose(after[k], expected[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(np.delete(after, k, axis=0), np.delete(before, k, axis=0))
        self.delayDisplay("Test passed")

    @staticmethod
    def _csfAndWhiteMatter(nodes):
        """CSF and cerebral white matter masks from the sample's FreeSurfer labels."""
        import numpy as np
        from SyntheticMRILib import slicer_bridge
        from SyntheticMRILib.tissues import FREESURFER_TISSUE

        if "segmentation" in nodes:
            labels = slicer_bridge.labels_from_segmentation(nodes["segmentation"], nodes["t1"]).array
        else:
            labels = slicer.util.arrayFromVolume(nodes["labels"])
        ids = {tissue: [label for label, name in FREESURFER_TISSUE.items() if name == tissue] for tissue in ("csf", "cerebral_wm")}
        return np.isin(labels, ids["csf"]), np.isin(labels, ids["cerebral_wm"])

    @staticmethod
    def _sliceNodeThroughCenter(volumeNode):
        """A slice node showing the middle k slice of ``volumeNode``, whatever its orientation."""
        import numpy as np

        ijkToRAS = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRAS)
        matrix = slicer.util.arrayFromVTKMatrix(ijkToRAS)
        i, j, k = volumeNode.GetImageData().GetDimensions()
        sliceToRAS = np.eye(4)
        sliceToRAS[:3, :3] = matrix[:3, :3] / np.linalg.norm(matrix[:3, :3], axis=0)
        sliceToRAS[:, 3] = matrix @ np.array([(i - 1) / 2.0, (j - 1) / 2.0, k // 2, 1.0])
        sliceNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceNode")
        slicer.util.updateVTKMatrixFromArray(sliceNode.GetSliceToRAS(), sliceToRAS)
        return sliceNode
