"""The extension's packaging, read without Slicer: the .ui, the CMake files (configured and installed against a
stub Slicer where cmake is available), the metadata and icons, the library's Python 3.9 syntax, where Qt and
Slicer may be imported, the requirements installed in Slicer, and the import graph of SyntheticMRILib."""
from __future__ import annotations

import ast
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from SyntheticMRILib.physics.protocols import PARAMETERS, PRESETS, RANGES
from SyntheticMRILib.slicer import install

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "SyntheticMRI" / "SyntheticMRI.py"
UI = ROOT / "SyntheticMRI" / "Resources" / "UI" / "SyntheticMRI.ui"
MODULE_CMAKE = ROOT / "SyntheticMRI" / "CMakeLists.txt"
EXTENSION_CMAKE = ROOT / "CMakeLists.txt"
LIBRARY = ROOT / "SyntheticMRILib"
ICONS = (ROOT / "SyntheticMRI.png", ROOT / "SyntheticMRI" / "Resources" / "Icons" / "SyntheticMRI.png")
REPOSITORY = "SlicerSyntheticMRI/SlicerSyntheticMRI"
UI_ROOT = ET.parse(UI).getroot()
GUI_MODULES = {"qt", "ctk", "slicer", "vtk"}


def library_files() -> list:
    return sorted(LIBRARY.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_roots(tree) -> set:
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def top_level_imports(path: Path) -> set:
    """The SyntheticMRILib modules a file imports when it is imported (not inside functions)."""
    package = module_name(path).split(".") if path.name == "__init__.py" else module_name(path).split(".")[:-1]
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            continue
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + (node.module.split(".") if node.module else []))
            if target.startswith("SyntheticMRILib"):
                candidates = [f"{target}.{alias.name}" for alias in node.names] + [target]
                found.add(next(c for c in candidates if c in MODULES))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in MODULES)
        stack.extend(ast.iter_child_nodes(node))
    return found - {module_name(path)}


MODULES = {module_name(path): path for path in library_files()}


def ui_widgets() -> dict:
    """objectName -> element of every widget in the .ui file."""
    return {w.get("name"): w for w in UI_ROOT.iter("widget")}


def ui_property(widget, name: str, stdset: bool = True):
    for prop in widget.findall("property"):
        if prop.get("name") == name and (stdset or prop.get("stdset") == "0"):
            return next(iter(prop)).text
    return None


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




# --------------------------------------------------------------------------- the .ui file
def test_ui_is_a_qmrmlwidget_with_the_eight_sections():
    assert UI_ROOT.tag == "ui"
    top = UI_ROOT.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == UI_ROOT.findtext("class")
    sections = [ui_property(w, "text") for w in UI_ROOT.iter("widget") if w.get("class") == "ctkCollapsibleButton"]
    assert sections == ["Inputs", "Contrast", "Output", "Maps from routine scans", "Re-parameterize a scan",
                        "Subcortical segmentation", "Batch", "Advanced"]


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
    assert {w.get("name") for w in selectors} == {"t1Selector", "t2Selector", "pdSelector", "outputSelector",
                                                  "t1wSelector", "t2wSelector", "flairSelector", "reparamInputSelector",
                                                  "reparamOutputSelector"}
    for selector in selectors:
        assert selector.get("name") in connected, f"{selector.get('name')} never receives the scene"
        types_ = [s.text for s in selector.find("property[@name='nodeTypes']").iter("string")]
        assert types_ == ["vtkMRMLScalarVolumeNode"]
        assert ui_property(selector, "showChildNodeTypes") == "false"  # no label maps
    for name in ("outputSelector", "reparamOutputSelector"):  # a new volume by default
        output = ui_widgets()[name]
        assert ui_property(output, "noneEnabled") == "true" and ui_property(output, "addEnabled") == "true"
        assert ui_property(output, "noneDisplay") == "Create new volume"


def test_ui_sliders_do_not_track():
    """The live preview listens to valueIsChanging, which ctkSliderWidget emits only without tracking."""
    sliders = [w for w in ui_widgets().values() if w.get("class") == "ctkSliderWidget"]
    synthesis, target = {f"{n}Slider" for n in PARAMETERS}, {f"reparam{n.capitalize()}Slider" for n in PARAMETERS}
    assert {w.get("name") for w in sliders} == synthesis | target
    for slider in sliders:
        assert ui_property(slider, "tracking") == "false", slider.get("name")


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




def test_the_ui_sliders_span_the_catalogue_ranges_and_start_at_t2_flair():
    flair = PRESETS["T2-FLAIR"].protocol.values()
    widgets = ui_widgets()
    for name in PARAMETERS:
        for slider in (widgets[f"{name}Slider"], widgets[f"reparam{name.capitalize()}Slider"]):  # synthesis, target
            assert (float(ui_property(slider, "minimum")), float(ui_property(slider, "maximum"))) == RANGES[name], name
            if name in flair:
                assert float(ui_property(slider, "value")) == flair[name], name


def test_reparam_section_holds_the_scan_its_protocol_target_and_job_controls():
    widgets = ui_widgets()
    section = next(w for w in widgets.values()
                   if w.get("class") == "ctkCollapsibleButton" and ui_property(w, "text") == "Re-parameterize a scan")
    inside = {w.get("name"): w.get("class") for w in section.iter("widget")}
    expected = {"reparamInputSelector": "qMRMLNodeComboBox", "reparamSequenceComboBox": "QComboBox",
                "reparamTrSpinBox": "QDoubleSpinBox", "reparamTeSpinBox": "QDoubleSpinBox",
                "reparamTiSpinBox": "QDoubleSpinBox", "reparamProtocolLabel": "QLabel",
                "reparamEngineComboBox": "QComboBox", "reparamTargetComboBox": "QComboBox",
                "reparamOutputSelector": "qMRMLNodeComboBox", "reparamPredictButton": "QPushButton",
                "reparamApplyButton": "QPushButton", "reparamCancelButton": "QPushButton",
                "reparamProgressBar": "QProgressBar", "reparamStatusLabel": "QLabel"}
    expected.update({f"reparam{name.capitalize()}Slider": "ctkSliderWidget" for name in PARAMETERS})
    assert {name: inside.get(name) for name in expected} == expected
    assert ui_property(section, "collapsed") == "true"
    assert ui_property(widgets["reparamInputSelector"], "addEnabled") == "false"


def test_the_ui_binds_nothing_by_name():
    """The widget builds its bindings (SyntheticMRILib.slicer.widget.BINDINGS): connectGui is not used."""
    assert "SlicerParameterName" not in UI.read_text()


# --------------------------------------------------------------------------- the library inside the extension
def test_every_library_file_is_listed_in_the_module_cmakelists():
    listed = cmake_list(MODULE_CMAKE.read_text(), "SyntheticMRILib_PYTHON_SCRIPTS")
    present = sorted(str(p.relative_to(LIBRARY)) for p in library_files())
    assert sorted(listed) == present, (
        f"SyntheticMRI/CMakeLists.txt lists {sorted(set(listed) - set(present))} that do not exist and misses "
        f"{sorted(set(present) - set(listed))}"
    )
    assert len(listed) == len(set(listed))


def test_only_the_slicer_package_touches_slicer_qt_or_vtk():
    for path in library_files():
        roots = imported_roots(ast.parse(path.read_text(encoding="utf-8")))
        if path.parent.name != "slicer":
            assert not roots & GUI_MODULES, f"{path} imports {sorted(roots & GUI_MODULES)}"


@pytest.mark.parametrize("path", [MODULE] + library_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_packaged_python_parses_as_python_3_9(path):
    """Slicer up to 5.8 byte-compiles and runs these with Python 3.9."""
    ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))


def test_the_library_has_no_import_circle():
    """Module-level imports (what loads when a module is imported) form no cycle."""
    graph = {name: top_level_imports(path) for name, path in MODULES.items()}
    state: dict = {}

    def visit(name, trail):
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", "import circle: " + " -> ".join(trail + [name])
        state[name] = "open"
        for other in sorted(graph[name]):
            visit(other, trail + [name])
        state[name] = "done"

    for name in sorted(graph):
        visit(name, [])


def test_sub_packages_hold_no_code_of_their_own():
    """A sub-package's __init__ is its description; importing one loads nothing (no torch for the GUI)."""
    for path in LIBRARY.glob("*/__init__.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert ast.get_docstring(tree), path
        assert len(tree.body) == 1, f"{path} holds more than its docstring"


def test_requirements_match_pyproject():
    tomllib = pytest.importorskip("tomllib")

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    requirement = {re.split(r"[<>=!~ ]", d, 1)[0]: d.replace(" ", "") for d in dependencies}
    assert requirement["torch"] == "torch>=%d.%d" % install.TORCH_MINIMUM
    for name, spec in install.EXTRA_REQUIREMENTS.items():
        assert requirement[name] == spec
    assert set(requirement) - {"torch", "numpy", "SimpleITK"} == set(install.EXTRA_REQUIREMENTS), (
        "a new dependency of SyntheticMRILib needs installing in Slicer too"
    )


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
    installed_library = sorted(str(p.relative_to(scripted)) for p in (scripted / "SyntheticMRILib").rglob("*.py"))
    assert installed_library == sorted(str(p.relative_to(ROOT)) for p in LIBRARY.rglob("*.py"))
    assert (scripted / "Resources" / "UI" / "SyntheticMRI.ui").is_file()
    assert (scripted / "Resources" / "Icons" / "SyntheticMRI.png").is_file()
    # Shared resources beside the package, where SyntheticMRILib.resources looks for them.
    shipped = sorted(str(p.relative_to(ROOT / "Resources")) for p in (ROOT / "Resources").rglob("*")
                     if p.is_file() and not {"Screenshots", "baselines"} & set(p.parts) and p.suffix != ".py")
    installed = sorted(str(p.relative_to(scripted / "Resources")) for p in (scripted / "Resources").rglob("*")
                       if p.is_file() and p.parts[len(scripted.parts) + 1] not in ("UI", "Icons"))
    assert "Models/subcortical.pt" in shipped and installed == shipped
