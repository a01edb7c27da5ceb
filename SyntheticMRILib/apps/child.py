"""``python -m SyntheticMRILib.apps.child ARGS``: ``syntheticmri ARGS`` that stops when its stdin closes.

The child of :mod:`SyntheticMRILib.jobs`: when stdin closes (the parent
cancelled, or died) it raises ``KeyboardInterrupt`` in the main thread, so that
``write_volume`` removes its temporary file, and exits hard if that has not ended
it within :data:`STOP_GRACE_S`. Only for a parent that holds the stdin pipe open
(from a shell, ``< /dev/null`` would stop it at once).
"""
from __future__ import annotations

import _thread
import importlib
import os
import sys
import threading
import time
from typing import Optional, Sequence

from .cli import main
from ..jobs import CANCELLED

__all__ = ["child_main", "STOP_GRACE_S"]

STOP_GRACE_S = 2.0  # after stdin closes: time for a clean stop before the child exits hard


def _stop_when_stdin_closes(grace: float = STOP_GRACE_S) -> None:
    """Watch stdin in a thread: at end of file, interrupt the main thread, and exit hard ``grace`` seconds later."""
    if sys.stdin is None:
        return

    def watch() -> None:
        try:
            fd = sys.stdin.fileno()
            while os.read(fd, 4096):
                pass
        except (OSError, ValueError):  # a broken pipe (Windows) is an end of file too
            pass
        _thread.interrupt_main()  # KeyboardInterrupt: finally blocks run, write_volume drops its temporary file
        time.sleep(grace)
        print("syntheticmri: cancelled", file=sys.stderr, flush=True)  # still alive: stuck in native code, so
        os._exit(CANCELLED)  # exit hard, but say why as a clean stop does

    threading.Thread(target=watch, name="stdin-lifeline", daemon=True).start()


def child_main(argv: Optional[Sequence[str]] = None) -> int:
    """``syntheticmri ARGS``, stopped when its stdin closes."""
    # Every job a child runs needs PyTorch: import it before the first progress line, so that a Cancel never lands in
    # its import (native code, seconds on a slow machine; the interrupt would wait and the child exit without a word).
    importlib.import_module("torch")

    _stop_when_stdin_closes()
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("syntheticmri: cancelled", file=sys.stderr, flush=True)
        return CANCELLED


if __name__ == "__main__":
    sys.exit(child_main())
