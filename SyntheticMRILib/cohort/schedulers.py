"""Where the subjects run: a plain loop in this process, or Dask (``dask.distributed``).

* ``scheduler="local", workers=1``: the plain loop; nothing but this process.
* ``scheduler="local", workers=N``: a ``LocalCluster`` of N worker processes, one thread each (Dask sets
  ``OMP_NUM_THREADS=1`` in them, so N workers use N cores), memory limited per worker by Dask's default
  share of this machine's.
* ``scheduler="tcp://host:8786"``: an existing cluster (``dask scheduler`` + ``dask worker``, or SLURM/PBS
  through dask-jobqueue, Kubernetes through dask-kubernetes); its workers need SyntheticMRILib installed
  and the study and output folders at the same paths (shared storage).

One task per subject. A worker that dies costs only its subject's unfinished outputs: Dask retries the
task elsewhere, and when it gives up the subject is reported (``on_lost``), not recorded as failed, so the
next run completes it. Stopping the loop (Ctrl-C, the Slicer module's Cancel) cancels what is queued and
closes a local cluster, which ends its worker processes.
"""
from __future__ import annotations

import asyncio
import logging
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Sequence, TypeVar

from ..errors import InputError

__all__ = ["open_scheduler", "run_tasks", "check_scheduler", "LOCAL"]

LOCAL = "local"
Task, Result = TypeVar("Task"), TypeVar("Result")


def check_scheduler(scheduler: str, workers: int) -> bool:
    """Whether ``scheduler``/``workers`` need Dask; an :class:`InputError` if they cannot be (before any work)."""
    if workers < 1:
        raise InputError(f"--workers {workers}: needs at least 1")
    if scheduler != LOCAL and workers != 1:
        raise InputError("--workers is for the local scheduler; a cluster at --scheduler ADDRESS has its own workers")
    if scheduler == LOCAL and workers == 1:
        return False
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise InputError("--workers N and --scheduler ADDRESS need dask.distributed: pip install distributed") from None
    return True


@contextmanager
def open_scheduler(scheduler: str = LOCAL, workers: int = 1) -> Iterator[Optional[object]]:
    """None for the plain loop, else a connected ``distributed.Client`` (on a new ``LocalCluster`` for
    ``scheduler="local"``); closed on exit, the local cluster's worker processes with it. An unreachable address
    is an :class:`InputError`, raised before the caller writes anything."""
    if not check_scheduler(scheduler, workers):
        yield None
        return
    import dask
    from distributed import Client, LocalCluster

    cluster = None
    try:
        if scheduler == LOCAL:
            # Dask sets MALLOC_TRIM_THRESHOLD_ in its workers, which turns glibc's adaptive mmap threshold off: every
            # whole-volume array is then mapped and unmapped afresh (measured here: 2.7x the system time, +48 % wall
            # time per subject). Unset, the workers allocate as this process does.
            with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                       silence_logs=logging.ERROR)
            client = Client(cluster)
        else:
            client = Client(scheduler, timeout="5s")
    except (OSError, ValueError, asyncio.TimeoutError) as error:  # refused, timed out (an OSError from Python 3.11), malformed
        if cluster is not None:
            cluster.close()
        raise InputError(f"no Dask scheduler at {scheduler} ({type(error).__name__})") from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_tasks(function: Callable[[Task], Result], tasks: Sequence[Task], client=None,
              on_lost: Optional[Callable[[Task, BaseException], Result]] = None) -> Iterator[Result]:
    """``function(task)`` for every task, yielded as each finishes: in order here (``client`` None), in any
    order on Dask.

    Args:
        function: a module-level function (Dask pickles it by reference); it should not raise.
        tasks: picklable arguments, one per call.
        client: from :func:`open_scheduler`.
        on_lost: the result to report for a task whose worker died (default: re-raise).
    """
    if client is None:
        for task in tasks:
            yield function(task)
        return
    from distributed import as_completed

    futures = {client.submit(function, task, pure=False): task for task in tasks}
    try:
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as error:  # noqa: BLE001 -- KilledWorker, a lost connection: that task only
                if on_lost is None:
                    raise
                yield on_lost(futures[future], error)
    finally:
        client.cancel(list(futures))  # what is queued when the caller stops (Cancel, Ctrl-C)
