"""The Slicer module and the extension packaging, checked without the Slicer application.

The module file cannot be imported outside Slicer (it needs ScriptedLoadableModule,
parameterNodeWrapper, qt), so most checks read it: its syntax and module-level imports,
its ``self.ui`` names against the .ui file, its copies of the library's tables. Its pure
helpers are compiled on their own from the source. At the end, the logic class and the module's
own SyntheticMRITest run against real MRML (the slicer-core wheel) with the GUI-only Slicer
modules stubbed, and the CMake files are configured and installed against a stub Slicer, where
cmake is available. The preview's geometry and its library functions: test_preview.py.
"""
from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import types
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from SyntheticMRILib.devices import DEVICES
from SyntheticMRILib.maps import UNITS
from SyntheticMRILib.protocols import PRESETS, SEQUENCES
from SyntheticMRILib.volumes import Volume
from test_batch_process import big_study, write_study  # noqa: F401  (big_study: a fixture)
from test_preview import DIRECTIONS, oblique_plane, shown_voxels, slice_to_ras

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "SyntheticMRI" / "SyntheticMRI.py"
UI = ROOT / "SyntheticMRI" / "Resources" / "UI" / "SyntheticMRI.ui"
MODULE_CMAKE = ROOT / "SyntheticMRI" / "CMakeLists.txt"
EXTENSION_CMAKE = ROOT / "CMakeLists.txt"
LIBRARY = ROOT / "SyntheticMRILib"
ICONS = (ROOT / "SyntheticMRI.png", ROOT / "SyntheticMRI" / "Resources" / "Icons" / "SyntheticMRI.png")
REPOSITORY = "SlicerSyntheticMRI/SlicerSyntheticMRI"

SOURCE = MODULE.read_text(encoding="utf-8")
TREE = ast.parse(SOURCE)
UI_ROOT = ET.parse(UI).getroot()

# Modules the Slicer module may import at import time: the standard library and what Slicer provides
# without any download. torch, numpy, SyntheticMRILib & co. load inside methods, after the install dialog.
GUI_MODULES = {"qt", "ctk", "vtk", "slicer"}
MRML_MODULES = {"qt", "ctk", "slicer", "vtk"}  # what the library keeps to slicer_bridge.py
INPUT_WIDGETS = {"ctkSliderWidget", "qMRMLNodeComboBox", "QComboBox", "QPushButton", "QCheckBox", "ctkPathLineEdit", "QListWidget"}
# The signal each kind of input widget the module reads must be connected to (the rest are read when a button is pressed).
WIRED_SIGNALS = {"QPushButton": "clicked(bool)", "ctkPathLineEdit": "currentPathChanged(QString)",
                 "QListWidget": "itemSelectionChanged()"}


# --------------------------------------------------------------------------- helpers
def module_level_nodes(tree: ast.Module):
    """Statements executed at import time: everything except function bodies (class bodies run)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def imported_roots(nodes) -> set:
    roots = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def literal(name: str):
    """The value of a module-level ``NAME = <literal>`` in the module file."""
    for node in TREE.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} is not a module-level literal of {MODULE.name}")


def pure_namespace() -> dict:
    """The module's constants and pure helper functions, compiled without its imports."""
    wanted = (ast.Assign, ast.FunctionDef)
    body = [node for node in TREE.body if isinstance(node, wanted) and not (isinstance(node, ast.FunctionDef) and node.decorator_list)]
    namespace: dict = {}
    header = "from typing import Dict, List, Optional, Sequence, Tuple\n"
    exec(compile(header, str(MODULE), "exec"), namespace)
    exec(compile(ast.Module(body=body, type_ignores=[]), str(MODULE), "exec"), namespace)
    return namespace


def parameter_fields() -> dict:
    """name -> annotation source of the @parameterNodeWrapper class."""
    cls = next(n for n in TREE.body if isinstance(n, ast.ClassDef) and n.name == "SyntheticMRIParameterNode")
    assert any(ast.unparse(d) == "parameterNodeWrapper" for d in cls.decorator_list)
    return {n.target.id: ast.unparse(n.annotation) for n in cls.body if isinstance(n, ast.AnnAssign)}


def parameter_defaults() -> dict:
    cls = next(n for n in TREE.body if isinstance(n, ast.ClassDef) and n.name == "SyntheticMRIParameterNode")
    return {n.target.id: ast.literal_eval(n.value) for n in cls.body if isinstance(n, ast.AnnAssign) and n.value is not None}


def ui_widgets() -> dict:
    """objectName -> element of every widget in the .ui file."""
    return {w.get("name"): w for w in UI_ROOT.iter("widget")}


def ui_property(widget, name: str, stdset: bool = True):
    for prop in widget.findall("property"):
        if prop.get("name") == name and (stdset or prop.get("stdset") == "0"):
            return next(iter(prop)).text
    return None


def bound_parameters() -> dict:
    """SlicerParameterName -> widget element."""
    return {
        ui_property(w, "SlicerParameterName", stdset=False): w
        for w in ui_widgets().values()
        if ui_property(w, "SlicerParameterName", stdset=False)
    }


def ui_references() -> set:
    return {
        node.attr
        for node in ast.walk(TREE)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "ui"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "self"
    }


def cmake_list(text: str, variable: str) -> list:
    match = re.search(rf"set\(\s*{variable}\s+(.*?)\)", text, re.S)
    assert match, f"set({variable} ...) not found"
    return [item for item in match.group(1).split() if not item.startswith("#")]


def cmake_variable(text: str, variable: str) -> str:
    match = re.search(rf'set\(\s*{variable}\s+"((?:[^"\\]|\\.)*)"', text, re.S)
    assert match, f"{variable} is not set to a quoted string"
    return match.group(1)


def png_size(path: Path) -> tuple:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def packaged_python_files() -> list:
    return [MODULE] + sorted(LIBRARY.glob("*.py"))


# --------------------------------------------------------------------------- the module file
def test_module_compiles_for_python_3_9(tmp_path):
    import py_compile

    py_compile.compile(str(MODULE), cfile=str(tmp_path / "SyntheticMRI.pyc"), doraise=True)
    ast.parse(SOURCE, feature_version=(3, 9))


def test_module_imports_nothing_heavy_at_import_time():
    roots = imported_roots(module_level_nodes(TREE))
    stdlib = set(sys.stdlib_module_names)
    heavy = sorted(root for root in roots if root not in stdlib and root not in GUI_MODULES)
    assert not heavy, f"imported at module level: {heavy}; import them inside the methods that need them"
    assert "__future__" not in roots, "postponed annotations would hide the parameterNodeWrapper types"


def test_module_has_the_four_classes_and_a_parameter_node():
    classes = {n.name: [ast.unparse(b) for b in n.bases] for n in TREE.body if isinstance(n, ast.ClassDef)}
    assert classes["SyntheticMRI"] == ["ScriptedLoadableModule"]
    assert classes["SyntheticMRIWidget"][0] == "ScriptedLoadableModuleWidget"
    assert classes["SyntheticMRILogic"] == ["ScriptedLoadableModuleLogic"]
    assert classes["SyntheticMRITest"] == ["ScriptedLoadableModuleTest"]
    assert "SyntheticMRIParameterNode" in classes


def test_module_notes_where_long_work_runs():
    assert "Long work runs out of process via PythonSlicer (SyntheticMRILib.batch" in SOURCE


# --------------------------------------------------------------------------- the .ui file
def test_ui_is_a_qmrmlwidget_with_the_six_sections():
    assert UI_ROOT.tag == "ui"
    top = UI_ROOT.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == UI_ROOT.findtext("class")
    sections = [ui_property(w, "text") for w in UI_ROOT.iter("widget") if w.get("class") == "ctkCollapsibleButton"]
    assert sections == ["Inputs", "Contrast", "Output", "Subcortical segmentation", "Batch", "Advanced"]


def test_ui_object_names_are_unique_and_custom_widgets_declared():
    names = [w.get("name") for w in UI_ROOT.iter("widget")] + [l.get("name") for l in UI_ROOT.iter("layout")]
    assert len(names) == len(set(names))
    declared = {c.findtext("class") for c in UI_ROOT.iter("customwidget")}
    used = {w.get("class") for w in UI_ROOT.iter("widget") if not w.get("class").startswith("Q")}
    assert used <= declared, f"custom widgets used but not declared: {used - declared}"


def test_ui_node_selectors_get_the_scene_and_take_scalar_volumes():
    root_name = UI_ROOT.find("widget").get("name")
    connected = {
        c.findtext("receiver")
        for c in UI_ROOT.iter("connection")
        if c.findtext("sender") == root_name
        and c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    selectors = [w for w in ui_widgets().values() if w.get("class") == "qMRMLNodeComboBox"]
    assert {w.get("name") for w in selectors} == {"t1Selector", "t2Selector", "pdSelector", "outputSelector"}
    for selector in selectors:
        assert selector.get("name") in connected, f"{selector.get('name')} never receives the scene"
        types_ = [s.text for s in selector.find("property[@name='nodeTypes']").iter("string")]
        assert types_ == ["vtkMRMLScalarVolumeNode"]
        assert ui_property(selector, "showChildNodeTypes") == "false"  # no label maps
    output = ui_widgets()["outputSelector"]
    assert ui_property(output, "noneEnabled") == "true" and ui_property(output, "addEnabled") == "true"
    assert ui_property(output, "noneDisplay") == "Create new volume"


def test_ui_sliders_do_not_track():
    """The live preview listens to valueIsChanging, which ctkSliderWidget emits only without tracking."""
    sliders = [w for w in ui_widgets().values() if w.get("class") == "ctkSliderWidget"]
    assert {w.get("name") for w in sliders} == {"trSlider", "teSlider", "tiSlider", "ti2Slider", "flipSlider"}
    for slider in sliders:
        assert ui_property(slider, "tracking") == "false", slider.get("name")
    assert SOURCE.count('"valueIsChanging(double)"') == 1


def test_every_ui_name_the_module_uses_exists():
    missing = ui_references() - set(ui_widgets())
    assert not missing, f"self.ui names missing from the .ui: {sorted(missing)}"


def ui_connections() -> dict:
    """objectName -> the signals the module connects with ``self.ui.<name>.connect("<signal>", ...)``."""
    connected: dict = {}
    for node in ast.walk(TREE):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "connect"
                and isinstance(node.func.value, ast.Attribute) and ast.unparse(node.func.value.value) == "self.ui"
                and node.args and isinstance(node.args[0], ast.Constant)):
            connected.setdefault(node.func.value.attr, set()).add(node.args[0].value)
    return connected


def test_every_button_path_and_list_is_wired():
    connected, bound = ui_connections(), {w.get("name") for w in bound_parameters().values()}
    for name, widget in ui_widgets().items():
        signal = WIRED_SIGNALS.get(widget.get("class"))
        if signal and name not in bound:
            assert signal in connected.get(name, set()), f"{name} is never connected to {signal}"


def test_batch_section_picks_folders_and_several_presets():
    widgets = ui_widgets()
    section = next(w for w in widgets.values() if w.get("class") == "ctkCollapsibleButton" and ui_property(w, "text") == "Batch")
    inside = {w.get("name"): w.get("class") for w in section.iter("widget")}
    assert {name: inside.get(name) for name in ("batchInputPathLineEdit", "batchOutputPathLineEdit", "batchPresetList",
            "batchOverwriteCheckBox", "batchRunButton", "batchCancelButton", "batchProgressBar", "batchStatusLabel")} == {
        "batchInputPathLineEdit": "ctkPathLineEdit", "batchOutputPathLineEdit": "ctkPathLineEdit",
        "batchPresetList": "QListWidget", "batchOverwriteCheckBox": "QCheckBox", "batchRunButton": "QPushButton",
        "batchCancelButton": "QPushButton", "batchProgressBar": "QProgressBar", "batchStatusLabel": "QLabel"}
    for name in ("batchInputPathLineEdit", "batchOutputPathLineEdit"):
        filters = ui_property(widgets[name], "filters").split("|")
        assert "ctkPathLineEdit::Dirs" in filters and "ctkPathLineEdit::Files" not in filters, name
    assert ui_property(widgets["batchPresetList"], "selectionMode") in ("QAbstractItemView::MultiSelection",
                                                                         "QAbstractItemView::ExtendedSelection")
    assert "self.ui.batchPresetList.addItems(list(PRESET_SEQUENCES))" in SOURCE  # the library's preset names


def test_every_input_widget_is_used_or_bound():
    bound = {w.get("name") for w in bound_parameters().values()}
    unused = [
        name
        for name, w in ui_widgets().items()
        if w.get("class") in INPUT_WIDGETS and name not in ui_references() and name not in bound
    ]
    assert not unused, f"widgets neither referenced nor bound to a parameter: {unused}"


def test_bound_widgets_match_the_parameter_node():
    fields = parameter_fields()
    bound = bound_parameters()
    assert set(bound) == set(fields), "every parameter has exactly one widget and every binding a parameter"
    for parameter, widget in bound.items():
        annotation, cls = fields[parameter], widget.get("class")
        expected = {
            "ctkSliderWidget": "Annotated[float, WithinRange(",
            "QComboBox": "Annotated[str, Choice(",
            "qMRMLNodeComboBox": "vtkMRMLScalarVolumeNode",
            "QCheckBox": "bool",
        }[cls]
        assert annotation.startswith(expected), f"{parameter}: {annotation} cannot bind a {cls}"


# --------------------------------------------------------------------------- GUI copies of the library's tables
def test_gui_tables_match_the_library():
    assert literal("PRESET_SEQUENCES") == {name: p.protocol.sequence for name, p in PRESETS.items()}
    assert list(literal("PRESET_SEQUENCES")) == list(PRESETS)  # same order in the list
    custom = literal("CUSTOM_SEQUENCES")
    assert sorted(custom.values()) == sorted(SEQUENCES) and len(set(custom.values())) == len(custom)
    assert all(label.startswith("Custom ") for label in custom)
    assert literal("SEQUENCE_PARAMETERS") == {key: spec.needs for key, spec in SEQUENCES.items()}
    assert literal("UNITS") == tuple(UNITS)
    assert literal("DEVICES") == tuple(DEVICES)


def test_requirements_match_pyproject():
    tomllib = pytest.importorskip("tomllib")

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    requirement = {re.split(r"[<>=!~ ]", d, 1)[0]: d.replace(" ", "") for d in dependencies}
    assert requirement["torch"] == "torch>=%d.%d" % literal("TORCH_MINIMUM")
    for name, spec in literal("EXTRA_REQUIREMENTS").items():
        assert requirement[name] == spec
    assert set(requirement) - {"torch", "numpy", "SimpleITK"} == set(literal("EXTRA_REQUIREMENTS")), (
        "a new dependency of SyntheticMRILib needs installing in Slicer too"
    )


def test_parameter_defaults_are_the_t2_flair_preset():
    defaults = parameter_defaults()
    flair = PRESETS["T2-FLAIR"].protocol
    assert defaults["contrast"] == "T2-FLAIR"
    assert (defaults["tr"], defaults["te"], defaults["ti"]) == (flair.tr, flair.te, flair.ti)
    namespace = pure_namespace()
    values = {name: defaults[name] for name in namespace["SLIDER_PARAMETERS"]}
    assert namespace["clampParameters"](values) == values, "default values break the slider bounds"


def test_the_ui_starts_at_the_parameter_defaults_and_ranges():
    namespace = pure_namespace()
    defaults = parameter_defaults()
    widgets = ui_widgets()
    for name in namespace["SLIDER_PARAMETERS"]:
        slider = widgets[f"{name}Slider"]
        low, high = namespace[f"{name.upper()}_RANGE"]
        assert (float(ui_property(slider, "minimum")), float(ui_property(slider, "maximum"))) == (low, high), name
        assert float(ui_property(slider, "value")) == defaults[name], name


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_fits_the_slider_bounds(name):
    namespace = pure_namespace()
    protocol = PRESETS[name].protocol
    values = {key: 1.0 for key in namespace["SLIDER_PARAMETERS"]}  # hidden parameters: any physical value
    values["ti"], values["ti2"] = 3.0, 1.0
    values.update({key: float(getattr(protocol, key)) for key in values if getattr(protocol, key) is not None})
    clamped = namespace["clampParameters"](values)
    for key in values:
        if getattr(protocol, key) is not None:
            assert clamped[key] == float(getattr(protocol, key)), f"{name}: {key} would be clipped by the GUI"


# --------------------------------------------------------------------------- pure helpers
def test_bounds_keep_te_and_ti_below_tr_and_ti2_below_ti():
    namespace = pure_namespace()
    clamp, gap = namespace["clampParameters"], namespace["GAP_MS"]
    values = clamp({"tr": 300.0, "te": 400.0, "ti": 2500.0, "ti2": 900.0, "flip": 200.0})
    assert values["te"] == values["ti"] == 300.0 - gap
    assert values["ti2"] == values["ti"] - gap
    assert values["flip"] == namespace["FLIP_RANGE"][1]
    lowest = clamp({"tr": 0.0, "te": 0.0, "ti": 0.0, "ti2": 0.0, "flip": 0.0})  # the minima stay consistent
    assert lowest["te"] < lowest["tr"] and 0 < lowest["ti2"] < lowest["ti"] < lowest["tr"]
    bounds = namespace["parameterBounds"](9000.0, 2372.0)
    assert bounds["te"][1] == namespace["TE_RANGE"][1]  # below TR anyway
    assert bounds["ti"][1] == 9000.0 - gap and bounds["ti2"][1] == 2372.0 - gap
    assert namespace["parameterBounds"](600.0, 400.0)["te"][1] == 600.0 - gap


def test_contrast_names_map_to_sequences():
    namespace = pure_namespace()
    assert namespace["sequenceOf"]("T2-FLAIR") == "ir"
    for sequence in SEQUENCES:
        assert namespace["sequenceOf"](namespace["customContrastOf"](sequence)) == sequence


# --------------------------------------------------------------------------- the library inside the extension
def test_every_library_file_is_listed_in_the_module_cmakelists():
    listed = cmake_list(MODULE_CMAKE.read_text(), "SyntheticMRILib_PYTHON_SCRIPTS")
    present = sorted(p.name for p in LIBRARY.glob("*.py"))
    assert sorted(listed) == present, (
        f"SyntheticMRI/CMakeLists.txt lists {sorted(set(listed) - set(present))} that do not exist and misses "
        f"{sorted(set(present) - set(listed))}"
    )
    assert len(listed) == len(set(listed))


def test_only_the_bridge_touches_slicer_qt_or_vtk():
    for path in sorted(LIBRARY.glob("*.py")):
        if path.name == "slicer_bridge.py":
            continue
        roots = imported_roots(ast.walk(ast.parse(path.read_text(encoding="utf-8"))))
        assert not roots & MRML_MODULES, f"{path.name} imports {sorted(roots & MRML_MODULES)}"


@pytest.mark.parametrize("path", packaged_python_files(), ids=lambda p: p.name)
def test_packaged_python_parses_as_python_3_9(path):
    """Slicer up to 5.8 byte-compiles and runs these with Python 3.9."""
    ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))


# --------------------------------------------------------------------------- extension metadata and icons
def test_extension_cmakelists_has_the_metadata():
    text = EXTENSION_CMAKE.read_text()
    assert re.search(r"^project\(SyntheticMRI\)", text, re.M)
    assert cmake_variable(text, "EXTENSION_HOMEPAGE") == f"https://github.com/{REPOSITORY}"
    assert cmake_variable(text, "EXTENSION_CATEGORY") == "Quantification"
    assert cmake_variable(text, "EXTENSION_CONTRIBUTORS").strip()
    assert len(cmake_variable(text, "EXTENSION_DESCRIPTION")) > 80
    assert "PyTorch" in cmake_variable(text, "EXTENSION_DEPENDS").split()
    assert re.search(r"MINIMUM_SLICER_VERSION \"5\.\d+\"", text)
    for line in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})", "add_subdirectory(SyntheticMRI)",
                 "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"):
        assert line in text, line
    module = MODULE_CMAKE.read_text()
    assert re.search(r"slicerMacroBuildScriptedModule\(.*NAME \$\{MODULE_NAME\}.*WITH_GENERIC_TESTS", module, re.S)
    assert cmake_list(module, "MODULE_PYTHON_RESOURCES") == ["Resources/Icons/${MODULE_NAME}.png", "Resources/UI/${MODULE_NAME}.ui"]


def _raw_path(url: str) -> Path:
    prefix = f"https://raw.githubusercontent.com/{REPOSITORY}/main/"
    assert url.startswith(prefix), f"{url} is not a raw file of {REPOSITORY}"
    return ROOT / url[len(prefix):]


def test_icon_url_points_at_the_icon():
    assert _raw_path(cmake_variable(EXTENSION_CMAKE.read_text(), "EXTENSION_ICONURL")) == ICONS[0]


def test_screenshot_urls_point_at_files_of_the_repository():
    paths = [_raw_path(url) for url in cmake_variable(EXTENSION_CMAKE.read_text(), "EXTENSION_SCREENSHOTURLS").split()]
    assert paths
    missing = [str(p.relative_to(ROOT)) for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"screenshot not in the checkout yet, the catalog link is broken until it is: {missing}")


@pytest.mark.parametrize("path", ICONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_icons_are_128_pixel_pngs(path):
    assert png_size(path) == (128, 128)


# --------------------------------------------------------------------------- the logic against real MRML
@pytest.fixture
def module(monkeypatch):
    """The module file imported with slicer-core's real MRML and stubs for the GUI-only Slicer modules."""
    slicer = pytest.importorskip("slicer")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("slicer-core (real MRML) is not installed")
    from SyntheticMRILib import slicer_bridge

    class Base:
        def __init__(self, *args, **kwargs):
            pass

    class TestBase(unittest.TestCase):
        def delayDisplay(self, message, msec=None):
            pass

    stubs = {
        "qt": types.ModuleType("qt"),
        "slicer.i18n": types.SimpleNamespace(tr=lambda text: text, translate=lambda context, text: text),
        "slicer.parameterNodeWrapper": types.SimpleNamespace(
            parameterNodeWrapper=lambda cls: cls, Choice=lambda *a: None, WithinRange=lambda *a: None
        ),
        "slicer.ScriptedLoadableModule": types.SimpleNamespace(
            ScriptedLoadableModule=Base, ScriptedLoadableModuleLogic=Base,
            ScriptedLoadableModuleTest=TestBase, ScriptedLoadableModuleWidget=Base,
        ),
    }
    for name, stub in stubs.items():
        monkeypatch.setitem(sys.modules, name, stub)
    monkeypatch.setattr(slicer, "mrmlScene", slicer_bridge.create_scene(), raising=False)
    spec = importlib.util.spec_from_file_location("SyntheticMRI_under_test", MODULE)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def _map_nodes(direction):
    """T1/T2/PD nodes of brain-like random tissue on an awkward grid, in slicer.mrmlScene."""
    import slicer
    from SyntheticMRILib import slicer_bridge

    rng = np.random.default_rng(3)
    shape = (9, 11, 13)
    arrays = {
        "t1": rng.uniform(300, 4200, shape), "t2": rng.uniform(30, 2000, shape), "pd": rng.uniform(0.5, 1.0, shape)
    }
    grid = dict(spacing=(0.9, 1.1, 2.5), origin=(12.5, -30.25, 7.0), direction=tuple(np.ravel(direction)))
    return {
        name: slicer_bridge.node_from_volume(Volume(a.astype(np.float32), **grid), name, scene=slicer.mrmlScene)
        for name, a in arrays.items()
    }


@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
def test_logic_previews_what_the_views_show(module, direction):
    """Two views aligned with the grid and one oblique, as vtkMRMLSliceNodes over real volume nodes."""
    import slicer

    logic = module.SyntheticMRILogic()
    nodes = _map_nodes(direction)
    output = logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "T2-FLAIR", fused=False)
    assert output.GetName() == "Synthetic T2-FLAIR" and output.GetAttribute(module.PROTOCOL_ATTRIBUTE).startswith("ir ")
    flair = slicer.util.arrayFromVolume(output).copy()
    reference = slicer.util.arrayFromVolume(
        logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "T1w", fused=False, name="reference")
    ).copy()

    volume = slicer_volume(output)  # the node's grid as the library sees it
    planes = [slice_to_ras(2, volume, (6, 5, 4)), slice_to_ras(0, volume, (7, 5, 4))]  # a k and an i slice
    oblique = oblique_plane(volume, tilt=(15, 20), through=(6.2, 5.4, 4.1), normal_axis_ijk=1)
    slice_nodes = []
    for plane in planes + [oblique]:
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceNode")
        slicer.util.updateVTKMatrixFromArray(node.GetSliceToRAS(), plane)
        slice_nodes.append(node)

    assert logic.updateVisibleSlices(
        nodes["t1"], nodes["t2"], nodes["pd"], logic.presetProtocol("T1w"), output, sliceNodes=slice_nodes[:2]
    ) == 2
    after = slicer.util.arrayFromVolume(output).copy()
    expected = flair.copy()
    expected[4] = reference[4]  # k = 4
    expected[:, :, 7] = reference[:, :, 7]  # i = 7
    np.testing.assert_allclose(after, expected, rtol=1e-5, atol=1e-7)

    logic.updateVisibleSlices(nodes["t1"], nodes["t2"], nodes["pd"], logic.presetProtocol("T1w"), output, sliceNodes=slice_nodes[2:])
    after = slicer.util.arrayFromVolume(output)
    shown = tuple(np.array(sorted(shown_voxels(oblique, volume))).T)
    np.testing.assert_allclose(after[shown], reference[shown], rtol=1e-5, atol=1e-7)
    untouched = after == flair
    assert untouched.sum() > 0.5 * after.size  # a band around the plane, not the volume


def test_logic_previews_the_views_of_the_layout_by_default_and_converts_the_maps_once(module):
    """Without sliceNodes, the views laid out that show the output (matched by layout name, as Slicer does)."""
    import slicer

    logic = module.SyntheticMRILogic()
    nodes = _map_nodes(np.eye(3))
    output = logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "T2-FLAIR", fused=False)
    flair = slicer.util.arrayFromVolume(output).copy()
    reference = slicer.util.arrayFromVolume(
        logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "T1w", fused=False, name="reference")
    ).copy()
    volume = slicer_volume(output)
    for name, plane, shows in (("Red", slice_to_ras(2, volume, (6, 5, 4)), output),
                               ("Green", slice_to_ras(1, volume, (6, 8, 4)), nodes["t1"]),  # shows another volume
                               ("Slice4", slice_to_ras(0, volume, (7, 5, 4)), output)):  # not in the layout
        slice_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceNode")
        slice_node.SetLayoutName(name)
        slice_node.SetMappedInLayout(name != "Slice4")
        slicer.util.updateVTKMatrixFromArray(slice_node.GetSliceToRAS(), plane)
        composite = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        composite.SetLayoutName(name)
        composite.SetBackgroundVolumeID(shows.GetID())
    assert logic._cache.loads == 1  # two syntheses from the same maps: converted once
    assert logic.updateVisibleSlices(nodes["t1"], nodes["t2"], nodes["pd"], logic.presetProtocol("T1w"), output) == 1
    expected = flair.copy()
    expected[4] = reference[4]
    np.testing.assert_allclose(slicer.util.arrayFromVolume(output), expected, rtol=1e-5, atol=1e-7)
    assert logic._cache.loads == 1
    nodes["t2"].GetImageData().Modified()  # an edited map is converted again
    logic.updateVisibleSlices(nodes["t1"], nodes["t2"], nodes["pd"], logic.presetProtocol("T1w"), output)
    assert logic._cache.loads == 2


def test_the_module_self_test_passes_on_real_mrml(module, monkeypatch, tmp_path):
    """SyntheticMRITest, which Slicer runs as a ctest, headless: the bundled sample end to end, the segmentation
    in a real child process (slicer.app stands in for what the application gives: a temporary folder, testing on)."""
    import slicer

    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(temporaryPath=str(tmp_path), testingEnabled=lambda: True),
                        raising=False)
    result = unittest.TestResult()
    module.SyntheticMRITest().run(result)
    assert result.testsRun == 1 and result.wasSuccessful(), result.errors + result.failures


def test_logic_keeps_a_user_named_output_and_refuses_an_input_as_output(module):
    import slicer
    from SyntheticMRILib import slicer_bridge

    logic = module.SyntheticMRILogic()
    nodes = _map_nodes(np.eye(3))
    output = logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "T1w", fused=False)
    assert output.GetName() == "Synthetic T1w"
    logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "STIR", outputNode=output, fused=False)
    assert output.GetName() == "Synthetic STIR"  # named by the module: follows the contrast
    output.SetName("my contrast")  # renamed by the user (the Data module touches no attribute)
    logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "T2w", outputNode=output, fused=False)
    assert output.GetName() == "my contrast"
    logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "T1w", outputNode=output, fused=False)
    assert output.GetName() == "my contrast" and output.GetAttribute(module.PROTOCOL_ATTRIBUTE).startswith("se ")
    fresh = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Volume")  # from "Create new volume"
    assert logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "DIR", outputNode=fresh, fused=False).GetName() == "Synthetic DIR"
    assert module.PROTOCOL_ATTRIBUTE == slicer_bridge.PROTOCOL_ATTRIBUTE  # the GUI's copy
    with pytest.raises(ValueError):
        logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "T2w", outputNode=nodes["t2"], fused=False)


def test_logic_previews_nothing_into_an_output_off_the_maps_grid(module):
    import slicer

    logic = module.SyntheticMRILogic()
    nodes = _map_nodes(np.eye(3))
    output = logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "T1w", fused=False)
    before = slicer.util.arrayFromVolume(output).copy()
    output.SetSpacing(2.0, 2.0, 2.0)  # same shape, another grid: voxel indices no longer match
    slice_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceNode")
    slicer.util.updateVTKMatrixFromArray(slice_node.GetSliceToRAS(), slice_to_ras(2, slicer_volume(output), (6, 5, 4)))
    protocol = logic.presetProtocol("T2w")
    assert logic.updateVisibleSlices(nodes["t1"], nodes["t2"], nodes["pd"], protocol, output, sliceNodes=[slice_node]) == 0
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(output), before)


def slicer_volume(node) -> Volume:
    from SyntheticMRILib import slicer_bridge

    return slicer_bridge.volume_from_node(node)


def test_logic_protocols_drop_what_the_sequence_does_not_take(module):
    logic = module.SyntheticMRILogic()
    protocol = logic.protocol("Custom spin echo", tr=500, te=10, ti=400, ti2=100, flip=30)
    assert (protocol.sequence, protocol.ti, protocol.ti2, protocol.flip) == ("se", None, None, None)
    assert logic.presetValues("DIR") == {
        key: float(getattr(PRESETS["DIR"].protocol, key)) for key in ("tr", "te", "ti", "ti2")
    }


# --------------------------------------------------------------------------- the widget's state logic
class FakeParameterNode:
    """What the widget needs of a parameterNodeWrapper, as Slicer's wrapper.py does it: typed attributes
    read from a cache that a priority-0 observer refreshes after changes made behind the wrapper's back
    (scene load, undo), batched ModifiedEvents to observers in priority order, range validation, and a
    GUI binding (priority 0, added by connectGui) that writes the sliders. A clipped write is only
    recorded: the real wrapper ignores widget signals while it writes."""

    def __init__(self, module, sliders):
        defaults = parameter_defaults()
        defaults.update(t1Volume=None, t2Volume=None, pdVolume=None, outputVolume=None)
        ranges = {name: getattr(module, f"{name.upper()}_RANGE") for name in module.SLIDER_PARAMETERS}
        self.__dict__.update(values=dict(defaults), cache=dict(defaults), ranges=ranges, sliders=sliders,
                             observers=[], depth=0, dirty=False, events=0, clipped=[])
        self.AddObserver("ModifiedEvent", lambda *a: self.cache.update(self.values))

    def __getattr__(self, name):
        return self.__dict__["cache"][name]

    def __setattr__(self, name, value):
        if name in self.ranges:
            low, high = self.ranges[name]
            assert low <= value <= high, f"WithinRange rejects {name}={value}"
        self.values[name] = self.cache[name] = value
        self.StartModify()
        self.__dict__["dirty"] = True
        self.EndModify(0)

    def load(self, **values):
        """A change behind the wrapper's back: the cache is stale until its observer runs."""
        self.values.update(values)
        self.StartModify()
        self.__dict__["dirty"] = True
        self.EndModify(0)

    def StartModify(self):
        self.__dict__["depth"] += 1
        return 0

    def EndModify(self, _was):
        self.__dict__["depth"] -= 1
        if self.depth == 0 and self.dirty:
            self.__dict__["dirty"] = False
            self.__dict__["events"] += 1
            assert self.events < 500, "ModifiedEvent storm"
            for _priority, callback in sorted(self.observers, key=lambda o: -o[0]):
                callback(self, "ModifiedEvent")

    def AddObserver(self, _event, callback, priority=0.0):
        self.observers.append((priority, callback))
        return len(self.observers) - 1

    def RemoveObserver(self, tag):
        self.observers[tag] = (0.0, lambda *a: None)

    def connectGui(self, _ui):
        def write(_caller, _event):
            for name, slider in self.sliders.items():
                slider.value = min(max(self.cache[name], slider.minimum), slider.maximum)
                if slider.value != self.cache[name]:
                    self.clipped.append((name, self.cache[name], slider.value))

        return self.AddObserver("ModifiedEvent", write)

    def disconnectGui(self, _tag):
        pass


class FakeWidget:
    def __init__(self):
        self.minimum, self.maximum, self.value, self.visible, self.text = 0.0, 1e9, 0.0, True, ""

    def blockSignals(self, _block):
        return False

    def setVisible(self, visible):
        self.visible = visible


def test_widget_applies_presets_keeps_bounds_and_marks_edited_presets_custom(module):
    names = ("tr", "te", "ti", "ti2", "flip")
    ui = types.SimpleNamespace(**{f"{n}Slider": FakeWidget() for n in names}, **{
        n: FakeWidget() for n in ("tiLabel", "ti2Label", "flipLabel", "contrastInfoLabel", "statusLabel", "applyButton")
    })
    assert {f"{n}Slider" for n in names} | set(vars(ui)) <= set(ui_widgets())
    widget = module.SyntheticMRIWidget()
    module.SyntheticMRIWidget.__init__(widget)
    widget.ui, widget.logic = ui, module.SyntheticMRILogic()
    widget._sliders = {n: getattr(ui, f"{n}Slider") for n in names}
    widget._sliderLabels = {"ti": ui.tiLabel, "ti2": ui.ti2Label, "flip": ui.flipLabel}
    widget._updateTimer = widget._previewTimer = types.SimpleNamespace(start=lambda: None)
    parameters = FakeParameterNode(module, widget._sliders)
    widget.setParameterNode(parameters)

    def state():
        shown = [n for n in ("ti", "ti2", "flip") if widget._sliders[n].visible]
        return parameters.contrast, {n: parameters.values[n] for n in names}, shown

    def physical():
        v = parameters.values
        return v["te"] < v["tr"] and v["ti"] < v["tr"] and v["ti2"] < v["ti"]

    assert state()[0] == "T2-FLAIR" and state()[2] == ["ti"] and ui.teSlider.maximum == 1000.0
    for name, preset in PRESETS.items():  # every preset, from whatever came before
        parameters.contrast = name
        contrast, values, shown = state()
        assert contrast == name, f"{name} did not stay selected"
        for key in names:
            if getattr(preset.protocol, key) is not None:
                assert values[key] == getattr(preset.protocol, key), (name, key)
        assert sorted(shown) == sorted(SEQUENCES[preset.protocol.sequence].needs)
        assert physical() and ui.tiSlider.maximum == values["tr"] - module.GAP_MS
    parameters.contrast = "T1w"
    parameters.te = 20.0  # an edited preset is not that preset any more
    assert state()[0] == "Custom spin echo" and parameters.te == 20.0
    parameters.contrast = "DIR"
    parameters.tr = 1000.0  # TR pulls TI down, and TI pulls TI2
    assert state()[0] == "Custom double IR" and physical() and parameters.ti == 1000.0 - module.GAP_MS
    assert ui.tiLabel.text.startswith("TI1")
    parameters.contrast = "T2-FLAIR"
    assert state()[0] == "T2-FLAIR" and physical()
    parameters.tr = 1000.0
    wasModifying = parameters.StartModify()  # several values at once, as from the console or a scene
    parameters.tr, parameters.ti = 9000.0, 5000.0
    parameters.EndModify(wasModifying)
    assert (parameters.tr, parameters.ti, ui.tiSlider.value) == (9000.0, 5000.0, 5000.0)
    parameters.load(tr=2000.0, te=30.0, ti=1500.0)  # e.g. a scene view restored
    assert (ui.trSlider.value, ui.tiSlider.value, ui.tiSlider.maximum) == (2000.0, 1500.0, 2000.0 - module.GAP_MS)
    assert not parameters.clipped, f"the GUI clipped values the parameter node kept: {parameters.clipped}"
    assert ui.applyButton.enabled is False  # no maps selected


# --------------------------------------------------------------------------- the widget's batch, out of process
class FakeQProcess:
    """qt.QProcess as the module uses it, over subprocess. Like QProcess, kill() ends the direct child only.
    pump() delivers readyReadStandardOutput (raw chunks, cut anywhere) and finished, as Qt's event loop would."""

    FailedToStart = 0
    NotRunning = 0

    def __init__(self):
        self.slots, self.environment, self.popen, self.chunks, self.stderr = {}, None, None, [], b""

    def connect(self, signal, slot):
        self.slots[signal] = slot

    def setEnvironment(self, pairs):
        self.environment = dict(pair.split("=", 1) for pair in pairs)

    def start(self, program, arguments):
        try:
            self.popen = subprocess.Popen([program, *arguments], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, env=self.environment)
        except OSError:
            self.slots["errorOccurred(QProcess::ProcessError)"](self.FailedToStart)
            return
        self.readers = [threading.Thread(target=self._read, args=(stream, out), daemon=True)
                        for stream, out in ((self.popen.stdout, self.chunks), (self.popen.stderr, None))]
        for reader in self.readers:
            reader.start()

    def _read(self, stream, out):
        while True:
            chunk = os.read(stream.fileno(), 7)  # small reads: lines arrive in pieces
            if not chunk:
                return
            if out is None:
                self.stderr += chunk
            else:
                out.append(chunk)

    def readAllStandardOutput(self):
        data, self.chunks[:] = b"".join(self.chunks), []
        return types.SimpleNamespace(data=lambda: data)  # a QByteArray

    def readAllStandardError(self):
        return types.SimpleNamespace(data=lambda: self.stderr)

    def closeWriteChannel(self):
        self.popen.stdin.close()

    def kill(self):
        if self.popen.poll() is None:
            self.popen.kill()

    def pump(self, until=lambda: False, timeout=60.0):
        """Deliver signals until ``until()`` or the end of the process; True when it finished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            finished = self.popen.poll() is not None and not any(r.is_alive() for r in self.readers)
            if self.chunks:
                self.slots["readyReadStandardOutput()"]()
            if finished:
                self.popen.stdin.close()
                code = self.popen.returncode
                self.slots["finished(int,QProcess::ExitStatus)"](max(code, 0), 0 if code >= 0 else 1)
                return True
            if until():
                return False
            time.sleep(0.01)
        raise AssertionError("the batch process did not finish in time")


class FakeItem:
    def __init__(self, text):
        self._text = text

    def text(self):
        return self._text


def batch_widget(module, monkeypatch):
    """The module's widget with stand-ins for the Batch section's widgets (checked against the .ui) and for qt."""
    names = ("batchInputPathLineEdit", "batchOutputPathLineEdit", "batchPresetList", "batchOverwriteCheckBox",
             "batchRunButton", "batchCancelButton", "batchProgressBar", "batchStatusLabel")
    ui = types.SimpleNamespace(**{name: types.SimpleNamespace(enabled=True, currentPath="", checked=False, maximum=100,
                                                              value=0, text="") for name in names})
    assert set(vars(ui)) <= set(ui_widgets())
    ui.batchPresetList.selected = []
    ui.batchPresetList.selectedItems = lambda: [FakeItem(t) for t in ui.batchPresetList.selected]
    widget = module.SyntheticMRIWidget()
    module.SyntheticMRIWidget.__init__(widget)
    widget.ui, widget.logic = ui, module.SyntheticMRILogic()
    widget._parameterNode = types.SimpleNamespace(units="ms", device="cpu")
    timers = []
    monkeypatch.setattr(module.qt, "QProcess", FakeQProcess, raising=False)
    monkeypatch.setattr(module.qt, "QTimer", types.SimpleNamespace(singleShot=lambda ms, f: timers.append((ms, f))),
                        raising=False)
    widget._updateBatchButtons()
    return widget, ui, timers


def test_widget_runs_a_batch_out_of_process_and_reports_it(module, monkeypatch, tmp_path):
    widget, ui, _ = batch_widget(module, monkeypatch)
    assert not ui.batchRunButton.enabled and not ui.batchCancelButton.enabled  # nothing chosen yet
    study, out = write_study(tmp_path / "study", subjects=2), tmp_path / "out"
    ui.batchInputPathLineEdit.currentPath, ui.batchOutputPathLineEdit.currentPath = str(study), str(out)
    widget._updateBatchButtons()
    assert not ui.batchRunButton.enabled  # no preset
    ui.batchPresetList.selected = ["T1w", "DIR"]
    widget._updateBatchButtons()
    assert ui.batchRunButton.enabled and not ui.batchCancelButton.enabled
    widget.onBatchRun()
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

    widget.onBatchRun()  # again, without "Replace existing files": every subject is refused
    widget._batchJob.process.pump()
    status = ui.batchStatusLabel.text.splitlines()
    assert status[0].startswith("Failed: syntheticmri: error: 2 subject(s) skipped: sub-00, sub-01")
    assert status[1].startswith("sub-00: skipped:") and "already exists" in status[1]
    ui.batchOverwriteCheckBox.checked = True
    widget.onBatchRun()
    widget._batchJob.process.pump()
    assert ui.batchStatusLabel.text.startswith("Done")


def test_widget_cancel_stops_the_batch_and_the_buttons_follow(module, monkeypatch, big_study, tmp_path):
    widget, ui, timers = batch_widget(module, monkeypatch)
    out = tmp_path / "out"
    ui.batchInputPathLineEdit.currentPath, ui.batchOutputPathLineEdit.currentPath = str(big_study), str(out)
    ui.batchPresetList.selected = ["T2w"]
    widget.onBatchRun()
    process = widget._batchJob.process
    assert not process.pump(until=lambda: ui.batchProgressBar.maximum > 0)
    assert re.fullmatch(r"sub-(\d\d) \((\d+) of 40\)", ui.batchStatusLabel.text)  # "sub-00 (1 of 40)" unless slow
    cancelled = time.monotonic()
    widget.onBatchCancel()
    assert ui.batchStatusLabel.text == "Cancelling..." and [ms for ms, _ in timers] == [5000]
    assert process.pump(timeout=5.0) and time.monotonic() - cancelled < 5.0  # stopped through its stdin, no kill
    assert ui.batchStatusLabel.text == "Cancelled: the volumes written so far are complete."
    assert ui.batchRunButton.enabled and not ui.batchCancelButton.enabled
    written = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert len(written) < 40 and set(written) <= {"T2w.nrrd"}  # no partial file


def test_widget_reports_a_python_that_does_not_start(module, monkeypatch, tmp_path):
    from SyntheticMRILib import batch

    widget, ui, _ = batch_widget(module, monkeypatch)
    monkeypatch.setattr(batch, "slicer_python", lambda: str(tmp_path / "PythonSlicer"))
    ui.batchInputPathLineEdit.currentPath, ui.batchOutputPathLineEdit.currentPath = str(tmp_path), str(tmp_path / "o")
    ui.batchPresetList.selected = ["T1w"]
    widget.onBatchRun()
    assert ui.batchStatusLabel.text == f"Failed: could not start {tmp_path / 'PythonSlicer'}"
    assert widget._batchJob is None and ui.batchRunButton.enabled and not ui.batchCancelButton.enabled


def segmentation_widget(module, monkeypatch, tmp_path):
    """The widget with stand-ins for the segmentation section's widgets, the sample maps as inputs, a fake QProcess."""
    import contextlib

    import slicer

    names = ("segmentButton", "learnedContrastButton", "segmentationCancelButton", "segmentationProgressBar",
             "segmentationStatusLabel")
    ui = types.SimpleNamespace(**{name: types.SimpleNamespace(enabled=True, maximum=100, value=0, text="") for name in names})
    assert set(vars(ui)) | {"volumesTableView"} <= set(ui_widgets())
    shown = []
    ui.volumesTableView = types.SimpleNamespace(setMRMLTableNode=shown.append)
    widget = module.SyntheticMRIWidget()
    module.SyntheticMRIWidget.__init__(widget)
    widget.ui, widget.logic = ui, module.SyntheticMRILogic()
    nodes = widget.logic.loadSample()
    widget._parameterNode = types.SimpleNamespace(t1Volume=nodes["t1"], t2Volume=nodes["t2"], pdVolume=nodes["pd"],
                                                  outputVolume=None, units="ms", device="cpu")
    monkeypatch.setattr(module.qt, "QProcess", FakeQProcess, raising=False)
    monkeypatch.setattr(module.qt, "QTimer", types.SimpleNamespace(singleShot=lambda ms, f: None), raising=False)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(temporaryPath=str(tmp_path), testingEnabled=lambda: True),
                        raising=False)
    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(slicer.util, "setSliceViewerLayers", lambda **k: None)
    widget._updateSegmentationButtons()
    return widget, ui, shown


def test_widget_segments_and_synthesizes_the_learned_contrasts_out_of_process(module, monkeypatch, tmp_path):
    import slicer

    widget, ui, shown = segmentation_widget(module, monkeypatch, tmp_path)
    widget.onMapsJob("segment")
    assert not ui.segmentButton.enabled and ui.segmentationCancelButton.enabled
    assert widget._segmentationJob.process.pump(timeout=300)
    assert re.fullmatch(r"14 structures, [\d.]+ ml in all\.", ui.segmentationStatusLabel.text), ui.segmentationStatusLabel.text
    assert ui.segmentButton.enabled and not ui.segmentationCancelButton.enabled
    segmentation = slicer.mrmlScene.GetFirstNodeByName("Subcortical segmentation").GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 14 and segmentation.GetSegment("Left-Thalamus") is not None
    (table,) = shown
    assert table.GetNumberOfRows() == 14 and table.GetCellText(0, 0) == "Left-Thalamus" and float(table.GetCellText(0, 2)) > 4
    assert not any(tmp_path.iterdir())  # the job folder is gone

    widget.onMapsJob("contrast")
    assert widget._segmentationJob.process.pump(timeout=300)
    lines = ui.segmentationStatusLabel.text.splitlines()
    assert len(lines) == 3 and lines[0].startswith("Learned contrast 1 (SE TR ")
    node = slicer.mrmlScene.GetFirstNodeByName(lines[2].split(": ")[0])
    assert node.GetAttribute(module.PROTOCOL_ATTRIBUTE).startswith("ir TR ")


def test_widget_cancels_a_segmentation(module, monkeypatch, tmp_path):
    import slicer

    widget, ui, _ = segmentation_widget(module, monkeypatch, tmp_path)
    widget.onMapsJob("segment")
    process = widget._segmentationJob.process
    widget._segmentationJob.cancel()
    assert process.pump(timeout=30)
    assert ui.segmentationStatusLabel.text == "Cancelled." and ui.segmentButton.enabled
    assert slicer.mrmlScene.GetFirstNodeByName("Subcortical segmentation") is None and not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- CMake, against a stub Slicer
STUB_SLICER_CONFIG = r"""
# A stand-in for SlicerConfig.cmake: the variables and macros the extension uses, nothing built.
set(Slicer_VERSION_MAJOR 5)
set(Slicer_VERSION_MINOR 8)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.8/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR ${Slicer_QTSCRIPTEDMODULES_LIB_DIR})
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/empty.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/empty.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/empty.cmake)
macro(slicer_add_python_unittest)
endmacro()
# Scripts go to <destination>/<path>, an absolute path taken relative to the current binary
# directory, as ctkMacroCompilePythonScript does; resources relative to the source directory.
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(STUB "WITH_GENERIC_TESTS" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  set(_destination ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR})
  foreach(_file IN LISTS STUB_SCRIPTS STUB_RESOURCES)
    if(IS_ABSOLUTE ${_file})
      file(RELATIVE_PATH _target ${CMAKE_CURRENT_BINARY_DIR} ${_file})
      set(_source ${_file})
    else()
      set(_target ${_file})
      set(_source ${CMAKE_CURRENT_SOURCE_DIR}/${_file})
    endif()
    if(NOT EXISTS ${_source})
      message(FATAL_ERROR "slicerMacroBuildScriptedModule given nonexistent file ${_file}")
    endif()
    configure_file(${_source} ${_destination}/${_target} COPYONLY)
  endforeach()
  install(DIRECTORY ${_destination}/ DESTINATION ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR})
endmacro()
"""


def test_cmake_puts_module_library_and_resources_side_by_side(tmp_path):
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    stub = tmp_path / "Slicer"
    stub.mkdir()
    (stub / "SlicerConfig.cmake").write_text(STUB_SLICER_CONFIG)
    (stub / "empty.cmake").write_text("")
    build, prefix = tmp_path / "build", tmp_path / "install"

    def run(*args):
        result = subprocess.run([cmake, *args], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr

    run("-S", str(ROOT), "-B", str(build), f"-DSlicer_DIR={stub}")
    run("--build", str(build))
    run("--install", str(build), "--prefix", str(prefix))
    scripted = prefix / "lib" / "Slicer-5.8" / "qt-scripted-modules"
    assert (scripted / "SyntheticMRI.py").is_file()
    assert sorted(p.name for p in (scripted / "SyntheticMRILib").glob("*.py")) == sorted(p.name for p in LIBRARY.glob("*.py"))
    assert (scripted / "Resources" / "UI" / "SyntheticMRI.ui").is_file()
    assert (scripted / "Resources" / "Icons" / "SyntheticMRI.png").is_file()
    # Shared resources beside the package, where SyntheticMRILib.resources looks for them.
    shipped = sorted(str(p.relative_to(ROOT / "Resources")) for p in (ROOT / "Resources").rglob("*")
                     if p.is_file() and not {"Screenshots", "baselines"} & set(p.parts) and p.suffix != ".py")
    installed = sorted(str(p.relative_to(scripted / "Resources")) for p in (scripted / "Resources").rglob("*")
                       if p.is_file() and p.parts[len(scripted.parts) + 1] not in ("UI", "Icons"))
    assert "Models/subcortical.pt" in shipped and installed == shipped
