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
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import SimpleITK as sitk

from ..errors import InputError
from ..io.maps import MAP_NAMES

__all__ = ["Session", "DEFAULT_UPLOAD_MB", "UPLOAD_EXTENSIONS", "MAX_VOXELS", "result_name"]

DEFAULT_UPLOAD_MB = 1024.0  # a 512^3 float32 map is 512 MiB; a whole-brain map is usually 5-60 MiB
UPLOAD_EXTENSIONS = (".nrrd", ".nii", ".nii.gz", ".mha")  # single files: no detached data (.nhdr, .mhd, .hdr)
MAX_VOXELS = 512**3  # per map: 0.5 GiB as float32, and the app holds a few copies
_HEADER_BYTES = 1 << 16  # NRRD and MetaImage headers are text, well under this


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


def _check_header(path: Path) -> None:
    """Refuse a header that points at another file, or declares more voxels than :data:`MAX_VOXELS`."""
    if path.suffix in (".nrrd", ".mha"):
        with open(path, "rb") as handle:
            head = handle.read(_HEADER_BYTES).split(b"\n\n" if path.suffix == ".nrrd" else b"ElementDataFile", 1)
        text = head[0].decode("latin-1").lower()
        if path.suffix == ".nrrd" and re.search(r"^\s*data ?file\s*:", text, re.M):
            raise InputError("the NRRD header names a separate data file; upload a NRRD with its data inside")
        if path.suffix == ".mha":
            rest = head[1].decode("latin-1").split("\n", 1)[0] if len(head) > 1 else ""
            if rest.strip(" =\r").upper() != "LOCAL":
                raise InputError("the MetaImage header names a separate data file; upload an .mha with its data inside")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return  # not readable as an image: read_volume says so in the library's words
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
        path = session.receive(folder, "t1", "../../etc/T1 map.nii.gz", chunks)  # -> <folder>/t1.nii.gz
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

    def receive(self, folder: Path, map_name: str, client_name: str, chunks: Iterator[bytes]) -> Path:
        """Store ``map_name`` from ``chunks`` (bytes as they arrive) in ``folder``, checking the size as it grows and
        the header when complete; on any refusal nothing is left. See :meth:`receive_async` for a stream."""
        path = self.target(folder, map_name, client_name)
        with self._writing(path) as write:
            for chunk in chunks:
                write(chunk)
        return path

    async def receive_async(self, folder: Path, map_name: str, client_name: str, chunks) -> Path:
        """:meth:`receive` for an asynchronous iterator of chunks (an HTTP request body)."""
        path = self.target(folder, map_name, client_name)
        with self._writing(path) as write:
            async for chunk in chunks:
                write(chunk)
        return path

    @contextmanager
    def _writing(self, path: Path):
        """``write(chunk)`` into ``path``, the size checked as it grows, the header once complete; refused: no file."""
        for old in path.parent.glob(path.name.split(".")[0] + ".*"):  # this map, chosen again
            old.unlink()
        size = 0

        def write(chunk: bytes) -> None:
            nonlocal size
            size += len(chunk)
            if size > self.max_upload_bytes:
                raise InputError(f"more than this server accepts ({self.max_upload_bytes / 2**20:.0f} MiB; "
                                 "syntheticmri web --max-upload-mb)")
            handle.write(chunk)

        try:
            with open(path, "wb") as handle:
                yield write
            if size == 0:
                raise InputError("the file is empty")
            _check_header(path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def drop(self, folder: Path) -> None:
        """Remove an upload folder (a set that was refused, or replaced)."""
        if folder.parent == self.uploads:
            shutil.rmtree(folder, ignore_errors=True)

    def result_path(self, label: str, extension: str) -> Path:
        """Where the result called ``label`` is written (see :func:`result_name`)."""
        return self.results / result_name(label, extension)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

