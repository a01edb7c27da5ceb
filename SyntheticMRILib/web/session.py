"""The files of one web-app server: uploads in, results out, all under one temporary folder removed on exit.

Nothing the browser sends becomes a path: an upload is stored as ``uploads/<k>/<map><extension>``, where ``k``
counts the server's upload attempts, the map (``t1``, ``t2``, ``pd``) is the server's own word and only the
extension, one of the single-file formats, comes from the browser's file name. A file is refused (and removed)
when it grows past the size limit while it streams in, when its header names another file to read (NRRD
``data file``, MetaImage ``ElementDataFile``: the server would read its own files), or when it declares more
voxels than :data:`MAX_VOXELS` (a small compressed file can inflate to any size). Results are named by the server.
"""
from __future__ import annotations

import atexit
import itertools
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import SimpleITK as sitk

from ..errors import InputError
from ..io.maps import MAP_NAMES

__all__ = ["Session", "UploadSet", "SET_DROPPED", "DEFAULT_UPLOAD_MB", "UPLOAD_EXTENSIONS", "MAX_VOXELS", "result_name"]

DEFAULT_UPLOAD_MB = 1024.0  # a 512^3 float32 map is 512 MiB; a whole-brain map is usually 5-60 MiB
UPLOAD_EXTENSIONS = (".nrrd", ".nii", ".nii.gz", ".mha")  # single files: no detached data (.nhdr, .mhd, .hdr)
MAX_VOXELS = 512**3  # per map: 0.5 GiB as float32, and the app holds a few copies
_HEADER_BYTES = 1 << 16  # NRRD and MetaImage headers are text, well under this
_SUPERSEDED = "not kept: superseded while it arrived"
SET_DROPPED = "not kept: the set of maps it belonged to was refused or replaced meanwhile"


def result_name(label: str, extension: str) -> str:
    """A file name for a result called ``label`` (a node name): letters, digits, '-', '_' and '.' only."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "result"
    return stem + extension


def _extension(client_name: str) -> str:
    lower = str(client_name).lower()
    found = next((ext for ext in sorted(UPLOAD_EXTENSIONS, key=len, reverse=True) if lower.endswith(ext)), None)
    if found is None:
        raise InputError(f"unsupported file type; upload one of {', '.join(UPLOAD_EXTENSIONS)}")
    return found


def _header_lines(path: Path, end) -> list:
    """The header's lines up to the one ``end(line)`` accepts (included); InputError if none does within the cap."""
    with open(path, "rb") as handle:
        head = handle.read(_HEADER_BYTES)
    lines = []
    for raw in re.split(rb"\r\n|\r|\n", head)[:-1]:  # the readers end a line at any of these; the last piece may be cut
        line = raw.decode("latin-1")
        lines.append(line)
        if end(line):
            return lines
    raise InputError(f"no end of the header within its first {_HEADER_BYTES // 1024} KiB")


def _check_header(path: Path) -> None:
    """Refuse a header that points at another file, or declares more than one component or :data:`MAX_VOXELS` voxels.
    NRRD: fields ``key: value`` up to the first empty line; MetaImage: ``Key = Value`` (or ``Key: Value``) up to
    ``ElementDataFile``, the last field, which must be ``LOCAL``. Lines end at CR, LF or CRLF, keys are read at the
    start of a line: as the readers read them."""
    if path.suffix == ".nrrd":
        for line in _header_lines(path, lambda line: line == ""):
            if not line.startswith("#") and ":=" not in line and line.split(":", 1)[0].strip().lower() in ("data file", "datafile"):
                raise InputError("the NRRD header names a separate data file; upload a NRRD with its data inside")
    if path.suffix == ".mha":  # MetaIO takes "=" or ":" between key and value, and stops at the first ElementDataFile
        last = _header_lines(path, lambda line: re.split(r"[=:]", line, 1)[0].strip().lower() == "elementdatafile")[-1]
        if re.split(r"[=:]", last, 1)[-1].strip().upper() != "LOCAL":
            raise InputError("the MetaImage header names a separate data file; upload an .mha with its data inside")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return  # not readable as an image: read_volume says so in the library's words
    if reader.GetNumberOfComponents() != 1:
        raise InputError(f"has {reader.GetNumberOfComponents()} components per voxel; expected a scalar 3-D map")
    voxels = 1
    for n in reader.GetSize():
        voxels *= int(n)
    if voxels > MAX_VOXELS:
        raise InputError(f"declares {voxels:,} voxels, more than this server reads ({MAX_VOXELS:,})")


class Session:
    """A temporary folder (``uploads/``, ``results/``, job folders) for one server, removed by :meth:`close` and at
    interpreter exit.

    Args:
        max_upload_mb: the largest file accepted from the browser, in MiB.
        root: where the folder is made (default: the system's temporary folder).

    Examples::

        session = Session(max_upload_mb=100)
        folder = session.new_upload()
        path = await session.receive(folder, "t1", "../../etc/T1 map.nii.gz", body)  # -> <folder>/t1.nii.gz
        session.close()
    """

    def __init__(self, max_upload_mb: float = DEFAULT_UPLOAD_MB, root: Optional[str] = None) -> None:
        if not max_upload_mb > 0:
            raise InputError(f"--max-upload-mb {max_upload_mb}: must be positive")
        self.max_upload_bytes = int(max_upload_mb * 2**20)
        self.folder = Path(tempfile.mkdtemp(prefix="SyntheticMRI-web-", dir=root))
        self.uploads, self.results = self.folder / "uploads", self.folder / "results"
        self.uploads.mkdir()
        self.results.mkdir()
        self._attempts = itertools.count(1)
        atexit.register(self.close)

    def new_upload(self) -> Path:
        """A fresh folder for one set of maps, so that a refused set never mixes with an accepted one."""
        folder = self.uploads / str(next(self._attempts))
        folder.mkdir()
        return folder

    def target(self, folder: Path, map_name: str, client_name: str) -> Path:
        """Where ``map_name`` of the upload ``folder`` goes; ``client_name`` gives only the extension."""
        if map_name not in MAP_NAMES:
            raise InputError(f"{map_name!r}: not a map; expected one of {', '.join(MAP_NAMES)}")
        return folder / (map_name + _extension(client_name))

    async def receive(self, folder: Path, map_name: str, client_name: str, chunks,
                      superseded: Callable[[], bool] = lambda: False) -> Path:
        """Store ``map_name`` in ``folder`` from ``chunks`` (an async iterator of bytes, e.g. an HTTP body), the size
        checked as it grows and the header once complete, under a name of its own until then: a refused,
        ``superseded()`` or concurrent upload of the same map never leaves or touches another's file."""
        path = self.target(folder, map_name, client_name)
        partial = folder / f".partial-{uuid.uuid4().hex}{path.name[len(map_name):]}"
        size = 0
        try:
            with open(partial, "wb") as handle:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_upload_bytes:
                        raise InputError(f"more than this server accepts ({self.max_upload_bytes / 2**20:g} MiB; "
                                         "syntheticmri web --max-upload-mb)")
                    if superseded():
                        raise InputError(_SUPERSEDED)
                    handle.write(chunk)
            if superseded():  # dropped while the body ended: no await from here to the rename
                raise InputError(_SUPERSEDED)
            if size == 0:
                raise InputError("the file is empty")
            _check_header(partial)
            for old in folder.glob(map_name + ".*"):  # this map chosen before, in another format
                old.unlink()
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        return path

    def drop(self, folder: Path) -> None:
        """Remove an upload folder (a set that was refused, or replaced)."""
        if folder.parent == self.uploads:
            shutil.rmtree(folder, ignore_errors=True)

    def result_path(self, label: str, extension: str) -> Path:
        """Where the result called ``label`` is written (see :func:`result_name`)."""
        return self.results / result_name(label, extension)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class UploadSet:
    """The T1, T2 and PD maps of one upload, arriving file by file (possibly at once) into one folder of
    ``session``. A refused file drops the set (the next file starts a new one); a newer file for a map, or a new
    set, stops an upload still streaming.

    Args:
        session: where the files go (:meth:`Session.new_upload`, :meth:`Session.receive`).

    Examples::

        uploads = UploadSet(session)
        paths = await uploads.receive("t1", "T1.nii.gz", body)  # None until all three maps are in
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self.folder: Optional[Path] = None
        self.received: Dict[str, Tuple[Path, str]] = {}  # map -> (path, the browser's name)
        self._generations: Dict[str, int] = {}

    async def receive(self, name: str, client: str, chunks, length: Optional[int] = None) -> Optional[List[Path]]:
        """Store one map from ``chunks`` (``length`` as announced); the set's paths once all three are in, else None.
        InputError, its message naming ``client``, when refused."""
        limit = self.session.max_upload_bytes
        if length is not None and length > limit:
            raise InputError(f"{client}: more than this server accepts ({limit / 2**20:g} MiB; syntheticmri web --max-upload-mb)")
        folder = self.folder = self.folder or self.session.new_upload()
        generation = self._generations[name] = self._generations.get(name, 0) + 1
        superseded = lambda: self.folder != folder or self._generations[name] != generation  # noqa: E731
        try:
            path = await self.session.receive(folder, name, client, chunks, superseded)
        except InputError as error:
            if self.folder != folder:
                raise InputError(f"{client}: {SET_DROPPED}") from None
            if superseded():
                raise InputError(f"{client}: not kept: a newer file for this map was chosen meanwhile") from None
            self.drop()
            raise InputError(f"{client}: {error}") from None
        self.received[name] = (path, client)
        return [self.received[n][0] for n in MAP_NAMES] if all(n in self.received for n in MAP_NAMES) else None

    def missing(self) -> List[str]:
        return [n for n in MAP_NAMES if n not in self.received]

    def in_browser_words(self, message: str) -> str:
        """``message`` with the server's paths of this set replaced by the browser's file names."""
        for path, client in self.received.values():
            message = message.replace(str(path), client)
        return message

    def accept(self) -> None:
        """The set is taken: its folder stays; the next file starts a new set."""
        self.folder, self.received = None, {}

    def drop(self) -> None:
        """Forget the set and remove its folder: the next file starts a new set."""
        if self.folder is not None:
            self.session.drop(self.folder)
        self.folder, self.received = None, {}
