"""A ``syntheticmri`` child process run from the GUI through ``qt.QProcess``, off the GUI thread.

The argv comes from :mod:`SyntheticMRILib.jobs` (one place for the child's
command line and its ``progress DONE/TOTAL WHAT`` lines). The blocking runner for
the console and tests is :func:`SyntheticMRILib.jobs.run_batch_process`.
"""
from __future__ import annotations

import logging
from typing import Callable, List, Optional

from .. import jobs

__all__ = ["ChildJob"]

Describe = Callable[[int, int, str], str]
Finished = Callable[[bool, bool, str, List[str]], None]


class ChildJob:
    """A child whose progress lines drive ``progressBar`` and, through ``describe(done, total, what)``,
    ``statusLabel``; other lines are kept as messages. When it ends, ``onFinished(ok, cancelled, error,
    messages)`` runs.

    cancel() closes the child's stdin, and the child stops itself within a second, dropping the file it was
    writing. QProcess.kill() alone would not do: PythonSlicer is a launcher that runs python-real as its own
    child, and kill() ends the launcher only; kill() follows after five seconds for a hung launcher.
    ``process`` is a ``qt.QProcess`` (a fake in tests); ``timer`` is ``qt.QTimer.singleShot``.
    """

    KILL_AFTER_MS = 5000

    def __init__(self, argv: List[str], progressBar, statusLabel, onFinished: Finished, describe: Describe,
                 process=None, singleShot: Optional[Callable[[int, Callable], None]] = None) -> None:
        if process is None or singleShot is None:
            import qt

            process = process or qt.QProcess()
            singleShot = singleShot or qt.QTimer.singleShot
        self.argv, self.process, self._singleShot = list(argv), process, singleShot
        self.progressBar, self.statusLabel, self.onFinished, self.describe = progressBar, statusLabel, onFinished, describe
        self.lines, self.messages, self.cancelled = jobs.LineBuffer(), [], False
        # PYTHONPATH leads the child to this SyntheticMRILib: the module's folder installed, the repository checked out.
        self.process.setEnvironment([f"{name}={value}" for name, value in jobs.child_environment().items()])
        self.process.connect("readyReadStandardOutput()", self._onOutput)
        self.process.connect("finished(int,QProcess::ExitStatus)", self._onFinished)
        # A program that cannot start emits errorOccurred(FailedToStart) and no finished().
        self.process.connect("errorOccurred(QProcess::ProcessError)", self._onError)

    def start(self) -> None:
        """Start the child; call it once the job is stored, since a child that fails to start finishes at once."""
        self.progressBar.maximum = 0  # busy until the first progress line: the child imports torch first
        self.statusLabel.text = "Starting..."
        self.process.start(self.argv[0], self.argv[1:])

    def cancel(self) -> None:
        self.cancelled = True
        self.statusLabel.text = "Cancelling..."
        self.process.closeWriteChannel()
        self._singleShot(self.KILL_AFTER_MS, self.process.kill)  # a no-op once it has finished

    def kill(self) -> None:
        self.process.closeWriteChannel()
        self.process.kill()

    def _onError(self, error) -> None:
        if error == type(self.process).FailedToStart:
            self._onFinished(-1, 1, f"could not start {self.argv[0]}")

    def _onOutput(self, final: bool = False) -> None:
        lines = self.lines.feed(self.process.readAllStandardOutput()) + (self.lines.flush() if final else [])
        for line in lines:
            progress = jobs.parse_progress(line)
            if progress is None:  # e.g. "sub-03: skipped: ..."
                self.messages.append(line)
                logging.info(f"SyntheticMRI: {line}")
            else:
                self.progressBar.maximum, self.progressBar.value = progress[1], progress[0]
                self.statusLabel.text = self.describe(*progress) or self.statusLabel.text

    def _onFinished(self, exitCode, exitStatus, problem: Optional[str] = None) -> None:
        self._onOutput(final=True)
        stderr, bar = self.process.readAllStandardError(), self.progressBar
        bar.maximum = max(bar.maximum, 1)
        ok = problem is None and exitStatus == 0 and exitCode == 0
        if ok:
            bar.value = bar.maximum
        error = "" if ok else (problem or jobs.error_line(stderr) or f"exit code {exitCode}")
        if error and not self.cancelled:
            logging.error(f"SyntheticMRI: {error}")
        self.onFinished(ok, self.cancelled, error, self.messages)
