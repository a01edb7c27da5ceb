"""The module's logic: synthetic contrasts, segmentation and learned contrasts into MRML nodes, without the GUI.

Usable from the Slicer Python console (``SyntheticMRI.SyntheticMRILogic()``), the
widget, and tests. Importing it imports neither torch nor MRML: the bridge
(:mod:`SyntheticMRILib.slicer.bridge`), the preview and the physics load on first
use, after :meth:`SyntheticMRILogic.ensureDependencies`. Synthesis of one volume
is sub-second and runs in process; segmentation, the learned contrasts, the maps
estimated from routine scans and the networks of re-parameterization run in a PythonSlicer child
(:mod:`SyntheticMRILib.jobs`). Re-parameterization's physics engine predicts a scan's maps once in a child
(:meth:`SyntheticMRILogic.predictScanMaps`); every target is then the physics layer alone, in process
(:meth:`SyntheticMRILogic.reparameterizeScan`, :meth:`SyntheticMRILogic.updateVisibleReparam`).
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Tuple, Union

from .. import jobs
from ..errors import InputError
from ..io.dicom_tags import DICOM_TAGS, first_number, protocol_from_tags
from ..io.maps import MAP_NAMES
from ..io.provenance import PARAMETER_KEYS, PROTOCOL_KEY, SEQUENCE_KEY
from ..physics.protocols import PRESETS, Protocol, contrast_description, preset, protocol_from_values
from ..physics.routine import RANGES_MS, SERIES
from ..physics.scans import SCAN_SEQUENCES, check_scan
from . import install

if TYPE_CHECKING:  # annotations only: it imports torch
    from ..models.reparam import ScanMaps

__all__ = ["SyntheticMRILogic", "CUSTOM_CONTRASTS", "CONTRASTS", "sequence_of", "custom_contrast_of", "reparamName",
           "reparamSource"]

# The GUI's contrast list: the presets, then a custom entry per sequence.
CUSTOM_CONTRASTS = {
    "Custom spin echo": "se", "Custom inversion recovery": "ir", "Custom phase-sensitive IR": "psir",
    "Custom double IR": "dir", "Custom gradient echo": "gre", "Custom dSIR": "dsir",
}
CONTRASTS = tuple(PRESETS) + tuple(CUSTOM_CONTRASTS)
PROTOCOL_ATTRIBUTE = PROTOCOL_KEY  # the node attribute of a synthesized volume (the bridge sets it)
SOURCE_ATTRIBUTE = "SyntheticMRI.ReparameterizedFrom"  # and what a re-parameterized scan was made from (the bridge's)
ESTIMATED_MAP_NAMES = tuple(f"{name.upper()} map (estimated)" for name in MAP_NAMES)


def sequence_of(contrast: str) -> str:
    """The sequence key ('se', 'ir', ...) of a GUI contrast: a preset name or a custom entry."""
    return PRESETS[contrast].protocol.sequence if contrast in PRESETS else CUSTOM_CONTRASTS[contrast]


def custom_contrast_of(sequence: str) -> str:
    """The custom GUI entry of a sequence key."""
    return next(label for label, key in CUSTOM_CONTRASTS.items() if key == sequence)


def _bridge():
    from . import bridge  # imports torch (through the preview) and MRML

    return bridge


class SyntheticMRILogic:
    """Synthetic contrasts into volume nodes: a thin layer over SyntheticMRILib.

    The maps of the last inputs stay cached as tensors, so that slider moves do not convert three volumes.
    ``confirm(question) -> bool``, ``pipInstall(requirements)``, ``installTorch(requirement)`` and
    ``showError(message)`` default to Slicer's dialogs, ``slicer.util.pip_install`` and PyTorch Utils; tests
    pass their own.
    """

    def __init__(self, confirm: Optional[Callable[[str], bool]] = None, pipInstall: Optional[Callable[[str], None]] = None,
                 installTorch: Optional[Callable[[str], None]] = None, showError: Optional[Callable[[str], None]] = None) -> None:
        self.lastDuration = 0.0  # seconds of the last whole-volume synthesis
        self._cache = None  # a preview.MapCache, made on first use (it holds torch tensors)
        self._confirm, self._pipInstall, self._installTorch, self._showError = confirm, pipInstall, installTorch, showError

    def clearCache(self) -> None:
        self._cache = None

    # ------------------------------------------------------------------ dependencies
    @staticmethod
    def missingPackages(extras: bool = False) -> List[str]:
        """What to install before SyntheticMRILib runs: torch and, with ``extras``, the segmenter's packages."""
        return install.missing_packages(extras)

    def ensureDependencies(self, extras: bool = False, askConfirmation: bool = True) -> bool:
        """True when the packages are there; otherwise offers, in one dialog, to install them.
        With ``askConfirmation=False`` nothing is installed and the answer is False (no dialogs on auto-updates)."""
        missing = self.missingPackages(extras)
        if not missing:
            return True
        question = ("Synthetic MRI needs these Python packages, which are not installed yet:\n\n    {packages}\n\n"
                    "Install them now? PyTorch is a download of several hundred MB and may take a few minutes.")
        if not askConfirmation or not (self._confirm or _slicerConfirm)(question.format(packages=", ".join(missing))):
            return False
        try:
            install.install_packages(missing, self._pipInstall or _slicerPipInstall, self._installTorch or _pytorchUtilsInstall)
        except Exception as error:
            (self._showError or _slicerError)(f"Installing {', '.join(missing)} failed: {error}")
            return False
        return not self.missingPackages(extras)

    @staticmethod
    def libraryLoaded() -> bool:
        """Whether torch and the physics are imported already; nothing is imported to find out."""
        return "SyntheticMRILib.physics.synthesis" in sys.modules

    # ------------------------------------------------------------------ protocols (no torch needed)
    @staticmethod
    def protocol(contrast: str, tr: float, te: float, ti=None, ti2=None, flip=None) -> Protocol:
        """A validated Protocol for a GUI contrast; parameters the sequence does not take are dropped."""
        return protocol_from_values(sequence_of(contrast), dict(tr=tr, te=te, ti=ti, ti2=ti2, flip=flip))

    @staticmethod
    def presetProtocol(name: str) -> Protocol:
        """The Protocol of a preset (case-insensitive); InputError naming the presets if there is none."""
        return preset(name).protocol

    @staticmethod
    def contrastDescription(contrast: str) -> str:
        """What a contrast shows."""
        return contrast_description(contrast if contrast in PRESETS else sequence_of(contrast))

    @staticmethod
    def outputName(contrast: str) -> str:
        return "Synthetic " + (contrast if contrast in PRESETS else contrast[len("Custom "):])

    # ------------------------------------------------------------------ synthesis, in process
    def loadSample(self) -> dict:
        """The bundled sample as nodes: 't1', 't2' (ms), 'pd' (fraction) and 'segmentation' (its FreeSurfer labels)."""
        return _bridge().load_sample()

    def _mapTensors(self, t1Node, t2Node, pdNode, units: str, device: str):
        from .preview import MapCache

        bridge, nodes = _bridge(), (t1Node, t2Node, pdNode)
        self._cache = self._cache or MapCache()
        return self._cache.get((bridge.node_stamps(nodes), units), lambda: bridge.maps_from_nodes(*nodes, units=units), device)

    def synthesize(self, t1Node, t2Node, pdNode, contrast, outputNode=None, units: str = "ms", device: str = "auto",
                   fused: bool = True, name: Optional[str] = None):
        """The whole synthetic volume on the T1 map's grid, into ``outputNode`` (a new node when None); returns it.
        ``contrast`` is a preset name or a Protocol, ``units`` those of the T1/T2 maps ("ms" or "s")."""
        # In process: the fused kernel takes ~45 ms for 256^3 on 2 CPU threads, under 1 ms on a GPU (DESIGN.md),
        # after a compile of seconds; eager torch ~0.4 s. A worker process would cost more than that.
        from ..physics.synthesis import synthesize_volume

        protocol = self.presetProtocol(contrast) if isinstance(contrast, str) else contrast.validate()
        if outputNode is not None and outputNode in (t1Node, t2Node, pdNode):
            raise ValueError("The output volume must not be one of the input maps.")
        maps, (t1, t2, pd) = self._mapTensors(t1Node, t2Node, pdNode, units, device)
        start = time.perf_counter()
        array = synthesize_volume(t1, t2, pd, protocol, fused=fused).cpu().numpy()
        self.lastDuration = time.perf_counter() - start
        if name is None and isinstance(contrast, str):  # the name follows the contrast unless the user renamed the node
            name = "Synthetic " + contrast
        return _bridge().node_from_contrast(maps.volume(array), protocol, node=outputNode, name=name)

    def updateVisibleSlices(self, t1Node, t2Node, pdNode, protocol, outputNode, units="ms", device="auto", sliceNodes=None) -> int:
        """Recompute, in place, only the voxels of ``outputNode`` (synthesized before, on the maps' grid) that the
        ``sliceNodes`` show (default: the views showing it); returns how many views (see ``preview``)."""
        maps, tensors = self._mapTensors(t1Node, t2Node, pdNode, units, device)
        return _bridge().update_visible_slices(maps, tensors, protocol, outputNode, sliceNodes)

    # ------------------------------------------------------------------ maps jobs, out of process
    def mapsJob(self, command: str, t1Node, t2Node, pdNode, units: str = "ms", device: str = "auto",
                temporaryPath: Optional[str] = None) -> Tuple[str, List[str]]:
        """Write the maps into a new temporary folder; return it and the argv of a ``segment`` or
        ``contrast --learned`` child (:func:`SyntheticMRILib.jobs.maps_job`) that writes its results there."""
        folder = self._jobFolder((t1Node, t2Node, pdNode), MAP_NAMES, temporaryPath)
        return folder, jobs.maps_job(jobs.slicer_python(), command, folder, units, device)

    def routineMapsJob(self, t1wNode, t2wNode, flairNode, values: Mapping[str, Mapping[str, float]],
                       device: str = "auto", model: Optional[str] = None,
                       temporaryPath: Optional[str] = None) -> Tuple[str, List[str]]:
        """Write the T1w, T2w and FLAIR series into a new temporary folder; return it and the argv of a ``maps``
        child (:func:`SyntheticMRILib.jobs.routine_maps_job`; ``values``: each series' TR/TE/TI in ms) that
        writes the estimated T1/T2/PD maps there."""
        folder = self._jobFolder((t1wNode, t2wNode, flairNode), SERIES, temporaryPath)
        return folder, jobs.routine_maps_job(jobs.slicer_python(), folder, values, device, model)

    def _jobFolder(self, nodes, names, temporaryPath: Optional[str]) -> str:
        folder = tempfile.mkdtemp(prefix="SyntheticMRI-", dir=temporaryPath or _slicerTemporaryPath())
        try:
            jobs.write_job_maps(folder, [_bridge().volume_from_node(node) for node in nodes], names)
        except Exception:
            self.removeJobFolder(folder)  # a volume that cannot be written leaves no folder behind
            raise
        return folder

    def loadSegmentation(self, folder: str, referenceNode=None):
        """The ``segment`` results of ``folder`` as a segmentation node (named, coloured, coded segments on the
        reference's grid) and a table node of the structure volumes (ml); returns both."""
        from ..io.volumes import read_volume

        bridge = _bridge()
        labels = read_volume(Path(folder) / jobs.SEGMENTATION_FILE)
        volumesMl = jobs.read_structure_volumes(Path(folder) / jobs.VOLUMES_FILE)
        segmentation = bridge.segmentation_from_labels(labels, referenceNode, "Subcortical segmentation")
        return segmentation, bridge.volumes_table(volumesMl, "Subcortical volumes (ml)", segmentation.GetScene())

    def loadLearnedContrasts(self, folder: str, scene=None) -> list:
        """The ``contrast --learned`` results of ``folder`` as volume nodes that carry their protocols, in ``scene``
        (default: Slicer's)."""
        from ..io.volumes import read_volume

        nodes = []
        for k, (path, protocol) in enumerate(jobs.read_learned_index(Path(folder) / jobs.LEARNED_FOLDER)):
            name = f"Learned contrast {k + 1} ({protocol.sequence.upper()} {protocol.caption()})"
            nodes.append(_bridge().node_from_contrast(read_volume(path), protocol, name=name, scene=scene))
        return nodes

    def loadEstimatedMaps(self, folder: str, scene=None) -> tuple:
        """The maps a ``maps`` child wrote into ``folder`` as volume nodes (T1, T2 in ms; PD), in ``scene``
        (default: Slicer's)."""
        from ..io.volumes import read_volume

        maps = Path(folder) / jobs.ESTIMATED_MAPS_FOLDER
        return tuple(_bridge().node_from_volume(read_volume(maps / f"{name}.nrrd"), label, scene=scene)
                     for name, label in zip(MAP_NAMES, ESTIMATED_MAP_NAMES))

    @staticmethod
    def protocolValuesFromNode(node, series: str) -> Dict[str, float]:
        """The TR/TE(/TI) in ms of ``node`` that ``series`` ("t1w", "t2w", "flair") takes, as far as they are known:
        from the DICOM header of a volume loaded from DICOM, else from the provenance of a contrast synthesized here
        (:func:`~SyntheticMRILib.slicer.bridge.node_from_contrast`); none for any other volume."""
        if node is None:
            return {}
        names, uids = RANGES_MS[series], (node.GetAttribute("DICOM.instanceUIDs") or "").split()
        found = _dicomValues(uids[0]) if uids else {name: node.GetAttribute(PARAMETER_KEYS[name]) for name in names}
        values = {name: first_number(found.get(name)) for name in names}
        return {name: value for name, value in values.items() if value is not None}

    @staticmethod
    def removeJobFolder(folder: str) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def segment(self, t1Node, t2Node, pdNode, units: str = "ms", device: str = "auto"):
        """Console use: segment in a child process and wait; returns (segmentation node, volumes table node)."""
        folder, argv = self.mapsJob("segment", t1Node, t2Node, pdNode, units, device)
        try:
            _runToEnd(argv, "segment")
            return self.loadSegmentation(folder, t1Node)
        finally:
            self.removeJobFolder(folder)

    def estimateMaps(self, t1wNode, t2wNode, flairNode, values: Mapping[str, Mapping[str, float]], device: str = "auto",
                     model: Optional[str] = None) -> tuple:
        """Console use: T1/T2/PD maps from the T1w, T2w and FLAIR series and their TR/TE/TI (ms,
        ``{"t1w": {"tr": .., "te": ..}, ...}``) in a child process, waiting; returns the three map nodes."""
        folder, argv = self.routineMapsJob(t1wNode, t2wNode, flairNode, values, device, model)
        try:
            _runToEnd(argv, "maps")
            return self.loadEstimatedMaps(folder, t1wNode.GetScene())
        finally:
            self.removeJobFolder(folder)

    # ------------------------------------------------------------------ re-parameterization: the scan's protocol (no torch needed)
    @staticmethod
    def scanProtocol(sequence: str, tr: float, te: float, ti: Optional[float] = None) -> Protocol:
        """The validated protocol of a weighted scan ("se" or "ir", ms; an SE's TI is dropped); InputError, in one
        line, for a missing value (0 or None: not known), TE >= TR and the like."""
        sequence = str(sequence).lower()
        names = ("tr", "te", "ti") if sequence == "ir" else ("tr", "te")
        given = dict(tr=tr, te=te, ti=ti)
        missing = [name.upper() for name in names if not given[name] or given[name] <= 0]
        if sequence not in SCAN_SEQUENCES:
            raise InputError(f"the scan's sequence {sequence!r} is not one re-parameterization reads; choose "
                             f"{' or '.join(s.upper() for s in SCAN_SEQUENCES)}")
        if missing:
            raise InputError(f"enter the scan's {', '.join(missing)} (ms)")
        return check_scan(Protocol(sequence, *(float(given[name]) for name in names)), "the scan")

    @classmethod
    def _asScanProtocol(cls, protocol: Union[Protocol, Mapping[str, object]]) -> Protocol:
        """A Protocol checked as a scan's, or one from ``{"sequence", "tr", "te"[, "ti"]}`` (e.g. :meth:`protocolFromDicom`)."""
        if isinstance(protocol, Protocol):
            return check_scan(protocol, "the scan")
        if not protocol:
            raise InputError("the scan's protocol is not known; give its sequence, TR and TE (ms)")
        return cls.scanProtocol(str(protocol.get("sequence", "")), *(protocol.get(name) for name in ("tr", "te", "ti")))

    @staticmethod
    def protocolFromDicom(node) -> Dict[str, object]:
        """The scan's sequence ("se" or "ir") and TR/TE/TI (ms) from the DICOM header of the node's first instance
        (:func:`~SyntheticMRILib.io.dicom_tags.protocol_from_tags`); {} for a volume not loaded from DICOM.
        InputError for a gradient-echo scan."""
        uids = (node.GetAttribute("DICOM.instanceUIDs") or "").split() if node is not None else []
        return protocol_from_tags(_dicomValues(uids[0])) if uids else {}

    @classmethod
    def scanProtocolOfNode(cls, node) -> Tuple[Dict[str, object], str]:
        """``(values, where)``: the scan's sequence and TR/TE/TI as far as known, from the DICOM header
        (``where`` "DICOM header"), else from the provenance of an SE or IR contrast made here ("volume's provenance");
        ``({}, "")`` for any other volume. InputError for a gradient-echo DICOM scan."""
        if node is None:
            return {}, ""
        values = cls.protocolFromDicom(node)
        if values:
            return values, "DICOM header"
        sequence = node.GetAttribute(SEQUENCE_KEY)
        if sequence not in SCAN_SEQUENCES:
            return {}, ""
        times = {name: first_number(node.GetAttribute(PARAMETER_KEYS[name])) for name in ("tr", "te", "ti")}
        return {"sequence": sequence, **{k: v for k, v in times.items() if v is not None}}, "volume's provenance"

    # ------------------------------------------------------------------ the child: maps (physics) or an image (direct)
    def reparamJob(self, inputNode, protocol: Union[Protocol, Mapping[str, object]], device: str = "auto", model: Optional[str] = None,
                   engine: str = "physics", target: Optional[Protocol] = None,
                   temporaryPath: Optional[str] = None) -> Tuple[str, List[str]]:
        """Write the scan into a new temporary folder; return it and the argv of a ``reparam`` child
        (:func:`SyntheticMRILib.jobs.reparam_job`): the physics engine keeps its maps there (``target`` None: the
        input protocol), the direct engine writes ``target``'s image. Nothing is written for a bad protocol."""
        protocol = self._asScanProtocol(protocol)
        if engine == "direct":
            if target is None:
                raise InputError("the direct engine needs a target protocol")
            check_scan(target, "the target (the direct engine makes SE and IR only; the physics engine makes any)")
        folder = self._jobFolder((inputNode,), (jobs.REPARAM_INPUT,), temporaryPath)
        return folder, jobs.reparam_job(jobs.slicer_python(), folder, protocol, device, model, engine,
                                        None if target is None else target.validate())

    @staticmethod
    def loadScanMaps(folder: str, inputNode) -> "ScanMaps":
        """The physics engine's maps that a ``reparam`` child kept in ``folder``, with the scan ``inputNode``."""
        from ..models.reparam import ScanMaps

        return ScanMaps.load(Path(folder) / jobs.SCAN_MAPS_FOLDER, _bridge().volume_from_node(inputNode))

    def loadReparamResult(self, folder: str, target: Union[str, Protocol], inputNode, outputNode=None,
                          name: Optional[str] = None, source: Optional[str] = None):
        """The image a direct-engine ``reparam`` child wrote into ``folder``, at ``target`` (a preset name or a
        Protocol), into ``outputNode`` (a new node when None, in the scan's scene) with its provenance, on exactly
        the grid of the scan ``inputNode`` (the file's header rounds it); returns the node."""
        from ..io.volumes import read_volume

        protocol, provenance = _targetProvenance(target)
        bridge, result = _bridge(), read_volume(Path(folder) / jobs.REPARAM_RESULT)
        scan = bridge.volume_from_node(inputNode)
        if not result.same_grid(scan):
            raise InputError(f"{inputNode.GetName()}: the re-parameterized scan is not on its grid")
        return bridge.node_from_contrast(scan.with_array(result.array), protocol, node=outputNode,
                                         name=name or reparamName(target, inputNode.GetName()), scene=inputNode.GetScene(),
                                         provenance=provenance, source=source)

    def predictScanMaps(self, inputNode, protocol: Union[Protocol, Mapping[str, object]], device: str = "auto",
                        model: Optional[str] = None) -> "ScanMaps":
        """Console use: the physics engine's maps of the scan ``inputNode`` acquired at ``protocol`` (SE or IR, ms; a
        Protocol, or a dict as :meth:`protocolFromDicom` gives), predicted in a child process, waiting; render any
        target from them with :meth:`reparameterizeScan`."""
        folder, argv = self.reparamJob(inputNode, protocol, device, model)
        try:
            _runToEnd(argv, "reparam")
            return self.loadScanMaps(folder, inputNode)
        finally:
            self.removeJobFolder(folder)

    # ------------------------------------------------------------------ the physics layer, in process
    def reparameterizeScan(self, scanMaps: "ScanMaps", target: Union[str, Protocol], outputNode=None,
                           name: Optional[str] = None, source: Optional[str] = None, scene=None):
        """The whole scan at ``target`` (a preset name or a Protocol) from its maps, on the scan's grid, into
        ``outputNode`` (a new node when None, in ``scene``, default Slicer's), which records the target's provenance
        and ``source`` (what it was made from); returns the node."""
        protocol, provenance = _targetProvenance(target)
        start = time.perf_counter()
        array = scanMaps.render(protocol)
        self.lastDuration = time.perf_counter() - start
        return _bridge().node_from_contrast(scanMaps.image.with_array(array), protocol, node=outputNode,
                                            name=name or reparamName(target), scene=scene, provenance=provenance,
                                            source=source if source is not None else reparamSource(scanMaps.protocol))

    @staticmethod
    def updateVisibleReparam(scanMaps: "ScanMaps", target: Union[str, Protocol], outputNode, sliceNodes=None) -> int:
        """Render, in place, only the voxels of ``outputNode`` (rendered before, on the scan's grid) that the
        ``sliceNodes`` show (default: the views showing it); returns how many views (see ``preview.render_planes``)."""
        return _bridge().update_visible_reparam(scanMaps, _targetProvenance(target)[0], outputNode, sliceNodes)


def reparamName(target: Union[str, Protocol], scan: Optional[str] = None) -> str:
    """The name of a re-parameterized scan: "<scan> as T2-FLAIR" (a preset, or any label) or "... as IR TR 9000 TE
    90 TI 2500" (a Protocol)."""
    label = target if isinstance(target, str) else f"{target.sequence.upper()} {target.caption()}"
    return f"{scan or 'Scan'} as {label}"


def reparamSource(protocol: Protocol, scan: Optional[str] = None, engine: str = "physics") -> str:
    """What a re-parameterized scan was made from, for its ``SyntheticMRI.ReparameterizedFrom`` attribute."""
    return f"{scan + ': ' if scan else ''}{protocol.sequence} {protocol.caption()}, {engine} engine"


def _targetProvenance(target: Union[str, Protocol]):
    """The validated Protocol of a target (a preset name or a Protocol) and its provenance (a preset's keeps its name)."""
    from ..io.provenance import Provenance

    if isinstance(target, str):
        found = preset(target)
        return found.protocol, Provenance.of_preset(found)
    return target.validate(), Provenance(target)


def _runToEnd(argv: List[str], command: str) -> None:
    """Run a child and wait; RuntimeError with its one-line error when it fails."""
    code, stderr = jobs.run_batch_process(argv)
    if code != 0:
        raise RuntimeError(jobs.error_line(stderr) or f"{command} failed (exit code {code})")


def _dicomValues(uid: str) -> Dict[str, str]:
    """TR/TE/TI (ms) and ScanningSequence, as text ("" when absent; several values joined by backslashes), in the
    header of the DICOM instance ``uid``, from Slicer's database (:data:`~SyntheticMRILib.io.dicom_tags.DICOM_TAGS`)."""
    import slicer

    database = getattr(slicer, "dicomDatabase", None)
    if database is None:
        return {}
    path = database.fileForInstance(uid)
    return {name: database.fileValue(path, tag) for name, tag in DICOM_TAGS.items()}


# --------------------------------------------------------------------------- Slicer's defaults
def _slicerConfirm(question: str) -> bool:
    import slicer

    return slicer.util.confirmOkCancelDisplay(question, windowTitle="Install Python packages")


def _slicerError(message: str) -> None:
    import slicer

    slicer.util.errorDisplay(message)


def _slicerPipInstall(requirements: str) -> None:
    import slicer

    with slicer.util.WaitCursor():
        slicer.util.pip_install(requirements)


def _pytorchUtilsInstall(requirement: str) -> None:
    """torch through PyTorch Utils (the build for the GPU driver); pip when that extension was removed."""
    try:
        import PyTorchUtils
    except ImportError:
        _slicerPipInstall(requirement)
        return
    # Our dialog was the one confirmation; PyTorch Utils is not to ask again.
    if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=requirement[len("torch"):]) is None:
        raise RuntimeError("PyTorch Utils did not install PyTorch")


def _slicerTemporaryPath() -> str:
    import slicer

    return slicer.app.temporaryPath
