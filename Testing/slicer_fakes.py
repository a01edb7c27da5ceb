"""Stand-ins for what only the Slicer application has (Qt widgets, the parameter node wrapper, QProcess), for the
tests of ``SyntheticMRILib.slicer``. MRML itself is real (the slicer-core wheel).

Each fake does what the real one does in Slicer 5.8.1, as far as the widget depends on it; the docstrings say which
behaviour is modelled and where it comes from (Slicer's ``parameterNodeWrapper/wrapper.py`` and
``guiConnectors.py``, CTK's ``ctkSliderWidget.cpp``).
"""
from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
import threading
import time
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UI = ROOT / "SyntheticMRI" / "Resources" / "UI" / "SyntheticMRI.ui"


# --------------------------------------------------------------------------- Qt widgets
class FakeSpinBox:
    """The QDoubleSpinBox inside a ctkSliderWidget. Qt's default: keyboardTracking True, so every keystroke
    of a typed number emits valueChanged."""

    def __init__(self, slider):
        self.slider, self.keyboardTracking = slider, True

    def type(self, text: str) -> None:
        """A user types ``text`` and presses Enter."""
        prefixes = [text[:n] for n in range(1, len(text) + 1)] if self.keyboardTracking else [text]
        for prefix in prefixes:
            self.slider.userSets(float(prefix))


class FakeWidget:
    """Any .ui widget: the properties the widget reads and writes, ``connect`` recording slots."""

    def __init__(self, cls: str, name: str):
        self.__dict__.update(cls=cls, name=name, enabled=True, visible=True, checked=False, text="", toolTip="",
                             currentPath="", minimum=0.0, maximum=100.0, value=0.0, slots={}, items=[], selected=[],
                             tables=[], blocked=False, node=None)

    def connect(self, signal, slot):
        self.slots.setdefault(signal, []).append(slot)

    def emit(self, signal, *args):
        """Call the connected slots; like PythonQt, with only as many arguments as a slot takes."""
        if not self.blocked:
            for slot in self.slots.get(signal, []):
                parameters = inspect.signature(slot).parameters.values()
                takes = len(args) if any(p.kind == p.VAR_POSITIONAL for p in parameters) else len(parameters)
                slot(*args[:takes])

    def blockSignals(self, block):
        was, self.blocked = self.blocked, block
        return was

    def setVisible(self, visible):
        self.visible = visible

    def isVisible(self):
        return self.visible

    def addItems(self, items):
        self.items += list(items)

    def selectedItems(self):
        return [types.SimpleNamespace(text=lambda t=t: t) for t in self.selected]

    def setMRMLTableNode(self, table):
        self.tables.append(table)

    def currentNode(self):
        return self.node

    def setCurrentNode(self, node):
        """qMRMLNodeComboBox: a user (or the code) picks ``node``; currentNodeChanged only when it changes."""
        if node is not self.node:
            self.node = node
            self.emit("currentNodeChanged(vtkMRMLNode*)", node)

    def findChildren(self, cls):
        return []


class FakeSlider(FakeWidget):
    """ctkSliderWidget: a value kept inside [minimum, maximum]; setting it emits valueChanged unless signals are
    blocked. Its spin box emits valueChanged too, on every keystroke while keyboard tracking is on
    (ctkSliderWidget::setTracking only affects the slider, CTK as bundled with Slicer 5.8)."""

    def __init__(self, cls: str, name: str):
        super().__init__(cls, name)
        self.__dict__.update(_value=0.0, minimum=0.0, maximum=1e9)
        self.spinBox = FakeSpinBox(self)

    @property
    def value(self):
        return self.__dict__["_value"]

    @value.setter
    def value(self, value):
        value = min(max(float(value), self.minimum), self.maximum)
        if value != self.__dict__.get("_value"):
            self.__dict__["_value"] = value
            self.emit("valueChanged(double)", value)

    def userSets(self, value: float) -> None:
        """A release after a drag, or a number typed into the spin box."""
        self.value = value

    def findChildren(self, cls):
        return [self.spinBox] if cls is QDoubleSpinBox else []


class QDoubleSpinBox:  # the type the widget looks for among a slider's children
    pass


def fake_ui() -> types.SimpleNamespace:
    """Every named widget of the .ui as a fake of its kind: a name the widget uses that the .ui lacks fails."""
    ui = types.SimpleNamespace()
    for element in ET.parse(UI).getroot().iter("widget"):
        cls, name = element.get("class"), element.get("name")
        widget = (FakeSlider if cls == "ctkSliderWidget" else FakeWidget)(cls, name)
        for prop in element.findall("property"):  # the numbers and states a widget starts with, as Qt reads them
            number, state = prop.find("number"), prop.find("bool")
            if prop.get("name") in ("value", "minimum", "maximum") and number is not None and cls != "ctkSliderWidget":
                setattr(widget, prop.get("name"), int(number.text))
            elif prop.get("name") == "checked" and state is not None:
                widget.checked = state.text == "true"
        setattr(ui, name, widget)
    return ui


class FakeTimer:
    """qt.QTimer: the widget's coalescing timers; ``started`` counts start() calls."""

    singleShots: list = []

    def __init__(self):
        self.started = 0

    def setSingleShot(self, single):
        pass

    def setInterval(self, ms):
        pass

    def connect(self, signal, slot):
        self.slot = slot

    def start(self):
        self.started += 1

    def stop(self):
        pass

    @staticmethod
    def singleShot(ms, function):
        FakeTimer.singleShots.append((ms, function))


# --------------------------------------------------------------------------- the parameter node wrapper
class FakeParameterNode:
    """A ``parameterNodeWrapper`` as Slicer 5.8.1 implements it (``wrapper.py``):

    * typed attributes; ``WithinRange`` and ``Choice`` validation on write;
    * ModifiedEvents batched by StartModify/EndModify and sent to observers by priority;
    * ``connectGui`` returns None (the tag is returned from 5.10 on); ``connectParametersToGui`` returns a tag;
      ``disconnectGui(tag)`` removes that connection, ``disconnectGui(None)`` nothing;
    * a connection writes every bound widget on each ModifiedEvent; a bound widget's change writes the node;
    * making a combo-box connector clears and refills the box (``QComboBoxToStringableConnector``): the box
      emits currentIndexChanged(0), and every connector still attached to it writes the first choice into
      the node before the new connector writes the node's value to the box.
    """

    def __init__(self, values: dict, choices: dict, ranges: dict):
        self.__dict__.update(values=dict(values), choices=choices, ranges=ranges, observers={}, nextTag=0,
                             depth=0, dirty=False, events=0, connections={}, nextGuiTag=0, writingGui=False)

    def __getattr__(self, name):
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        if name in self.ranges:
            low, high = self.ranges[name]
            assert low <= value <= high, f"WithinRange rejects {name}={value}"
        if name in self.choices:
            assert value in self.choices[name], f"Choice rejects {name}={value!r}"
        if self.values.get(name) != value:
            self.values[name] = value
            self.Modified()

    def Modified(self):
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
            for _tag, (priority, callback) in sorted(self.observers.items(), key=lambda o: -o[1][0]):
                callback(self, "ModifiedEvent")

    def AddObserver(self, _event, callback, priority=0.0):
        self.__dict__["nextTag"] += 1
        self.observers[self.nextTag] = (priority, callback)
        return self.nextTag

    def RemoveObserver(self, tag):
        self.observers.pop(tag, None)

    # ---- GUI connections
    def connectGui(self, ui):
        from SyntheticMRILib.slicer.widget import BINDINGS

        self.connectParametersToGui({name: getattr(ui, widget) for name, widget in BINDINGS.items()})
        return None  # Slicer 5.8: no tag

    def connectParametersToGui(self, mapping):
        for name, widget in mapping.items():
            if name in self.choices:  # the box is refilled: what is attached to it writes choice 0
                for connection in list(self.connections.values()):
                    for other, bound in connection.items():
                        if bound is widget and not self.writingGui:
                            setattr(self, other, self.choices[other][0])
        self.__dict__["nextGuiTag"] += 1
        tag = self.nextGuiTag
        self.connections[tag] = dict(mapping)
        for name, widget in mapping.items():
            widget.bound = getattr(self, name)
        self.AddObserver("ModifiedEvent", lambda *a: self._writeGui())  # never removed, as in wrapper.py
        return tag

    def disconnectGui(self, tag):
        self.connections.pop(tag, None)

    def _writeGui(self):
        self.__dict__["writingGui"] = True
        try:
            for connection in self.connections.values():
                for name, widget in connection.items():
                    widget.bound = getattr(self, name)
        finally:
            self.__dict__["writingGui"] = False

    def userPicks(self, name, value):
        """A user changes a bound widget: every connection attached to it writes the node."""
        for connection in list(self.connections.values()):
            if name in connection:
                setattr(self, name, value)


# --------------------------------------------------------------------------- QProcess
class FakeQProcess:
    """qt.QProcess as the widget uses it, over subprocess. Like QProcess, kill() ends the direct child only.
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
        raise AssertionError("the process did not finish in time")


# --------------------------------------------------------------------------- stubs for the GUI-only modules
def install_gui_stubs(monkeypatch, tmp_path: Path):
    """Stub qt and the Slicer modules that only the application has; give slicer-core a scene and an app.
    Returns the real ``slicer`` module (MRML from the slicer-core wheel)."""
    import contextlib

    slicer = pytest.importorskip("slicer")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("slicer-core (real MRML) is not installed")
    from SyntheticMRILib.slicer import bridge

    class Base:
        def __init__(self, *args, **kwargs):
            pass

    class TestBase(__import__("unittest").TestCase):
        def delayDisplay(self, message, msec=None):
            pass

    FakeTimer.singleShots = []
    qt = types.ModuleType("qt")
    qt.QTimer, qt.QProcess, qt.QDoubleSpinBox = FakeTimer, FakeQProcess, QDoubleSpinBox
    stubs = {
        "qt": qt,
        "slicer.i18n": types.SimpleNamespace(tr=lambda text: text, translate=lambda context, text: text),
        "slicer.parameterNodeWrapper": types.SimpleNamespace(
            parameterNodeWrapper=lambda cls: cls, Choice=lambda choices: ("Choice", tuple(choices)),
            WithinRange=lambda low, high: ("WithinRange", low, high)),
        "slicer.ScriptedLoadableModule": types.SimpleNamespace(
            ScriptedLoadableModule=Base, ScriptedLoadableModuleLogic=Base, ScriptedLoadableModuleTest=TestBase,
            ScriptedLoadableModuleWidget=Base),
    }
    for name, stub in stubs.items():
        monkeypatch.setitem(sys.modules, name, stub)
    for name in ("SyntheticMRILib.slicer.widget", "SyntheticMRILib.slicer.reparam_section",
                 "SyntheticMRILib.slicer.process"):  # imported afresh over the stubs
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(slicer, "mrmlScene", bridge.create_scene(), raising=False)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(temporaryPath=str(tmp_path), testingEnabled=lambda: True),
                        raising=False)
    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(slicer.util, "WaitCursor", contextlib.nullcontext, raising=False)
    monkeypatch.setattr(slicer.util, "setSliceViewerLayers", lambda **k: None, raising=False)
    return slicer


def import_widget_module():
    return importlib.import_module("SyntheticMRILib.slicer.widget")
