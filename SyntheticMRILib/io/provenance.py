"""Provenance of a synthetic contrast: which protocol made it, written into the file and the Slicer node.

This module owns the keys and their format, for writing and for reading. One naming scheme,
``SyntheticMRI.<Name>``, serves three places:

* NRRD (and MHA/MHD) headers: one ``key:=value`` field per key (SimpleITK metadata);
* Slicer volume nodes: one node attribute per key (the bridge sets them);
* NIfTI, which has no key/value fields: the 80-character ``descrip`` field holds a compact form,
  ``SyntheticMRI 0.1.0 ir TR=9000 TE=90 TI=2372 table=3T preset=T2-FLAIR`` (numbers to at most
  6 significant digits there; the NRRD fields are exact).

========================== ===================================================================
key                        value
========================== ===================================================================
SyntheticMRI.Version       ``SyntheticMRILib.__version__`` of the writer
SyntheticMRI.Sequence      ``se``, ``ir``, ``psir``, ``dir``, ``gre`` or ``dsir``
SyntheticMRI.TR_ms         repetition time, ms (shortest exact decimal: "9000", "437.41232299804688")
SyntheticMRI.TE_ms         echo time, ms
SyntheticMRI.TI_ms         inversion time, ms (TI1 of dir/dsir); only for sequences that take it
SyntheticMRI.TI2_ms        second, shorter inversion time, ms (dir, dsir)
SyntheticMRI.FlipAngle_deg flip angle, degrees (gre)
SyntheticMRI.Preset        the preset's name, when the protocol is a preset
SyntheticMRI.TissueTable_T field strength (T) of the tissue table the inversion times were computed
                           from as null points (every preset; flair/stir with TI left to the default);
                           absent when no table was used
SyntheticMRI.Protocol      one line for people: ``ir TR 9000 TE 90 TI 2372`` (the Slicer module shows it)
SyntheticMRI.Scale         storage, not provenance: the file's integers times this are the values
                           (see :func:`SyntheticMRILib.io.volumes.quantize`); NIfTI uses its own
                           ``scl_slope`` instead
========================== ===================================================================

Importing it imports no torch: the bridge and the GUI read the keys from here. The storage fields (scale,
NIfTI description) belong to :mod:`.volumes`, which writes and reads them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional

from .. import __version__
from ..physics.protocols import NULLED_IR, Preset, Protocol
from ..physics.tissues import DEFAULT_FIELD_T
from .volumes import NIFTI_DESCRIPTION, SCALE_KEY, PathLike, is_nifti, read_header, write_volume

__all__ = [
    "Provenance", "VERSION_KEY", "SEQUENCE_KEY", "PARAMETER_KEYS", "PRESET_KEY", "TABLE_KEY", "PROTOCOL_KEY",
    "SCALE_KEY", "PROVENANCE_KEYS", "NIFTI_DESCRIPTION", "read_provenance", "write_contrast", "describe",
]

PREFIX = "SyntheticMRI."
VERSION_KEY = PREFIX + "Version"
SEQUENCE_KEY = PREFIX + "Sequence"
PARAMETER_KEYS: Dict[str, str] = {
    "tr": PREFIX + "TR_ms", "te": PREFIX + "TE_ms", "ti": PREFIX + "TI_ms", "ti2": PREFIX + "TI2_ms",
    "flip": PREFIX + "FlipAngle_deg",
}
PRESET_KEY = PREFIX + "Preset"
TABLE_KEY = PREFIX + "TissueTable_T"
PROTOCOL_KEY = PREFIX + "Protocol"
# Every key a contrast's provenance may set (a node that gets a new contrast drops them all first).
PROVENANCE_KEYS = (VERSION_KEY, SEQUENCE_KEY, *PARAMETER_KEYS.values(), PRESET_KEY, TABLE_KEY, PROTOCOL_KEY)
_DESCRIPTION_LENGTH = 79  # the 80-byte field, NUL-terminated
_MAGIC = "SyntheticMRI"
_SHORT = {"tr": "TR", "te": "TE", "ti": "TI", "ti2": "TI2", "flip": "FA"}  # keys of the compact (NIfTI) form




def _number(value: float) -> str:
    """The shortest text that reads back as exactly ``value``: "9000", "2.5", "437.41232299804688"."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


@dataclass(frozen=True)
class Provenance:
    """What made a synthetic contrast: its protocol (ms, degrees), the preset it is (if one), the field
    strength of the tissue table its null-point inversion times came from (if any), and the writer's version."""

    protocol: Protocol
    preset: Optional[str] = None
    table_field: Optional[float] = None
    version: str = __version__

    @classmethod
    def of_preset(cls, preset: Preset) -> "Provenance":
        """A preset: its name, its protocol and the 3 T table its inversion times were computed from."""
        return cls(preset.protocol, preset.name, DEFAULT_FIELD_T)

    @classmethod
    def of_arguments(cls, protocol: Protocol, sequence: Optional[str] = None, ti: Optional[float] = None,
                     field: float = DEFAULT_FIELD_T) -> "Provenance":
        """A protocol from :func:`~SyntheticMRILib.physics.protocols.protocol_from_args`: records ``field``
        when that function computed TI (``flair``/``stir`` with ``ti`` None) at ``field`` tesla."""
        return cls(protocol, table_field=field if sequence in NULLED_IR and ti is None else None)

    # ------------------------------------------------------------------ key/value fields (NRRD, Slicer)
    def fields(self) -> Dict[str, str]:
        """The key/value fields, in the order of the module table; exact numbers."""
        fields = {VERSION_KEY: self.version, SEQUENCE_KEY: self.protocol.sequence}
        for name, value in self.protocol.values().items():
            fields[PARAMETER_KEYS[name]] = _number(value)
        if self.preset:
            fields[PRESET_KEY] = self.preset
        if self.table_field is not None:
            fields[TABLE_KEY] = _number(self.table_field)
        fields[PROTOCOL_KEY] = f"{self.protocol.sequence} {self.protocol.caption()}"
        return fields

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Optional["Provenance"]:
        """The provenance in ``fields`` (a header's metadata, a node's attributes), or None without one."""
        if SEQUENCE_KEY not in fields or PARAMETER_KEYS["tr"] not in fields:
            return None
        values = {name: float(fields[key]) for name, key in PARAMETER_KEYS.items() if key in fields}
        table = fields.get(TABLE_KEY)
        return cls(Protocol(fields[SEQUENCE_KEY], **values), fields.get(PRESET_KEY) or None,
                   float(table) if table is not None else None, fields.get(VERSION_KEY, "unknown"))

    # ------------------------------------------------------------------ the compact form (NIfTI descrip)
    def description(self) -> str:
        """At most 79 characters (the 80-byte field and its NUL): ``SyntheticMRI <version> <sequence> TR=.. TE=.. [TI=..] [TI2=..] [FA=..]
        [table=3T] [preset=NAME]``; numbers to 6 significant digits, fewer if that is what fits (then the preset's
        name goes, then whole trailing fields: a field is never cut)."""
        for preset in ((self.preset, None) if self.preset else (None,)):
            for digits in (6, 5, 4, 3):
                parts = [_MAGIC, self.version, self.protocol.sequence]
                parts += [f"{_SHORT[name]}={float(value):.{digits}g}" for name, value in self.protocol.values().items()]
                if self.table_field is not None:
                    parts.append(f"table={float(self.table_field):g}T")
                if preset:
                    parts.append(f"preset={preset}")
                if len(" ".join(parts)) <= _DESCRIPTION_LENGTH:
                    return " ".join(parts)
        while len(" ".join(parts)) > _DESCRIPTION_LENGTH and len(parts) > 1:
            parts.pop()
        return " ".join(parts)[:_DESCRIPTION_LENGTH]

    @classmethod
    def from_description(cls, text: str) -> Optional["Provenance"]:
        """The provenance in a compact form (see :meth:`description`), or None if ``text`` is not one."""
        tokens = (text or "").split()
        if len(tokens) < 3 or tokens[0] != _MAGIC:
            return None
        pairs = dict(token.split("=", 1) for token in tokens[3:] if "=" in token)
        by_short = {short: name for name, short in _SHORT.items()}
        try:
            values = {by_short[key]: float(value) for key, value in pairs.items() if key in by_short}
            table = float(pairs["table"].rstrip("T")) if "table" in pairs else None
        except ValueError:
            return None
        if "tr" not in values or "te" not in values:
            return None
        return cls(Protocol(tokens[2], **values), pairs.get("preset") or None, table, tokens[1])

    def header(self, path: PathLike) -> Dict[str, str]:
        """The header fields for a file at ``path``: the key/value fields, or for NIfTI the compact ``descrip``."""
        return {NIFTI_DESCRIPTION: self.description()} if is_nifti(path) else self.fields()


# ----------------------------------------------------------------------------- files
def write_contrast(volume, path: PathLike, provenance: Provenance, overwrite: bool = False,
                   bits: Optional[int] = None) -> Path:
    """:func:`~SyntheticMRILib.io.volumes.write_volume` with the provenance in the header; ``bits``: store
    scaled integers of that many bits (e.g. 12) instead of the float values (see ``quantize``)."""
    return write_volume(volume, path, overwrite, metadata=provenance.header(path), bits=bits)


def read_provenance(path: PathLike) -> Optional[Provenance]:
    """The provenance a file's header carries (key/value fields, else a NIfTI ``descrip``), or None."""
    metadata = read_header(path).metadata
    return Provenance.from_fields(metadata) or Provenance.from_description(metadata.get(NIFTI_DESCRIPTION, ""))


def _numbers(values) -> str:
    """Grid numbers to 6 decimals (float32 noise such as 1e-9 in a NIfTI direction reads as 0)."""
    return " ".join(f"{round(float(v), 6) + 0.0:g}" for v in values)


def describe(path: PathLike) -> str:
    """What ``syntheticmri info`` prints: the grid (x, y, z order, LPS as on disk), how voxels are stored,
    and the provenance fields (or that there are none)."""
    header = read_header(path)
    metadata = header.metadata
    direction = header.direction
    rows = [direction[i:i + 3] for i in range(0, len(direction), 3)] if len(direction) == 9 else [direction]
    lines = [
        str(path),
        f"  size       {' x '.join(map(str, header.size))} voxels (x, y, z)",
        f"  spacing    {_numbers(header.spacing)} mm",
        f"  origin     {_numbers(header.origin)} mm (LPS)",
        f"  direction  {' | '.join(_numbers(row) for row in rows)} (rows, LPS)",
        f"  voxels     {header.pixel_type}",
    ]
    if SCALE_KEY in metadata:
        lines[-1] += f", stored as integers: value = stored x {metadata[SCALE_KEY]} ({SCALE_KEY})"
    elif is_nifti(path) and float(metadata.get("scl_slope", "1") or 1) not in (0.0, 1.0):  # read as floats
        lines[-1] = (f"  voxels     {metadata.get('bitpix', '?')}-bit integers on disk, read as {header.pixel_type}: "
                     f"value = stored x {metadata['scl_slope']} + {metadata.get('scl_inter', '0')} "
                     "(scl_slope, scl_inter)")
    provenance = read_provenance(path)
    if provenance is None:
        lines.append("  provenance none: no SyntheticMRI fields in this header (not written by SyntheticMRI)")
        return "\n".join(lines)
    source = "NIfTI descrip, numbers to 6 significant digits" if is_nifti(path) else "header fields"
    lines.append(f"  provenance ({source})")
    fields = provenance.fields()
    if not is_nifti(path):  # show what the file says, keys as written
        fields = {key: metadata[key] for key in PROVENANCE_KEYS if key in metadata}
    width = max(map(len, fields))
    lines += [f"    {key:{width}s}  {value}" for key, value in fields.items()]
    return "\n".join(lines)

