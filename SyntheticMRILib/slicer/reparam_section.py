"""The "Re-parameterize a scan" section of the module's widget, as a mixin of
:class:`SyntheticMRILib.slicer.widget.SyntheticMRIWidget`.

A scan (a volume, with the sequence and TR/TE/TI it was acquired with) is shown as another protocol: the physics
engine predicts the scan's T1/T2/PD maps once, in a PythonSlicer process (Predict maps), and the target's sliders then
run the physics layer on them in process (the visible slices while a slider is dragged, the whole volume on release);
the direct engine's network makes the target image in a PythonSlicer process (Apply).

:class:`ReparamSection` has no ``__init__``: the widget calls :meth:`ReparamSection._setUpReparam` from its own, and
the section relies on what the widget holds:

* ``self.ui`` (the .ui's named widgets, the ``reparam*`` ones among them) and ``self.logic``
  (a :class:`SyntheticMRILib.slicer.logic.SyntheticMRILogic`);
* ``self._parameterNode`` (its ``autoUpdate``; None while the module is not shown) and
  ``self._reparamTimer`` (the single-shot timer that calls :meth:`ReparamSection._runReparamPreview`);
* the maps jobs, one at a time: ``self._mapsJob``, ``self._startMapsJob`` and ``self._updateMapsJobButtons``
  (which asks :meth:`ReparamSection._reparamEngine` whether Predict maps applies);
* ``self._showSliders`` (bounds, then values, signals blocked), used with the section's own sliders.

The widget in turn drops ``self._scanMaps`` when the scene closes.
"""
import logging
from typing import Dict, List, Optional

import qt
import slicer
from slicer.i18n import tr as _

from ..jobs import REPARAM_ENGINES
from ..physics.protocols import (PARAMETERS, PRESETS, SEQUENCES, START_CONTRAST, clamp_parameters, preset_values,
                                 start_values)
from ..physics.scans import SCAN_SEQUENCES
from .logic import CONTRASTS, SOURCE_ATTRIBUTE, custom_contrast_of, reparamName, reparamSource, sequence_of

__all__ = ["ReparamSection", "REPARAM_SPIN_BOXES", "REPARAM_SLIDERS", "disableKeyboardTracking"]

# Re-parameterize a scan: the scan's TR/TE/TI (ms) spin boxes, and the target's sliders (the widget's own values).
REPARAM_SPIN_BOXES = {name: f"reparam{name.capitalize()}SpinBox" for name in ("tr", "te", "ti")}
REPARAM_SLIDERS = {name: f"reparam{name.capitalize()}Slider" for name in PARAMETERS}


def _sentence(error) -> str:
    """A one-line error as a status sentence: capitalized, with a full stop."""
    text = str(error).strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "?", "!")) else ".")


def disableKeyboardTracking(slider) -> None:
    """A value typed into a slider's spin box counts once, on Enter or focus out (see the notes of
    :mod:`SyntheticMRILib.slicer.widget`)."""
    for spinBox in slider.findChildren(qt.QDoubleSpinBox):
        spinBox.keyboardTracking = False


class ReparamSection:
    """The "Re-parameterize a scan" section of :class:`~SyntheticMRILib.slicer.widget.SyntheticMRIWidget`: a mixin
    with no state of its own until ``_setUpReparam``; what it needs of the widget is listed in the module's notes."""

    # ------------------------------------------------------------------ re-parameterize a scan
    # The scan's protocol is read from the section's spin boxes when it is needed; the physics engine's maps
    # (self._scanMaps) belong to the scan and protocol they were predicted from (self._scanMapsKey), and the target
    # sliders run the physics layer on them only while both are unchanged. The target is the widget's own state,
    # laid out as the synthesis section's contrast: a preset, or a custom sequence whose values the sliders hold.
    def _setUpReparam(self) -> None:
        ui = self.ui
        self._scanMaps = self._scanMapsKey = None
        self._reparamContrast, self._reparamValues = START_CONTRAST, start_values()
        self._reparamDrag: Dict[str, float] = {}
        self._reparamRewindow = False  # a new target contrast: window the next whole volume afresh
        self._reparamSpinBoxes = {name: getattr(ui, widget) for name, widget in REPARAM_SPIN_BOXES.items()}
        self._reparamSliders = {name: getattr(ui, widget) for name, widget in REPARAM_SLIDERS.items()}
        ui.reparamSequenceComboBox.addItems([sequence.upper() for sequence in SCAN_SEQUENCES])
        ui.reparamEngineComboBox.addItems(list(REPARAM_ENGINES))
        ui.reparamTargetComboBox.addItems(list(CONTRASTS))
        ui.reparamTargetComboBox.currentIndex = ui.reparamTargetComboBox.findText(START_CONTRAST)
        for name, slider in self._reparamSliders.items():
            disableKeyboardTracking(slider)
            slider.connect("valueIsChanging(double)", lambda value, name=name: self.onReparamSliderMoving(name, value))
            slider.connect("valueChanged(double)", lambda value, name=name: self.onReparamSliderReleased(name, value))
        ui.reparamInputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onReparamInputChanged)
        ui.reparamSequenceComboBox.connect("currentIndexChanged(int)", lambda index: self._layOutReparam())
        ui.reparamEngineComboBox.connect("currentIndexChanged(int)", lambda index: self._updateMapsJobButtons())
        ui.reparamTargetComboBox.connect("currentIndexChanged(int)", lambda index: self.onReparamTargetChanged())
        ui.reparamPredictButton.connect("clicked(bool)", self.onReparamPredict)
        ui.reparamApplyButton.connect("clicked(bool)", self.onReparamApply)
        ui.reparamCancelButton.connect("clicked(bool)", lambda: self._mapsJob and self._mapsJob.cancel())
        self._layOutReparam()

    def _reparamEngine(self) -> str:
        return self.ui.reparamEngineComboBox.currentText or REPARAM_ENGINES[0]

    def _layOutReparam(self) -> None:
        """The scan's TI for an IR only; the target's sliders of its sequence, at their bounds."""
        ui, sequence = self.ui, sequence_of(self._reparamContrast)
        ui.reparamTiSpinBox.setVisible(ui.reparamSequenceComboBox.currentText.lower() == "ir")
        self._showSliders(self._reparamValues, sequence, self._reparamSliders)
        uses = SEQUENCES[sequence].needs
        for name in ("ti", "ti2", "flip"):
            self._reparamSliders[name].setVisible(name in uses)
            getattr(ui, f"reparam{name.capitalize()}Label").setVisible(name in uses)
        ui.reparamTiLabel.text = _("TI1 (longer):") if "ti2" in uses else _("TI:")

    def onReparamInputChanged(self, node) -> None:
        """Fill in the scan's protocol as far as the volume tells it (its DICOM header, or a contrast made here); the
        maps of another scan are dropped."""
        self._scanMaps = self._scanMapsKey = None
        try:
            values, where = self.logic.scanProtocolOfNode(node)
            note = ""
        except ValueError as error:  # a gradient-echo DICOM scan
            values, where, note = {}, "", _sentence(error)
        if values.get("sequence") in SCAN_SEQUENCES:
            self.ui.reparamSequenceComboBox.currentIndex = SCAN_SEQUENCES.index(values["sequence"])
        for name, box in self._reparamSpinBoxes.items():
            box.value = float(values.get(name, 0.0))
        self._layOutReparam()
        if where:
            needs = ("tr", "te", "ti") if values["sequence"] == "ir" else ("tr", "te")
            missing = [name.upper() for name in needs if name not in values]
            note = _("{sequence} {found} from the {where}.").format(
                sequence=str(values["sequence"]).upper(), where=where,
                found=", ".join(name.upper() for name in needs if name in values))
            if missing:
                note += " " + _("Enter the {missing} (ms).").format(missing=", ".join(missing))
        elif node is not None and not note:
            note = _("The volume does not say how it was acquired: enter its sequence, TR and TE (ms).")
        self.ui.reparamProtocolLabel.text = note

    def _reparamInput(self):
        """``(node, protocol)`` of the scan; ValueError with a one-line reason when either is missing or wrong."""
        node = self.ui.reparamInputSelector.currentNode()
        if node is None:
            raise ValueError(_("Select the scan to re-parameterize."))
        values = {name: float(box.value) for name, box in self._reparamSpinBoxes.items()}
        return node, self.logic.scanProtocol(self.ui.reparamSequenceComboBox.currentText.lower(), **values)

    @staticmethod
    def _reparamKey(node, protocol) -> tuple:
        image = node.GetImageData()
        return node.GetID(), image.GetMTime() if image is not None else 0, protocol

    def _reparamLive(self) -> bool:
        """Whether the physics engine's maps of the scan, as it is now and with the protocol shown, are there."""
        if self._scanMaps is None or self._reparamEngine() != "physics":
            return False
        try:
            return self._reparamKey(*self._reparamInput()) == self._scanMapsKey
        except ValueError:
            return False

    def _reparamFollows(self) -> bool:
        """Whether moving the target updates the output: the maps are live and the output was made here."""
        output = self.ui.reparamOutputSelector.currentNode()
        auto = self._parameterNode is None or self._parameterNode.autoUpdate
        return bool(auto and output is not None and output.GetImageData() is not None
                    and output.GetAttribute(SOURCE_ATTRIBUTE) and self._reparamLive()
                    and output is not self.ui.reparamInputSelector.currentNode())

    def _reparamTarget(self, overrides: Optional[Dict[str, float]] = None):
        """The target: its preset's name when it is one (its provenance keeps the name), else the protocol of the
        sliders, with ``overrides`` (a dragged slider) kept physical."""
        if not overrides and self._reparamContrast in PRESETS:
            return self._reparamContrast
        sequence = sequence_of(self._reparamContrast)
        values = clamp_parameters({**self._reparamValues, **(overrides or {})}, sequence)
        return self.logic.protocol(self._reparamContrast, **values)

    def _reparamName(self, node) -> str:
        """"<scan> as T2-FLAIR", "<scan> as spin echo": the output's name while the module names it."""
        contrast = self._reparamContrast
        return reparamName(contrast if contrast in PRESETS else contrast[len("Custom "):], node.GetName())

    # ------------------------------------------------------------------ the target
    def onReparamTargetChanged(self) -> None:
        """A target picked from the list: a preset brings its values (the others stay, clamped)."""
        contrast = self.ui.reparamTargetComboBox.currentText
        if contrast == self._reparamContrast or contrast not in CONTRASTS:
            return
        values = {**self._reparamValues, **(preset_values(contrast) if contrast in PRESETS else {})}
        self._reparamContrast, self._reparamRewindow = contrast, True
        self._reparamValues = clamp_parameters(values, sequence_of(contrast))
        self._layOutReparam()
        self._followReparam()

    def onReparamSliderMoving(self, name: str, value: float) -> None:
        self._reparamDrag[name] = value
        self._reparamTimer.start()

    def onReparamSliderReleased(self, name: str, value: float) -> None:
        """A new target value: kept physical; a preset whose values changed turns into its custom sequence."""
        self._reparamDrag.pop(name, None)
        sequence = sequence_of(self._reparamContrast)
        values = clamp_parameters({**self._reparamValues, name: value}, sequence)
        if values == self._reparamValues:
            return
        self._reparamValues = values
        if self._reparamContrast in PRESETS and any(abs(values[key] - preset) > 1e-6
                                                    for key, preset in preset_values(self._reparamContrast).items()):
            self._reparamContrast = custom_contrast_of(sequence)
            combo = self.ui.reparamTargetComboBox
            wasBlocked = combo.blockSignals(True)
            combo.currentIndex = combo.findText(self._reparamContrast)
            combo.blockSignals(wasBlocked)
        self._layOutReparam()
        self._followReparam()

    def _runReparamPreview(self) -> None:
        """Render only the voxels the slice views show, with the dragged value."""
        values, self._reparamDrag = self._reparamDrag, {}
        if not values or not self._reparamFollows():
            return  # nothing to preview into: the release (or Apply) makes the whole volume
        try:
            self.logic.updateVisibleReparam(self._scanMaps, self._reparamTarget(values),
                                            self.ui.reparamOutputSelector.currentNode())
        except Exception as error:  # a preview never interrupts a drag with a dialog
            logging.debug(f"SyntheticMRI: re-parameterization preview skipped ({error})")

    def _followReparam(self) -> None:
        """The whole output at the new target, when it follows the sliders; else say why not, if maps are there."""
        if self._reparamFollows():
            self._renderReparam(interactive=False)
        elif self._scanMaps is not None and not self._reparamLive() and self._reparamEngine() == "physics":
            self.ui.reparamStatusLabel.text = _("The scan or its protocol changed since the maps were predicted: "
                                                "press Predict maps again.")

    # ------------------------------------------------------------------ predict, apply
    def _reparamProblem(self, engine: str) -> Optional[str]:
        try:
            node, _protocol = self._reparamInput()
        except ValueError as error:
            return _sentence(error)
        if self.ui.reparamOutputSelector.currentNode() is node:
            return _("The output volume must not be the scan.")
        if engine == "direct" and sequence_of(self._reparamContrast) not in SCAN_SEQUENCES:
            return _("The direct engine makes spin-echo and inversion-recovery targets only: pick one, or the physics engine.")
        return None

    def onReparamPredict(self) -> None:
        """The physics engine's maps of the scan, in a PythonSlicer process; then the target sliders run the
        physics layer alone, in process."""
        self._startReparamJob("physics")

    def onReparamApply(self) -> None:
        """The whole volume at the target: from the maps in process (physics; predicted first when they are not
        there), or by the direct engine's network in a PythonSlicer process."""
        engine = self._reparamEngine()
        if engine == "physics" and self._reparamLive():
            problem = self._reparamProblem(engine)
            if problem:
                self.ui.reparamStatusLabel.text = problem
                return
            self._renderReparam(interactive=True)
            return
        self._startReparamJob(engine)

    def _startReparamJob(self, engine: str) -> None:
        problem = self._reparamProblem(engine)
        if problem:
            self.ui.reparamStatusLabel.text = problem
            return
        if self._mapsJob is not None or not self.logic.ensureDependencies(extras=True):
            return
        node, protocol = self._reparamInput()
        target, output = self._reparamTarget(), self.ui.reparamOutputSelector.currentNode()
        targetProtocol = self.logic.presetProtocol(target) if isinstance(target, str) else target
        with slicer.util.tryWithErrorDisplay(_("Could not write the scan for re-parameterization."), waitCursor=True):
            folder, argv = self.logic.reparamJob(node, protocol, device=self.logic.getParameterNode().device,
                                                 engine=engine, target=targetProtocol if engine == "direct" else None)
        if engine == "physics":
            key = self._reparamKey(node, protocol)
            describe = lambda done, total, what: _("Predicting the maps: slice {done} of {total}").format(done=done, total=total)
            load = lambda messages: self._loadScanMaps(folder, node, key, messages)
        else:
            describe = lambda done, total, what: _("Re-parameterizing: slice {done} of {total}").format(done=done, total=total)
            load = lambda messages: self._loadReparamResult(folder, node, protocol, target, output, messages)
        self._startMapsJob(folder, argv, self.ui.reparamProgressBar, self.ui.reparamStatusLabel, describe, load,
                           _("Could not load the re-parameterized scan."))

    def _loadScanMaps(self, folder: str, node, key: tuple, messages: List[str]) -> str:
        self._scanMaps, self._scanMapsKey = self.logic.loadScanMaps(folder, node), key
        warnings = [line for line in messages if line.startswith("warning:")]
        try:
            current = self._reparamKey(*self._reparamInput())
        except ValueError:
            current = None
        if current != key:
            return "\n".join([_("The scan or its protocol changed while the maps were predicted: press Predict maps "
                                 "again.")] + warnings)
        self._reparamRewindow = True
        status = self._renderReparam(interactive=True)
        return "\n".join([_("Maps predicted: the target sliders run the physics layer now."), status] + warnings)

    def _loadReparamResult(self, folder: str, node, protocol, target, output, messages: List[str]) -> str:
        if output is not None and output.GetScene() is None:  # removed while the job ran
            output = None
        created = output is None
        output = self.logic.loadReparamResult(folder, target, node, output, name=self._reparamName(node),
                                              source=reparamSource(protocol, node.GetName(), "direct"))
        if created:
            self.ui.reparamOutputSelector.setCurrentNode(output)
        slicer.util.setSliceViewerLayers(background=output, fit=created)
        warnings = [line for line in messages if line.startswith("warning:")]
        return "\n".join([_("{name}: the direct engine's image.").format(name=output.GetName())] + warnings)

    def _renderReparam(self, interactive: bool) -> str:
        """The whole output at the target from the maps, in process; returns (and shows) the status line."""
        node, protocol = self._reparamInput()
        output = self.ui.reparamOutputSelector.currentNode()
        created, target = output is None, self._reparamTarget()
        if output is node:
            self.ui.reparamStatusLabel.text = _("The output volume must not be the scan.")
            return self.ui.reparamStatusLabel.text
        try:
            with slicer.util.WaitCursor():
                output = self.logic.reparameterizeScan(self._scanMaps, target, output, name=self._reparamName(node),
                                                       source=reparamSource(protocol, node.GetName()))
        except Exception as error:  # shown to the user; InputError messages are written for them
            (logging.error if isinstance(error, ValueError) else logging.exception)(f"SyntheticMRI: re-parameterization failed: {error}")
            self.ui.reparamStatusLabel.text = _("Failed: {error}").format(error=error)
            return self.ui.reparamStatusLabel.text
        if created:
            self.ui.reparamOutputSelector.setCurrentNode(output)
        elif self._reparamRewindow:
            from .bridge import rewindow  # torch is there: the maps were loaded

            rewindow(output)
        self._reparamRewindow = False
        if created or interactive:
            slicer.util.setSliceViewerLayers(background=output, fit=created)
        caption = target if isinstance(target, str) else f"{target.sequence.upper()} {target.caption()}"
        status = _("{target}: {milliseconds:.0f} ms").format(target=caption, milliseconds=1000.0 * self.logic.lastDuration)
        self.ui.reparamStatusLabel.text = status
        return status
