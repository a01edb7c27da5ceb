"""The MRML bridge: the only module of the library that touches Slicer nodes.

Import it lazily (``from SyntheticMRILib.slicer import bridge`` inside a function):
it needs ``slicer`` and ``vtk``, which exist inside the Slicer application and,
without a GUI, in the ``slicer-core`` wheel (real MRML, no Qt). Everything
else in the library works on :class:`~SyntheticMRILib.io.volumes.Volume` objects.

Conventions kept here so that the rest of the library never sees them:

* Slicer is RAS, a :class:`Volume` is LPS (as on disk). Geometry is converted by
  flipping the signs of the first two rows, which is exact: spacing, origin and
  direction survive a round trip bit for bit, oblique and left-handed grids
  included, and nothing is resampled.
* Volume nodes reject int64, float16 and bool scalars; arrays are cast
  (int64 -> int32, bool -> uint8, float16/float64 -> float32) on the way in.
* Label maps become segmentation nodes whose segment IDs equal the FreeSurfer
  label names, with FreeSurfer colors and standard terminology (SNOMED CT,
  DICOM) read from ``Resources/Terminology/labels.csv``. That table is in
  Slicer's color-table CSV format, which Slicer reads as a color table with
  terminology only from 5.10 on; ``labels.ctbl`` beside it is the same numbers,
  names and colors in the ``value name R G B A`` format that Slicer 5.6/5.8 read
  (written from labels.csv by :func:`~SyntheticMRILib.io.labels.write_color_table`;
  a test keeps the two equal; that format reads "_" as a space, so Slicer shows
  CC_Posterior as "CC Posterior"). ``SyntheticMRI.term.json`` is the terminology of
  the CSV as a context for the Terminologies module.
* A volume node with the attribute ``SyntheticMRI.Scale`` (``SCALE_ATTRIBUTE``) holds
  int16 voxels standing for float values ``int16 * scale``: scene files store
  synthetic contrasts that way (half the size of float32 after compression).
  :func:`volume_from_node` applies the scale; new voxels written by
  :func:`node_from_volume` drop it.

Headless use (tests, the command line): :func:`create_scene` builds a scene with
the logics the Slicer application would attach; inside Slicer the default scene
is ``slicer.mrmlScene``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..errors import InputError
from ..io.labels import LABEL_TAG, TERMINOLOGY_CONTEXT, LabelEntry, label_entry, label_table
from ..io.maps import Maps, prepare_maps
from ..io.provenance import PROTOCOL_KEY, PROVENANCE_KEYS, SCALE_KEY, Provenance
from .preview import on_grid, plane_voxels, render_planes, synthesize_planes
from ..physics.protocols import Protocol
from ..resources import resource_path, sample_paths
from ..io.volumes import PathLike, Volume, check_output_file, read_volume

__all__ = [
    "volume_from_node", "node_from_volume", "maps_from_nodes", "segmentation_from_labels",
    "labels_from_segmentation", "save_scene", "load_scene", "write_scene_mrb", "load_sample",
    "create_scene", "label_table", "segment_tag", "LabelEntry", "node_stamps", "world_to_ijk", "slice_to_ras",
    "slice_nodes_showing", "update_visible_slices", "update_visible_reparam", "volumes_table", "node_from_contrast", "PROTOCOL_ATTRIBUTE", "AUTO_NAME_ATTRIBUTE",
    "SCALE_ATTRIBUTE", "SOURCE_ATTRIBUTE", "QuietVTK", "empty_volume_node", "remove_nodes", "rewindow", "show_slices_in_3d",
    "structure_rows", "contrast_provenance", "show_surfaces_in_3d",
]

# Attributes of a synthetic contrast's node: its provenance, the keys and format of io.provenance, the same as a
# file's header fields (SyntheticMRI.Sequence, .TR_ms, .TE_ms, .TI_ms, .TI2_ms, .FlipAngle_deg, .Preset,
# .TissueTable_T, .Version), among them its protocol in one line (SyntheticMRI.Protocol: also the Slicer module's
# mark that live updates may overwrite the node); and the name given to it here, so that its name follows the
# contrast until the user renames it.
PROTOCOL_ATTRIBUTE = PROTOCOL_KEY
AUTO_NAME_ATTRIBUTE = "SyntheticMRI.AutoName"
# A re-parameterized scan's node: what it was made from ("<scan>: se TR 500 TE 10, physics engine"), beside the
# target's provenance; a contrast synthesized from maps has none.
SOURCE_ATTRIBUTE = "SyntheticMRI.ReparameterizedFrom"
# Stored int16 voxels stand for float values int16 * scale (the attribute's text, a Python float repr), as the
# header field of the same name in a file.
SCALE_ATTRIBUTE = SCALE_KEY
_INT16_PEAK = 32767  # the largest magnitude stored; symmetric, so signed contrasts (PSIR, dSIR) keep their zero
_SLICE_VIEWS = ("Red", "Yellow", "Green")  # the singleton slice views of Slicer's standard layouts

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])  # its own inverse
_CASTS = {np.dtype(np.bool_): np.uint8, np.dtype(np.float16): np.float32, np.dtype(np.float64): np.float32}
_INT32 = np.iinfo(np.int32)
_WINDOW_SAMPLE = 1_000_000  # voxels looked at for a window/level; enough for stable percentiles
# Logics of headless scenes: VTK objects must stay referenced from Python or they are freed.
_HEADLESS: Dict[str, tuple] = {}


# ----------------------------------------------------------------------------- scenes
class QuietVTK:
    """Silence VTK error/warning output for a block (VTK macros check the global flag)."""

    def __enter__(self) -> None:
        self._was = vtk.vtkObject.GetGlobalWarningDisplay()
        vtk.vtkObject.GlobalWarningDisplayOff()

    def __exit__(self, *_exc) -> None:
        vtk.vtkObject.SetGlobalWarningDisplay(self._was)


def _cache_directory() -> str:
    path = Path(tempfile.gettempdir()) / "SyntheticMRI-mrml-cache"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _attach_cache_manager(scene: slicer.vtkMRMLScene) -> None:
    """Reading a .mrb unpacks it into the remote cache directory; a bare scene has none."""
    io = scene.GetDataIOManager()
    if io is not None and io.GetCacheManager() is not None and io.GetCacheManager().GetRemoteCacheDirectory():
        return
    cache = slicer.vtkCacheManager()
    cache.SetRemoteCacheDirectory(_cache_directory())
    io = slicer.vtkDataIOManager()
    io.SetCacheManager(cache)
    scene.SetDataIOManager(io)  # the scene keeps both referenced
    scene.SetCacheManager(cache)


def _drop_duplicate_converter_rules() -> None:
    """Each Segmentations logic registers the converter rules again in the global factory; keep one of each."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    seen = set()
    for rule in factory.GetConverterRules():
        if rule.GetClassName() in seen:
            factory.UnregisterConverterRule(rule)
        seen.add(rule.GetClassName())


def create_scene() -> slicer.vtkMRMLScene:
    """A new scene with the logics the Slicer application attaches: application, colors, volumes,
    segmentations (this registers the labelmap <-> closed-surface converters) and terminologies.

    Works with the ``slicer-core`` wheel (tests, command line) and inside Slicer alike.
    """
    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    colors = app.GetColorLogic()
    colors.SetMRMLScene(scene)
    colors.AddDefaultColorNodes()  # display nodes refer to "vtkMRMLColorTableNodeGrey" and friends
    logics = []
    for module, cls in (("Volumes", slicer.vtkSlicerVolumesLogic),
                        ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
                        ("Terminologies", slicer.vtkSlicerTerminologiesModuleLogic)):
        logic = cls()
        logic.SetMRMLApplicationLogic(app)
        with QuietVTK():  # the terminologies logic looks for Slicer's own .term.json files; slicer-core has none
            logic.SetMRMLScene(scene)
        app.SetModuleLogic(module, logic)
        logics.append(logic)
    _drop_duplicate_converter_rules()
    _load_terminology(logics[-1])
    _attach_cache_manager(scene)
    _HEADLESS[scene.GetAddressAsString("vtkMRMLScene")] = (scene, app, colors, logics)
    return scene


def _default_scene(scene: Optional[slicer.vtkMRMLScene] = None) -> slicer.vtkMRMLScene:
    if scene is not None:
        return scene
    if getattr(slicer, "mrmlScene", None) is not None:
        return slicer.mrmlScene
    raise InputError("no MRML scene: outside the Slicer application pass scene=slicer_bridge.create_scene()")


def _terminology_logic(scene: slicer.vtkMRMLScene) -> Optional[slicer.vtkSlicerTerminologiesModuleLogic]:
    """The Terminologies logic serving ``scene``: the application's, or the one create_scene attached."""
    kept = _HEADLESS.get(scene.GetAddressAsString("vtkMRMLScene"))
    if kept is not None:
        return kept[3][-1]
    modules = getattr(slicer, "modules", None)
    if modules is not None and scene is getattr(slicer, "mrmlScene", None) and hasattr(modules, "terminologies"):
        return modules.terminologies.logic()
    return None


def _load_terminology(logic: Optional[slicer.vtkSlicerTerminologiesModuleLogic]) -> None:
    """Make the SyntheticMRI context known to the terminology selector (once per logic)."""
    if logic is None:
        return
    names = vtk.vtkStringArray()
    logic.GetLoadedTerminologyNames(names)
    if TERMINOLOGY_CONTEXT not in {names.GetValue(i) for i in range(names.GetNumberOfValues())}:
        logic.LoadTerminologyFromFile(str(resource_path("Terminology", "SyntheticMRI.term.json")))


# ----------------------------------------------------------------------------- volumes
def _vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(array[row, column]))
    return matrix


def _numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def _world_matrix(node: slicer.vtkMRMLVolumeNode) -> Optional[np.ndarray]:
    """The node's parent-transform-to-world matrix, None if untransformed; non-linear transforms are refused."""
    transform = node.GetParentTransformNode()
    if transform is None:
        return None
    if not transform.IsTransformToWorldLinear():
        raise InputError(f"{node.GetName()}: is under a non-linear transform; harden the transform first")
    matrix = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToWorld(matrix)
    world = _numpy_matrix(matrix)
    return None if np.array_equal(world, np.eye(4)) else world


def _grid_from_node(node: slicer.vtkMRMLVolumeNode) -> Tuple[Tuple[float, ...], Tuple[float, ...], Tuple[float, ...]]:
    """Spacing, origin and direction (LPS) of the node's voxel (0, 0, 0) grid, in world coordinates."""
    image = node.GetImageData()
    extent = image.GetExtent()
    world = _world_matrix(node)
    if world is None and extent[0::2] == (0, 0, 0):
        # The common case, kept free of arithmetic so the round trip is exact.
        directions = vtk.vtkMatrix4x4()
        node.GetIJKToRASDirectionMatrix(directions)
        direction = _LPS_TO_RAS @ _numpy_matrix(directions)[:3, :3]
        origin = _LPS_TO_RAS @ np.array(node.GetOrigin())
        return tuple(node.GetSpacing()), tuple(origin.tolist()), tuple(direction.ravel().tolist())
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = _numpy_matrix(matrix)
    if world is not None:
        ijk_to_ras = world @ ijk_to_ras
    ijk_to_ras[:3, 3] = ijk_to_ras[:3, :3] @ np.array(extent[0::2], float) + ijk_to_ras[:3, 3]
    spacing = np.linalg.norm(ijk_to_ras[:3, :3], axis=0)
    direction = ijk_to_ras[:3, :3] / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-6):
        raise InputError(f"{node.GetName()}: its transform shears or scales the grid unevenly; harden it and resample first")
    return (tuple(spacing.tolist()), tuple((_LPS_TO_RAS @ ijk_to_ras[:3, 3]).tolist()),
            tuple((_LPS_TO_RAS @ direction).ravel().tolist()))


def _array_from_image(image: vtk.vtkImageData) -> np.ndarray:
    """A copy of a single-component vtkImageData as an array indexed [k, j, i]."""
    scalars = image.GetPointData().GetScalars()
    dims = image.GetDimensions()
    return numpy_support.vtk_to_numpy(scalars).reshape(dims[2], dims[1], dims[0]).copy()


def volume_from_node(node: slicer.vtkMRMLVolumeNode) -> Volume:
    """The node's voxels (a copy, indexed [k, j, i]) on its grid, converted exactly from RAS to LPS.

    A linear parent transform is folded into the grid (a non-linear one is refused), so the
    volume sits where Slicer shows the node.
    """
    if node is None:
        raise InputError("no volume selected")
    image = node.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise InputError(f"{node.GetName()}: has no voxels")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(f"{node.GetName()}: has {image.GetNumberOfScalarComponents()} components per voxel; "
                         "expected a scalar volume")
    spacing, origin, direction = _grid_from_node(node)
    array = _array_from_image(image)
    scale = node.GetAttribute(SCALE_ATTRIBUTE)
    if scale is not None:  # stored as scaled integers (see the module notes)
        array = (array * float(scale)).astype(np.float32)
    return Volume(array, spacing, origin, direction)


def _castable(array: np.ndarray, what: str) -> np.ndarray:
    """``array`` in a scalar type volume nodes accept (see the module notes)."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise InputError(f"{what}: is {array.ndim}-D; expected a 3-D volume")
    if array.dtype in _CASTS:
        return array.astype(_CASTS[array.dtype])
    if array.dtype in (np.dtype(np.int64), np.dtype(np.uint64)):
        if array.size and (array.min() < _INT32.min or array.max() > _INT32.max):
            raise InputError(f"{what}: integer values {array.min()}..{array.max()} do not fit a 32-bit volume")
        return array.astype(np.int32)
    if array.dtype.kind not in "biuf":
        raise InputError(f"{what}: voxel type {array.dtype} cannot be shown in Slicer")
    return array


def _image_from_array(array: np.ndarray, image: Optional[vtk.vtkImageData] = None) -> vtk.vtkImageData:
    """A vtkImageData holding a copy of ``array`` ([k, j, i]); ``image`` is reused when its layout matches."""
    array = np.ascontiguousarray(array)
    dims = array.shape[::-1]
    if image is not None and image.GetPointData().GetScalars() is not None and image.GetDimensions() == dims \
            and image.GetExtent()[0::2] == (0, 0, 0) and image.GetNumberOfScalarComponents() == 1:
        target = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
        if target.dtype == array.dtype:  # live preview: copy into the existing buffer
            target[...] = array.ravel()
            image.GetPointData().GetScalars().Modified()
            image.Modified()
            return image
    image = vtk.vtkImageData()
    image.SetDimensions(*dims)
    scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
    scalars.SetName("ImageScalars")
    image.GetPointData().SetScalars(scalars)
    return image


def _set_grid(target: "slicer.vtkMRMLVolumeNode | slicer.vtkOrientedImageData", volume: Volume) -> None:
    """Set spacing, origin and IJK->RAS directions of a volume node or oriented image, exactly."""
    target.SetSpacing(*(float(s) for s in volume.spacing))
    target.SetOrigin(*(_LPS_TO_RAS @ np.asarray(volume.origin, float)).tolist())
    directions = np.eye(4)
    directions[:3, :3] = _LPS_TO_RAS @ np.asarray(volume.direction, float).reshape(3, 3)
    matrix = _vtk_matrix(directions)
    if hasattr(target, "SetIJKToRASDirectionMatrix"):
        target.SetIJKToRASDirectionMatrix(matrix)
    else:
        target.SetDirectionMatrix(matrix)


def _window_level(array: np.ndarray) -> Tuple[float, float]:
    """A window/level over the foreground: from 0 (or the 0.5th percentile of signed data) to the 99.5th."""
    flat = array.ravel()
    flat = flat[:: max(1, flat.size // _WINDOW_SAMPLE)]
    foreground = flat[(flat != 0) & np.isfinite(flat)].astype(np.float64)
    if foreground.size == 0:
        return 1.0, 0.5
    high = float(np.percentile(foreground, 99.5))
    low = 0.0 if foreground.min() >= 0 else float(np.percentile(foreground, 0.5))
    if high <= low:
        high = low + 1.0
    return high - low, (high + low) / 2.0


def node_from_volume(volume: Volume, name: str, node: Optional[slicer.vtkMRMLScalarVolumeNode] = None,
                     scene: Optional[slicer.vtkMRMLScene] = None,
                     window_level: Union[None, str, Tuple[float, float]] = None) -> slicer.vtkMRMLScalarVolumeNode:
    """A scalar volume node holding ``volume`` on exactly its grid; updates ``node`` in place when given.

    The result is placed in world coordinates: a parent transform of ``node`` is removed. A new
    node (or one without display) gets a window/level over its foreground; an existing display
    keeps the user's. ``window_level``: (window, level) to set, or "auto" to recompute it from
    this volume (e.g. after switching to a contrast of another intensity scale).
    """
    array = _castable(volume.array, name or "volume")
    if node is None:
        node = _default_scene(scene).AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    elif name and node.GetName() != name:
        node.SetName(name)
    if node.GetAttribute(SCALE_ATTRIBUTE) is not None:
        # The new voxels are the values themselves; the old window was in stored-integer units.
        node.RemoveAttribute(SCALE_ATTRIBUTE)
        window_level = window_level or "auto"
    was_modifying = node.StartModify()
    _set_grid(node, volume)
    if node.GetParentTransformNode() is not None:
        node.SetAndObserveTransformNodeID(None)
    image = _image_from_array(array, node.GetImageData())
    if image is not node.GetImageData():
        node.SetAndObserveImageData(image)
    else:
        node.Modified()
    node.EndModify(was_modifying)
    display = node.GetDisplayNode()
    if display is None:
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        window_level = window_level or "auto"
    if window_level == "auto":
        window_level = _window_level(array)
    if window_level is not None and hasattr(display, "SetWindowLevel"):
        display.SetAutoWindowLevel(False)
        display.SetWindowLevel(float(window_level[0]), float(window_level[1]))
    return node


def node_from_contrast(volume: Volume, protocol: Protocol, node: Optional[slicer.vtkMRMLScalarVolumeNode] = None,
                       name: Optional[str] = None,
                       scene: Optional[slicer.vtkMRMLScene] = None,
                       provenance: Optional[Provenance] = None,
                       source: Optional[str] = None) -> slicer.vtkMRMLScalarVolumeNode:
    """A synthetic contrast: ``volume``, made with ``protocol``, into ``node`` (a new node when None), which records
    its provenance as attributes (:meth:`Provenance.fields <SyntheticMRILib.io.provenance.Provenance.fields>`: the
    sequence, each parameter, the protocol in one line as ``PROTOCOL_ATTRIBUTE``, the version; ``provenance``
    adds the preset's name and tissue table). Attributes of an earlier contrast in ``node`` are replaced.
    ``source``: what a re-parameterized scan was made from (``SOURCE_ATTRIBUTE``; None for a synthetic contrast).

    A node named here (or an empty one, fresh from "Create new volume") follows the contrast, "Synthetic T1w" ->
    "Synthetic STIR": it takes ``name``, by default "Synthetic" and the sequence. A node the user (re)named keeps
    its name.
    """
    given = node.GetAttribute(AUTO_NAME_ATTRIBUTE) if node is not None else None  # "1" from earlier versions
    auto_name = node is None or node.GetImageData() is None or given in ("1", node.GetName())
    if not auto_name:
        name = node.GetName()
    elif name is None:
        name = f"Synthetic {protocol.sequence.upper()}"
    node = node_from_volume(volume, name, node=node, scene=scene)
    node.SetAttribute(AUTO_NAME_ATTRIBUTE, node.GetName() if auto_name else "")
    for key in (*PROVENANCE_KEYS, SOURCE_ATTRIBUTE):  # e.g. no TI left from an IR when the node now holds a spin echo
        node.RemoveAttribute(key)
    if source is not None:
        node.SetAttribute(SOURCE_ATTRIBUTE, source)
    for key, value in (provenance or Provenance(protocol)).fields().items():
        node.SetAttribute(key, value)
    return node


def maps_from_nodes(t1_node: slicer.vtkMRMLScalarVolumeNode, t2_node: slicer.vtkMRMLScalarVolumeNode,
                    pd_node: slicer.vtkMRMLScalarVolumeNode, units: str = "ms") -> Maps:
    """Checked T1/T2 (ms) and PD (fraction) maps from three volume nodes (see :func:`~SyntheticMRILib.io.maps.prepare_maps`)."""
    return prepare_maps(volume_from_node(t1_node), volume_from_node(t2_node), volume_from_node(pd_node), units)


# ----------------------------------------------------------------------------- slice views (the live preview)
def node_stamps(nodes: Sequence[slicer.vtkMRMLVolumeNode]) -> tuple:
    """IDs and modification times of volume nodes and their voxels: a cache key that changes when they do."""
    return tuple((node.GetID(), node.GetMTime(), node.GetImageData().GetMTime() if node.GetImageData() else 0)
                 for node in nodes)


def world_to_ijk(node: slicer.vtkMRMLVolumeNode) -> Optional[np.ndarray]:
    """The 4x4 matrix from world (RAS) to the node's IJK indices, through a linear parent transform;
    None under a non-linear transform (no matrix says where its voxels are)."""
    matrix = vtk.vtkMatrix4x4()
    node.GetRASToIJKMatrix(matrix)
    ras_to_ijk = _numpy_matrix(matrix)
    transform = node.GetParentTransformNode()
    if transform is None:
        return ras_to_ijk
    if not transform.IsTransformToWorldLinear():
        return None
    transform.GetMatrixTransformFromWorld(matrix)
    return ras_to_ijk @ _numpy_matrix(matrix)


def slice_to_ras(slice_node: slicer.vtkMRMLSliceNode) -> np.ndarray:
    """The 4x4 SliceToRAS matrix of a slice view: its plane's axes, normal and origin in world coordinates."""
    return _numpy_matrix(slice_node.GetSliceToRAS())


def slice_nodes_showing(volume_node: slicer.vtkMRMLVolumeNode) -> List[slicer.vtkMRMLSliceNode]:
    """The slice views of the current layout that show ``volume_node`` as background or foreground.

    Views hidden from the layout (another layout, a maximized view) are left out; without a GUI
    (``--no-main-window``, slicer-core) no view is laid out and the list is empty.
    """
    scene = volume_node.GetScene()
    if scene is None:
        return []
    showing = set()
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")  # one per view, matched by layout name
    for index in range(composites.GetNumberOfItems()):
        composite = composites.GetItemAsObject(index)
        if composite.GetLayoutName() and volume_node.GetID() in (composite.GetBackgroundVolumeID(),
                                                                  composite.GetForegroundVolumeID()):
            showing.add(composite.GetLayoutName())
    slice_nodes = scene.GetNodesByClass("vtkMRMLSliceNode")
    found = []
    for index in range(slice_nodes.GetNumberOfItems()):
        node = slice_nodes.GetItemAsObject(index)
        if node.GetLayoutName() in showing and node.IsViewVisibleInLayout():  # mapped in the layout and visible
            found.append(node)
    return found


def _visible_planes(grid: Volume, output_node: slicer.vtkMRMLScalarVolumeNode,
                    slice_nodes: Optional[Sequence[slicer.vtkMRMLSliceNode]]):
    """``(voxels, planes)`` of a live preview into ``output_node``: a writeable view of its voxels and the planes
    (:func:`~SyntheticMRILib.slicer.preview.plane_voxels`) of ``slice_nodes`` (default: :func:`slice_nodes_showing`);
    None when the output cannot take one: no float voxels (e.g. a contrast stored as scaled int16, whose signal
    values would be truncated) or not on ``grid``."""
    image = output_node.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None or image.GetNumberOfScalarComponents() != 1:
        return None
    array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(image.GetDimensions()[::-1])
    if array.dtype.kind != "f" or output_node.GetAttribute(SCALE_ATTRIBUTE) is not None:
        return None
    ras_to_ijk = world_to_ijk(output_node)
    if image.GetExtent()[0::2] != (0, 0, 0) or not on_grid(ras_to_ijk, array.shape, grid):
        return None
    if slice_nodes is None:
        slice_nodes = slice_nodes_showing(output_node)
    return array, [plane_voxels(slice_to_ras(node), ras_to_ijk, array.shape) for node in slice_nodes]


def _voxels_modified(output_node: slicer.vtkMRMLScalarVolumeNode) -> None:
    output_node.GetImageData().GetPointData().GetScalars().Modified()
    output_node.GetImageData().Modified()
    output_node.Modified()


def update_visible_slices(maps: Maps, tensors: Sequence, protocol: Protocol, output_node: slicer.vtkMRMLScalarVolumeNode,
                          slice_nodes: Optional[Sequence[slicer.vtkMRMLSliceNode]] = None) -> int:
    """The live preview: synthesize ``protocol`` into ``output_node`` in place, only where slice views show it.

    ``maps`` and their ``tensors`` (T1, T2, PD; see :class:`~SyntheticMRILib.slicer.preview.MapCache`) must lie on the
    output's grid, as after a whole-volume synthesis into it, and the output's voxels must be floats (not, e.g., a
    contrast stored as scaled int16); otherwise nothing is written (only a whole-volume update can fix that).
    ``slice_nodes`` default to :func:`slice_nodes_showing`. Returns how many views were updated; the voxels of
    each come from :func:`~SyntheticMRILib.slicer.preview.synthesize_planes`.
    """
    found = _visible_planes(maps.grid, output_node, slice_nodes)
    if found is None:
        return 0
    updated = synthesize_planes(*tensors, protocol, found[1], found[0])
    if updated:
        _voxels_modified(output_node)
    return updated


def update_visible_reparam(scan_maps, target: Protocol, output_node: slicer.vtkMRMLScalarVolumeNode,
                           slice_nodes: Optional[Sequence[slicer.vtkMRMLSliceNode]] = None) -> int:
    """The live preview of a re-parameterized scan: ``scan_maps`` (a :class:`~SyntheticMRILib.models.reparam.ScanMaps`)
    rendered at ``target`` into ``output_node`` in place, only where slice views show it (``slice_nodes``, default
    :func:`slice_nodes_showing`), with :func:`~SyntheticMRILib.slicer.preview.render_planes`. The output must lie
    on the scan's grid with float voxels, as after a whole-volume render into it; otherwise nothing is written.
    Returns how many views were updated."""
    found = _visible_planes(scan_maps.image, output_node, slice_nodes)
    if found is None:
        return 0
    updated = render_planes(scan_maps, target, found[1], found[0])
    if updated:
        _voxels_modified(output_node)
    return updated


# ----------------------------------------------------------------------------- segmentations
def _label_array(labels: Volume) -> np.ndarray:
    array = np.asarray(labels.array)
    if array.ndim != 3 or array.dtype.kind not in "biu":
        raise InputError(f"labels must be a 3-D integer volume, got {array.ndim}-D {array.dtype}")
    if array.size and array.min() < 0:
        raise InputError(f"labels must be >= 0 (found {array.min()})")
    return array.astype(np.int16 if array.max(initial=0) <= np.iinfo(np.int16).max else np.int32)


def _present_labels(array: np.ndarray) -> List[int]:
    """The non-zero labels in ``array``, ascending (bincount: far faster than np.unique on 256^3)."""
    if array.size == 0:
        return []
    if int(array.max()) < 1_000_000:
        return [int(v) for v in np.flatnonzero(np.bincount(array.ravel())) if v != 0]
    return [int(v) for v in np.unique(array) if v != 0]


def _geometry_string(volume: Volume) -> str:
    """Slicer's serialized image geometry (used as the segmentation's reference geometry)."""
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(*volume.array.shape[::-1])
    _set_grid(image, volume)
    return slicer.vtkSegmentationConverter.SerializeImageGeometry(image)


def _set_source_representation(segmentation: slicer.vtkSegmentation, name: str) -> None:
    # Slicer 5.4 renamed "master" to "source" representation; keep both spellings working.
    if hasattr(segmentation, "SetSourceRepresentationName"):
        segmentation.SetSourceRepresentationName(name)
    else:
        segmentation.SetMasterRepresentationName(name)


def segmentation_from_labels(labels: Volume, reference_node: Optional[slicer.vtkMRMLVolumeNode] = None,
                             name: str = "Segmentation",
                             scene: Optional[slicer.vtkMRMLScene] = None) -> slicer.vtkMRMLSegmentationNode:
    """A segmentation node with one segment per label present in ``labels``.

    Segment IDs and names are the FreeSurfer names (e.g. ``Left-Thalamus``), colors the FreeSurfer
    colors, and each segment carries its SNOMED CT / DICOM terminology and its label number (tag
    ``SyntheticMRI.FreeSurferLabel``). All segments share one labelmap holding the original label
    values, so nothing is renumbered or resampled. The reference geometry is ``reference_node``'s
    grid (and the segmentation joins its subject-hierarchy folder) or else the labels' own grid.
    """
    array = _label_array(labels)
    if reference_node is not None:
        scene = reference_node.GetScene()
    scene = _default_scene(scene)
    grid = labels.with_array(array)
    shared = slicer.vtkOrientedImageData()
    shared.ShallowCopy(_image_from_array(array))
    _set_grid(shared, grid)

    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    segmentation = node.GetSegmentation()
    representation = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    was_modifying = node.StartModify()
    _set_source_representation(segmentation, representation)
    if reference_node is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
    else:
        segmentation.SetConversionParameter(
            slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(), _geometry_string(grid))
    for value in _present_labels(array):
        entry = label_entry(value)
        segment = slicer.vtkSegment()
        segment.SetName(entry.name)
        segment.SetColor(*(c / 255.0 for c in entry.color))
        segment.AddRepresentation(representation, shared)
        segment.SetLabelValue(value)
        if entry.terminology:
            segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), entry.terminology)
        segment.SetTag(LABEL_TAG, str(value))
        segmentation.AddSegment(segment, entry.name)  # the ID is the name (Slicer 5.9+ would pick a random ID)
    node.EndModify(was_modifying)
    _load_terminology(_terminology_logic(scene))
    if reference_node is not None:
        _join_subject_hierarchy_folder(node, reference_node)
    return node


def volumes_table(volumes_ml: Mapping[str, float], name: str = "Structure volumes",
                  scene: Optional[slicer.vtkMRMLScene] = None) -> slicer.vtkMRMLTableNode:
    """A table node with one row per structure: its name, FreeSurfer label and volume (ml)."""
    scene = _default_scene(scene)
    by_name = {entry.name: value for value, entry in label_table().items()}
    columns = (vtk.vtkStringArray(), vtk.vtkIntArray(), vtk.vtkDoubleArray())
    for array, title in zip(columns, ("Structure", "Label", "Volume (ml)")):
        array.SetName(title)
    for structure, ml in volumes_ml.items():
        columns[0].InsertNextValue(structure)
        columns[1].InsertNextValue(int(by_name.get(structure, 0)))
        columns[2].InsertNextValue(round(float(ml), 3))
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    for array in columns:
        node.AddColumn(array)
    node.SetUseColumnTitleAsColumnHeader(True)
    return node


def structure_rows(segmentation_node: slicer.vtkMRMLSegmentationNode,
                   table_node: slicer.vtkMRMLTableNode) -> List[Dict[str, object]]:
    """One row per structure of a :func:`volumes_table`: ``name``, ``ml`` and the segment's ``colour`` (#rrggbb)."""
    segmentation = segmentation_node.GetSegmentation()
    colours = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        colours[segment.GetName()] = "#" + "".join(f"{round(255 * c):02x}" for c in segment.GetColor())
    names = [table_node.GetCellText(row, 0) for row in range(table_node.GetNumberOfRows())]
    return [dict(name=name, ml=float(table_node.GetCellText(row, 2)), colour=colours.get(name, "#808080"))
            for row, name in enumerate(names)]


def _join_subject_hierarchy_folder(node: slicer.vtkMRMLNode, reference_node: slicer.vtkMRMLNode) -> None:
    """Put ``node`` in the same subject-hierarchy folder (patient/study) as ``reference_node``."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())
    if hierarchy is None:
        return
    reference = hierarchy.GetItemByDataNode(reference_node)
    if not reference:
        return
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, hierarchy.GetItemParent(reference))
    else:  # without Slicer's GUI (slicer-core) new nodes get no subject-hierarchy item by themselves
        hierarchy.CreateItem(hierarchy.GetItemParent(reference), node)


def segment_tag(segment: slicer.vtkSegment, tag: str) -> str:
    """The value of a segment tag, "" if it has none (the wrapped C++ getter returns it by reference)."""
    value = vtk.reference("")
    return str(value) if segment.GetTag(tag, value) else ""


def _segment_label_values(segmentation: slicer.vtkSegmentation, segment_ids: Sequence[str]) -> List[int]:
    """FreeSurfer numbers of the segments: their tag, else their name in the table, else new numbers."""
    by_name = {entry.name: value for value, entry in label_table().items()}
    values: List[Optional[int]] = []
    for segment_id in segment_ids:
        segment = segmentation.GetSegment(segment_id)
        tagged = segment_tag(segment, LABEL_TAG)
        values.append(int(tagged) if tagged.strip().isdigit() else by_name.get(segment.GetName()))
    next_free = max([v for v in values if v is not None] + [max(label_table(), default=0)]) + 1
    result = []
    for value in values:  # segments drawn by the user get numbers above the table's
        if value is None:
            value, next_free = next_free, next_free + 1
        result.append(value)
    return result


def labels_from_segmentation(segmentation_node: slicer.vtkMRMLSegmentationNode,
                             reference_node: slicer.vtkMRMLVolumeNode) -> Volume:
    """The segmentation as a FreeSurfer-numbered label volume on ``reference_node``'s grid.

    Each segment gets its label number (see :func:`segmentation_from_labels`); where segments
    overlap, the later one wins, as in Slicer's own export.
    """
    if segmentation_node is None or reference_node is None or reference_node.GetImageData() is None:
        raise InputError("a segmentation and a reference volume with voxels are needed")
    reference = volume_from_node(reference_node)
    segmentation = segmentation_node.GetSegmentation()
    segment_ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    values = _segment_label_values(segmentation, segment_ids)
    dtype = np.int16 if max(values, default=0) <= np.iinfo(np.int16).max else np.int32
    if not segment_ids:
        return reference.with_array(np.zeros(reference.array.shape, dtype))
    ids = vtk.vtkStringArray()
    labels = vtk.vtkIntArray()
    for segment_id, value in zip(segment_ids, values):
        ids.InsertNextValue(segment_id)
        labels.InsertNextValue(value)
    segmentation_node.CreateBinaryLabelmapRepresentation()  # no-op unless segments exist only as surfaces
    merged = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GenerateMergedLabelmapInReferenceGeometry(
        segmentation_node, reference_node, ids, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, merged, labels)
    merged_to_ras, reference_to_ras = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    merged.GetImageToWorldMatrix(merged_to_ras)
    reference_node.GetIJKToRASMatrix(reference_to_ras)  # both in the reference node's own coordinates
    if merged.GetPointData().GetScalars() is None or merged.GetDimensions() != reference.array.shape[::-1] \
            or not np.allclose(_numpy_matrix(merged_to_ras), _numpy_matrix(reference_to_ras), atol=1e-6):
        raise InputError(f"{segmentation_node.GetName()}: could not be exported on the grid of {reference_node.GetName()}")
    return reference.with_array(_array_from_image(merged).astype(dtype))


# ----------------------------------------------------------------------------- nodes of an application's scene
def empty_volume_node(scene: slicer.vtkMRMLScene, name: str) -> slicer.vtkMRMLScalarVolumeNode:
    """A scalar volume node without voxels, for :func:`node_from_contrast` to fill (it then follows the contrast's name)."""
    return scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)


def remove_nodes(nodes: Sequence[Optional[slicer.vtkMRMLNode]]) -> None:
    """Take nodes (and their display and storage nodes) out of their scenes; None and removed nodes are skipped."""
    for node in nodes:
        if node is not None and node.GetScene() is not None:
            node.GetScene().RemoveNode(node)


def rewindow(node: slicer.vtkMRMLScalarVolumeNode) -> None:
    """Window/level the volume once, over its current voxels, and keep that window (a new contrast's range)."""
    display = node.GetDisplayNode()
    if display is not None:
        display.AutoWindowLevelOn()
        display.AutoWindowLevelOff()


def show_slices_in_3d(scene: slicer.vtkMRMLScene) -> None:
    """The slice views' planes in the 3-D views, as Slicer's eye button on each view does."""
    nodes = scene.GetNodesByClass("vtkMRMLSliceNode")
    for index in range(nodes.GetNumberOfItems()):
        nodes.GetItemAsObject(index).SetSliceVisible(True)


def show_surfaces_in_3d(segmentation_node: slicer.vtkMRMLSegmentationNode) -> None:
    """The segments as closed surfaces, which 3-D views show (slice views show the labels either way)."""
    segmentation_node.CreateClosedSurfaceRepresentation()


def contrast_provenance(node: slicer.vtkMRMLScalarVolumeNode) -> Optional[Provenance]:
    """The provenance :func:`node_from_contrast` stored on ``node``, or None for a volume it did not make."""
    return Provenance.from_fields({key: node.GetAttribute(key) for key in PROVENANCE_KEYS if node.GetAttribute(key) is not None})


# ----------------------------------------------------------------------------- scene files
def _check_mrb(path: PathLike) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".mrb":
        raise InputError(f"{path}: a Slicer scene bundle must end in .mrb")
    return path


def _messages() -> Optional[slicer.vtkMRMLMessageCollection]:
    """A collector for MRML's user messages (Slicer >= 5.2; older versions only log them)."""
    return slicer.vtkMRMLMessageCollection() if hasattr(slicer, "vtkMRMLMessageCollection") else None


def _text(messages: Optional[slicer.vtkMRMLMessageCollection]) -> str:
    text = messages.GetAllMessagesAsString().strip() if messages is not None else ""
    return text or "see the application log"


def save_scene(path: PathLike, scene: Optional[slicer.vtkMRMLScene] = None) -> Path:
    """Write ``scene`` as a ``.mrb`` bundle (volumes, segmentations, display settings); replaces ``path``."""
    path = _check_mrb(path)
    scene = _default_scene(scene)
    path.parent.mkdir(parents=True, exist_ok=True)
    volumes = scene.GetNodesByClass("vtkMRMLVolumeNode")
    for index in range(volumes.GetNumberOfItems()):
        node = volumes.GetItemAsObject(index)
        storage = node.GetStorageNode()
        if storage is None and node.AddDefaultStorageNode():
            storage = node.GetStorageNode()
        if storage is not None and hasattr(storage, "SetForceRightHandedIJKCoordinateSystem"):
            # Slicer >= 5.7 would otherwise flip a left-handed grid on reload (same anatomy, other
            # voxel order); this keeps the grid the volume was computed on.
            storage.SetForceRightHandedIJKCoordinateSystem(False)
    messages = _messages()  # what goes wrong is collected here; VTK's own chatter (a line per zipped file) is not shown
    with QuietVTK():
        written = scene.WriteToMRB(str(path), None, messages) if messages is not None else scene.WriteToMRB(str(path))
    if not written:
        raise InputError(f"{path}: could not be written ({_text(messages)})")
    return path


def load_scene(path: PathLike, scene: slicer.vtkMRMLScene, clear: bool = False) -> Dict[str, slicer.vtkMRMLNode]:
    """Read a ``.mrb`` into ``scene``; returns its volume and segmentation nodes by name."""
    path = _check_mrb(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    _attach_cache_manager(scene)
    messages = _messages()
    read = scene.ReadFromMRB(str(path), clear, messages) if messages is not None else scene.ReadFromMRB(str(path), clear)
    if not read:
        raise InputError(f"{path}: could not be read ({_text(messages)})")
    nodes: Dict[str, slicer.vtkMRMLNode] = {}
    for cls in ("vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode"):
        collection = scene.GetNodesByClass(cls)
        for index in range(collection.GetNumberOfItems()):
            node = collection.GetItemAsObject(index)
            nodes[node.GetName()] = node
    return nodes


def _scaled_int16(array: np.ndarray, what: str) -> Tuple[np.ndarray, float]:
    """``array`` as int16 and the scale with ``array ~ int16 * scale``: the largest magnitude maps to 32767 and
    every value is rounded to the nearest multiple of the scale (error <= scale / 2)."""
    values = np.asarray(array, np.float64)  # float64: the division rounds once, at rint
    peak = float(np.abs(values).max(initial=0.0))
    if not np.isfinite(peak):
        raise InputError(f"{what}: has non-finite values; cannot be stored as scaled integers")
    scale = peak / _INT16_PEAK if peak > 0 else 1.0
    return np.rint(values / scale).astype(np.int16), scale


def _show_in_slice_views(scene: slicer.vtkMRMLScene, background: slicer.vtkMRMLVolumeNode,
                         focus_lps: Optional[Sequence[float]]) -> None:
    """Store what Slicer restores on loading a scene: a four-up layout (layout node), the Red/Yellow/Green slice
    views (slice nodes, fitted to ``background`` and through ``focus_lps``) and what they show (composite nodes).

    All of them are singletons: on import Slicer copies their content into its own nodes of the same singleton
    tag and re-points their references to the loaded nodes (vtkMRMLScene::AddNodeNoNotify), so the scene opens
    as stored; after loading, each slice view resizes its slice node to the widget, keeping the field of view
    vertically. The nodes are made by the logics that make them in Slicer, with Slicer's default orientations.
    """
    application = _HEADLESS[scene.GetAddressAsString("vtkMRMLScene")][1]
    layout = slicer.vtkMRMLLayoutLogic()  # adds the layout node and the views of the chosen layout
    layout.SetMRMLApplicationLogic(application)
    layout.SetMRMLScene(scene)
    layout.GetLayoutNode().SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
    focus_ras = None if focus_lps is None else _LPS_TO_RAS @ np.asarray(focus_lps, float)
    for name in _SLICE_VIEWS:
        view = slicer.vtkMRMLSliceLogic()  # makes the view's composite node (layout name and singleton tag: name)
        view.SetMRMLApplicationLogic(application)
        view.SetMRMLScene(scene)
        view.SetSliceNode(scene.GetSingletonNode(name, "vtkMRMLSliceNode"))
        view.GetSliceCompositeNode().SetBackgroundVolumeID(background.GetID())
        view.FitSliceToAll()
        if focus_ras is not None:  # move the plane along its normal only: the view stays centred on the volume
            view.GetSliceNode().JumpSliceByOffsetting(*focus_ras.tolist())
        view.SetMRMLScene(None)
    # The 3-D view keeps the viewer's own settings (background, box...): only slice views are stored.
    for node in [scene.GetNodesByClass("vtkMRMLViewNode").GetItemAsObject(i)
                 for i in range(scene.GetNumberOfNodesByClass("vtkMRMLViewNode"))]:
        scene.RemoveNode(node)
    layout.SetMRMLScene(None)
    selection = application.GetSelectionNode()
    if selection is not None:  # modules offer the active volume first
        selection.SetActiveVolumeID(background.GetID())


def write_scene_mrb(path: PathLike, volumes: Mapping[str, Volume], segmentations: Mapping[str, Volume] = {},
                    overwrite: bool = False, *, scaled: Sequence[str] = (),
                    attributes: Mapping[str, Mapping[str, str]] = {}, background: Optional[str] = None,
                    visible_segmentations: Optional[Sequence[str]] = None,
                    focus_lps: Optional[Sequence[float]] = None) -> Path:
    """Write a standalone Slicer scene: each of ``volumes`` (maps, contrasts) as a scalar volume node
    named by its key, with a window/level over its foreground, and each of ``segmentations`` (label maps)
    as a segmentation node named by its key.

    ``scaled``: names of volumes stored as int16 with the scale in ``SCALE_ATTRIBUTE`` (float = int16 * scale,
    scale = largest magnitude / 32767, error <= scale / 2): for weighted images, whose float32 noise-like low
    bits would double the file; quantitative maps are left out and stored exactly. ``attributes``: node
    attributes by volume name (e.g. a contrast's protocol). ``background``: the volume the Red, Yellow and
    Green slice views of a four-up layout show when Slicer opens the file (default: the first volume), cut
    through ``focus_lps`` (LPS mm; default: the volume's centre). ``visible_segmentations``: the segmentations
    shown (default: all).

    Refuses to replace an existing file unless ``overwrite``.
    """
    path = check_output_file(_check_mrb(path), overwrite)
    unknown = [name for name in [*scaled, *attributes, *([background] if background else [])] if name not in volumes]
    unknown += [name for name in (visible_segmentations or ()) if name not in segmentations]
    if unknown:
        raise InputError(f"{path}: no volume or segmentation named {', '.join(map(repr, unknown))} to store")
    scene = create_scene()
    try:
        nodes = {}
        for name, volume in volumes.items():
            if name in scaled:
                voxels, scale = _scaled_int16(volume.array, name)
                nodes[name] = node_from_volume(volume.with_array(voxels), name, scene=scene)
                nodes[name].SetAttribute(SCALE_ATTRIBUTE, repr(scale))  # repr: the float back exactly
            else:
                nodes[name] = node_from_volume(volume, name, scene=scene)
            for key, value in attributes.get(name, {}).items():
                nodes[name].SetAttribute(key, value)
        for name, labels in segmentations.items():
            reference = next((nodes[n] for n, v in volumes.items() if v.same_grid(labels)), None)
            node = segmentation_from_labels(labels, reference, name, scene=scene)
            node.GetDisplayNode().SetVisibility(visible_segmentations is None or name in visible_segmentations)
        if nodes:
            _show_in_slice_views(scene, nodes[background or next(iter(nodes))], focus_lps)
        return save_scene(path, scene)
    finally:
        _HEADLESS.pop(scene.GetAddressAsString("vtkMRMLScene"), None)
        scene.Clear(True)


def load_sample(scene: Optional[slicer.vtkMRMLScene] = None) -> Dict[str, slicer.vtkMRMLNode]:
    """Load the bundled sample into ``scene``: T1 (ms), T2 (ms) and PD (fraction) map nodes and a
    segmentation of its FreeSurfer labels. Returns ``{"t1", "t2", "pd", "segmentation"}`` -> node."""
    scene = _default_scene(scene)
    names = {"t1": "Sample T1 map (ms)", "t2": "Sample T2 map (ms)", "pd": "Sample PD map"}
    nodes: Dict[str, slicer.vtkMRMLNode] = {}
    for key, name in names.items():
        nodes[key] = node_from_volume(read_volume(sample_paths()[key]), name, scene=scene)
    labels = read_volume(sample_paths()["labels"])
    nodes["segmentation"] = segmentation_from_labels(labels, nodes["t1"], "Sample labels", scene=scene)
    return nodes
