"""What a cohort run makes for every subject: its steps, their output files, and the key of each.

A recipe comes from the command line (``--preset``, ``--protocol``, ``--learned``,
``--segment``) or a small JSON/YAML file with the same content::

    presets: [T1w, T2-FLAIR]
    protocols:                  # custom contrasts: file name -> sequence and parameters (ms, degrees)
      T1w-short: {sequence: se, tr: 450, te: 10}
    learned: true               # the segmentation model's learned contrasts
    segment: true               # segmentation.nrrd + volumes.csv per subject, one volumes.csv for the cohort
    model: path/to/model.pt     # optional; default: the shipped model
    storage: float32            # or int16 (12-bit integers and a scale)

Each step has a *definition*: what, besides the subject's maps, decides its output bytes (the
protocol and its provenance, the model's sha256, the storage, the library version). Its sha256 is the
step's key; :mod:`.ledger` records it with every output, and a rerun compares keys to tell a
finished output from one made by another request.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .. import __version__
from ..errors import InputError
from ..io.provenance import Provenance
from ..io.volumes import COMPACT_BITS, PathLike
from ..physics.protocols import NULLED_IR, SEQUENCES, preset, protocol_from_args

__all__ = ["Step", "Recipe", "STORAGES", "SEGMENTATION", "SUBJECT_VOLUMES", "parse_protocol", "read_recipe_file",
           "build_recipe"]

STORAGES = {"float32": None, "int16": COMPACT_BITS}  # --storage -> bits of write_volume
SEGMENTATION, SUBJECT_VOLUMES = "segmentation.nrrd", "volumes.csv"  # the segment step's files in a subject's folder
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")  # a contrast's name is its file's stem: no paths
_RESERVED = ("segmentation", "volumes", "learned_")  # prefixes of the other steps' files
_STEP_NAMES = ("learned", "segment")  # the names of the other steps
_KEYS = {"presets": "a list of preset names", "protocols": "a mapping: name -> {sequence: ..., tr: ..., te: ...}",
         "learned": "true or false", "segment": "true or false", "model": "a file path", "storage": "float32 or int16"}


def _key(definition: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Step:
    """One thing made for every subject: ``kind`` is ``contrast`` (a preset or custom protocol), ``learned``
    (the model's contrasts) or ``segment``; ``contrasts`` maps each contrast file to its provenance;
    ``files`` are all its outputs, relative to the subject's folder."""

    name: str
    kind: str
    files: Tuple[str, ...]
    definition: Mapping[str, Any]
    contrasts: Tuple[Tuple[str, Provenance], ...] = ()

    @property
    def key(self) -> str:
        """The sha256 of the definition: equal keys make equal bytes from equal maps."""
        return _key(self.definition)


@dataclass(frozen=True)
class Recipe:
    """The steps of a run, the model they need (if any) and the storage of contrasts (bits, None: float32)."""

    steps: Tuple[Step, ...]
    model: Optional[Path] = None
    bits: Optional[int] = None
    model_sha256: Optional[str] = field(default=None, compare=False)

    def files(self) -> List[Tuple[Step, str]]:
        return [(step, name) for step in self.steps for name in step.files]

    @property
    def needs_model(self) -> bool:
        return any(step.kind in ("learned", "segment") for step in self.steps)


def parse_protocol(text: str) -> Tuple[str, Dict[str, Any]]:
    """``NAME=SEQUENCE,tr=MS,te=MS[,ti=MS][,ti2=MS][,flip=DEG]`` (the ``--protocol`` form) as (name, fields)."""
    problem = InputError(f"--protocol {text!r}: expected NAME=SEQUENCE,tr=MS,te=MS[,ti=MS][,ti2=MS][,flip=DEG]")
    name, named, rest = text.partition("=")
    sequence, *pairs = [part.strip() for part in rest.split(",")]
    if not (named and name.strip() and sequence):
        raise problem
    fields: Dict[str, Any] = {"sequence": sequence}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        try:
            fields[key.strip().lower()] = float(value)
        except ValueError:
            raise problem from None
    return name.strip(), fields


def read_recipe_file(path: PathLike) -> Dict[str, Any]:
    """The mapping in a ``.json``, ``.yaml`` or ``.yml`` recipe (see the module docstring), checked for unknown keys."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: recipe file not found")
    text, is_yaml = path.read_text(encoding="utf-8"), path.suffix.lower() in (".yaml", ".yml")
    if is_yaml:
        try:
            import yaml
        except ImportError:
            raise InputError(f"{path}: YAML recipes need PyYAML (pip install pyyaml); or write it as JSON") from None
    try:
        content = yaml.safe_load(text) if is_yaml else json.loads(text)
    except Exception as error:  # json.JSONDecodeError, yaml.YAMLError
        line = (str(error).splitlines() or [""])[0]
        raise InputError(f"{path}: not valid {'YAML' if is_yaml else 'JSON'} ({line})") from None
    if not isinstance(content, dict) or not set(content) <= set(_KEYS):
        unknown = sorted(set(content) - set(_KEYS)) if isinstance(content, dict) else "not a mapping"
        raise InputError(f"{path}: unknown recipe keys {unknown}; use {sorted(_KEYS)}")
    kinds = {"presets": lambda v: isinstance(v, list) and all(isinstance(p, str) for p in v),
             "protocols": lambda v: isinstance(v, dict) and all(isinstance(f, dict) for f in v.values()),
             "learned": lambda v: isinstance(v, bool), "segment": lambda v: isinstance(v, bool),
             "model": lambda v: isinstance(v, str), "storage": lambda v: isinstance(v, str)}
    for key, value in content.items():
        if not kinds[key](value):
            raise InputError(f"{path}: {key} must be {_KEYS[key]}, not {value!r}")
    return content


def _check_name(name: str, taken: Sequence[str]) -> str:
    if not _NAME.fullmatch(str(name)) or name.lower().startswith(_RESERVED) or name.lower() in _STEP_NAMES:
        raise InputError(f"{name!r}: a contrast's name is its file name: letters, digits, . _ + -, not "
                         f"{' or '.join(_STEP_NAMES)} and not starting with {', '.join(_RESERVED)}")
    if name.lower() in (t.lower() for t in taken):
        raise InputError(f"{name!r} is asked for twice")
    return name


def _contrast_step(name: str, provenance: Provenance, bits: Optional[int]) -> Step:
    definition = {"kind": "contrast", **provenance.fields(), "bits": bits}
    return Step(name, "contrast", (f"{name}.nrrd",), definition, ((f"{name}.nrrd", provenance),))


def build_recipe(
    presets: Sequence[str] = (),
    protocols: Optional[Mapping[str, Mapping[str, Any]]] = None,
    learned: bool = False,
    segment: bool = False,
    model: Optional[PathLike] = None,
    storage: str = "float32",
) -> Recipe:
    """A checked recipe; the model (when a step needs it) is read once here for its sha256 and contrasts.

    Args:
        presets: preset names (``syntheticmri presets``); each makes ``<name>.nrrd``.
        protocols: custom contrasts, ``{name: {"sequence": ..., "tr": ..., "te": ..., ...}}`` (ms, degrees).
        learned: the model's learned contrasts, ``learned_<k>_<sequence>.nrrd``.
        segment: ``segmentation.nrrd`` and ``volumes.csv``.
        model: a model file from ``train-seg``; default the shipped one.
        storage: ``float32`` or ``int16`` (12-bit integers and a scale) for the contrasts.

    Examples:
        >>> recipe = build_recipe(["T1w"], {"short": {"sequence": "se", "tr": 450, "te": 10}})
        >>> [step.files for step in recipe.steps]
        [('T1w.nrrd',), ('short.nrrd',)]
    """
    if storage not in STORAGES:
        raise InputError(f"storage {storage!r}: use {' or '.join(STORAGES)}")
    bits, steps, names = STORAGES[storage], [], []
    for name in presets:
        steps.append(_contrast_step(_check_name(name, names), Provenance.of_preset(preset(name)), bits))
        names.append(name)
    for name, fields in (protocols or {}).items():
        fields = dict(fields)
        sequence = str(fields.pop("sequence", "")).lower()
        if sequence not in set(SEQUENCES) | set(NULLED_IR) or not set(fields) <= {"tr", "te", "ti", "ti2", "flip"}:
            raise InputError(f"protocol {name!r}: needs a sequence ({', '.join(sorted(set(SEQUENCES) | set(NULLED_IR)))}) "
                             "and only tr, te, ti, ti2, flip")
        if "tr" not in fields or "te" not in fields:
            raise InputError(f"protocol {name!r}: needs tr and te (ms)")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in fields.values()):
            raise InputError(f"protocol {name!r}: tr, te, ti, ti2 and flip are numbers (ms, degrees)")
        protocol = protocol_from_args(sequence, fields["tr"], fields["te"], fields.get("ti"), fields.get("ti2"),
                                      fields.get("flip"))
        provenance = Provenance.of_arguments(protocol, sequence, fields.get("ti"))
        steps.append(_contrast_step(_check_name(name, names), provenance, bits))
        names.append(name)
    model_path, model_sha = None, None
    if learned or segment:
        from ..models.segmenter import default_model_path, load_model
        from ..resources import sha256

        model_path = Path(model) if model is not None else default_model_path()
        loaded = load_model(model_path)  # an InputError for a bad file, before any work
        model_sha = sha256(model_path)
        common = {"model_sha256": model_sha, "version": __version__}
        if learned:
            if loaded.contrast is None:
                raise InputError(f"{model_path}: this model reads the raw maps; it has no learned contrasts")
            contrasts = tuple((f"learned_{k + 1}_{p.sequence}.nrrd", Provenance(p))
                              for k, p in enumerate(loaded.contrast.protocols()))
            steps.append(Step("learned", "learned", tuple(f for f, _ in contrasts),
                              {"kind": "learned", **common, "bits": bits}, contrasts))
        if segment:
            steps.append(Step("segment", "segment", (SEGMENTATION, SUBJECT_VOLUMES), {"kind": "segment", **common}))
    elif model is not None:
        raise InputError("--model is for --learned or --segment")
    if not steps:
        raise InputError("nothing to make: give --preset, --protocol, --learned, --segment or a --recipe")
    return Recipe(tuple(steps), model_path, bits, model_sha)
