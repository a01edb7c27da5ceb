"""The files of one web-app server: uploads in, results out, all under one temporary folder removed on exit.

Nothing the browser sends becomes a path: an upload is stored as ``uploads/<map><extension>``, where the map
(``t1``, ``t2``, ``pd``) is the server's own word and only the extension, one of the readable formats, comes from
the browser's file name; results are named by the server.
"""
from __future__ import annotations

import atexit
import re
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from ..errors import InputError
from ..io.maps import MAP_NAMES
from ..io.volumes import EXTENSIONS, write_atomic

__all__ = ["Session", "DEFAULT_UPLOAD_MB", "result_name"]

DEFAULT_UPLOAD_MB = 1024.0  # a 512^3 float32 map is 512 MB; a whole-brain map is usually 5-60 MB


def result_name(label: str, extension: str) -> str:
    """A file name for a result called ``label`` (a node name): letters, digits, '-', '_' and '.' only."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "result"
    return stem + extension


def _extension(client_name: str) -> str:
    lower = str(client_name).lower()
    found = next((ext for ext in sorted(EXTENSIONS, key=len, reverse=True) if lower.endswith(ext)), None)
    if found is None:
        raise InputError(f"{client_name}: unsupported file type; use one of {', '.join(EXTENSIONS)}")
    return found


class Session:
    """A temporary folder (``uploads/``, ``results/``, job folders) for one server, removed by :meth:`close` and at
    interpreter exit.

    Args:
        max_upload_mb: the largest file accepted from the browser, in MiB.
        root: where the folder is made (default: the system's temporary folder).

    Examples::

        session = Session(max_upload_mb=100)
        path = session.upload("t1", "../../etc/T1 map.nii.gz", content)  # -> <folder>/uploads/t1.nii.gz
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
        atexit.register(self.close)

    def upload(self, map_name: str, client_name: str, content: Optional[bytes], size: Optional[int] = None) -> Path:
        """Store an uploaded ``map_name`` map; ``client_name`` (the browser's file name) gives only the extension.
        ``size`` (what the browser announced) is checked first, so an oversized file is refused before it is read."""
        if map_name not in MAP_NAMES:
            raise InputError(f"{map_name!r}: not a map; expected one of {', '.join(MAP_NAMES)}")
        extension = _extension(client_name)
        for length in (size, None if content is None else len(content)):
            if length is not None and length > self.max_upload_bytes:
                raise InputError(f"{client_name}: {length / 2**20:.0f} MiB is more than this server accepts "
                                 f"({self.max_upload_bytes / 2**20:.0f} MiB; syntheticmri web --max-upload-mb)")
        if not content:
            raise InputError(f"{client_name}: the file is empty")
        for old in self.uploads.glob(map_name + ".*"):  # the previous upload of this map, in any format
            old.unlink()
        return write_atomic(self.uploads / (map_name + extension), content)

    def result_path(self, label: str, extension: str) -> Path:
        """Where the result called ``label`` is written (see :func:`result_name`)."""
        return self.results / result_name(label, extension)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
