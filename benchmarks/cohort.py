"""Benchmark of cohort batches: subjects per hour for 1 and 2 workers, and what the bookkeeping and Dask cost.

A study of N subjects (the bundled sample, hard-linked into N folders: 186 x 219 x 172 at 1 mm each) gets the
same recipe in every row, into a fresh output folder (the last row reruns over a complete one):

* the plain loop a user would write: load the maps, synthesize, write, segment, write (no ledger, no resume);
* ``run_cohort``, 1 worker: the same in this process, with the ledger (sha256 of maps and outputs, records);
* ``run_cohort`` on a Dask ``LocalCluster`` of 1 and of 2 workers (one thread each), cluster start included;
* the rerun of the first ``run_cohort`` over its complete output: what checking a finished cohort costs.

    python benchmarks/cohort.py [--subjects 8] [--presets T1w,T2w,T2-FLAIR] [--no-segment]

It ends with a paper estimate for a 10,000-subject cohort on 20 nodes, from the measured per-subject cost.
Run by hand; timings are never asserted in tests.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch


def make_study(root: Path, subjects: int) -> Path:
    from SyntheticMRILib.resources import sample_paths

    for n in range(subjects):
        folder = root / f"sub-{n:03d}"
        folder.mkdir(parents=True)
        for name in ("t1", "t2", "pd"):
            os.link(sample_paths()[name], folder / f"{name}.nrrd")
    return root


def plain_loop(study: Path, out: Path, presets, segment: bool) -> None:
    """What one writes without the cohort package: every output, no records, no checks beyond the library's."""
    from SyntheticMRILib.io.labels import STRUCTURES
    from SyntheticMRILib.io.maps import load_maps
    from SyntheticMRILib.io.provenance import Provenance, write_contrast
    from SyntheticMRILib.io.volumes import write_volume
    from SyntheticMRILib.jobs import write_structure_volumes
    from SyntheticMRILib.models.segmenter import label_volumes_ml, load_model
    from SyntheticMRILib.models.segmenter import segment as run_segment
    from SyntheticMRILib.physics.protocols import preset
    from SyntheticMRILib.physics.synthesis import synthesize_volume

    model = load_model() if segment else None
    for folder in sorted(study.iterdir()):
        maps = load_maps(*(folder / f"{m}.nrrd" for m in ("t1", "t2", "pd")))
        tensors = maps.tensors()
        for name in presets:
            image = synthesize_volume(*tensors, preset(name).protocol).numpy()
            write_contrast(maps.volume(image), out / folder.name / f"{name}.nrrd", Provenance.of_preset(preset(name)))
        if segment:
            labels = run_segment(maps, model)
            write_volume(labels, out / folder.name / "segmentation.nrrd")
            write_structure_volumes(out / folder.name / "volumes.csv", label_volumes_ml(labels), STRUCTURES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--presets", default="T1w,T2w,T2-FLAIR")
    parser.add_argument("--no-segment", action="store_true")
    args = parser.parse_args()
    logging.getLogger("distributed").setLevel(logging.ERROR)
    from SyntheticMRILib.cohort.recipe import build_recipe
    from SyntheticMRILib.cohort.run import run_cohort

    presets = [p for p in args.presets.split(",") if p]
    segment = not args.no_segment
    recipe = build_recipe(presets, segment=segment)
    print(f"{args.subjects} subjects (the sample, 186 x 219 x 172), each: {', '.join(presets)}"
          f"{' + segmentation' if segment else ''}; {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads in this process")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        study = make_study(Path(tmp) / "study", args.subjects)

        def timed(label, run):
            out = Path(tmp) / f"out-{len(rows)}"
            start = time.perf_counter()
            run(out)
            seconds = time.perf_counter() - start
            rows.append((label, seconds))
            print(f"  {label:44s} {seconds:7.1f} s  {args.subjects / seconds * 3600:7.0f} subjects/h", flush=True)
            return out

        quiet = lambda line: None
        warm = Path(tmp) / "warm"  # imports, the model, the page cache: paid once, by no row
        make_study(warm / "study", 1)
        plain_loop(warm / "study", warm / "out", presets, segment)
        threads = torch.get_num_threads()
        timed(f"plain loop (no ledger), {threads} threads", lambda out: plain_loop(study, out, presets, segment))
        first = timed(f"run_cohort, plain loop, {threads} threads", lambda out: run_cohort(study, recipe, out, log=quiet))
        torch.set_num_threads(1)  # what a Dask worker runs with (OMP_NUM_THREADS=1)
        timed("plain loop (no ledger), 1 thread", lambda out: plain_loop(study, out, presets, segment))
        torch.set_num_threads(threads)
        timed("run_cohort, Dask LocalCluster, 1 worker", lambda out: run_cohort(study, recipe, out, log=quiet,
                                                                                 scheduler=_one_worker_cluster()))
        timed("run_cohort, Dask LocalCluster, 2 workers", lambda out: run_cohort(study, recipe, out, workers=2, log=quiet))
        moved = sum(p.stat().st_size for folder in (study, first) for p in folder.rglob("*") if p.is_file()
                    and ".syntheticmri" not in p.parts) / args.subjects  # maps read + outputs written, per subject
        start = time.perf_counter()
        run_cohort(study, recipe, first, log=quiet)
        rows.append(("rerun over the complete output (checks only)", time.perf_counter() - start))
        print(f"  {rows[-1][0]:44s} {rows[-1][1]:7.1f} s", flush=True)
        shutil.rmtree(Path(tmp) / "study")
    n = args.subjects
    loop, ours, loop1, dask1, dask2, rerun = (seconds for _, seconds in rows)
    print()
    print(f"ledger (sha256 of maps and outputs, records) vs the plain loop: {(ours - loop) / n:+.2f} s per subject "
          f"(ratio {ours / loop:.2f})")
    print(f"Dask scheduler, 1 worker, vs the plain loop at 1 thread: {(dask1 - loop1) / n:+.2f} s per subject "
          f"(ratio {dask1 / loop1:.2f}; cluster start and the worker's imports included)")
    print(f"2 Dask workers vs the plain loop at {threads} threads: {loop / dask2:.2f}x the throughput")
    print(f"checking a finished subject (rerun): {rerun / n:.2f} s")
    core_seconds = dask2 * 2 / n  # per subject, the best use of this machine's two cores
    compute_h = 10_000 * core_seconds / (20 * 16) / 3600
    storage_h = 10_000 * moved / 1e9 / 3600  # at 1 GB/s of shared storage, all nodes together
    print(f"paper estimate, 10,000 subjects on 20 nodes of 16 cores (one 1-thread worker per core): compute "
          f"{core_seconds:.1f} core-s per subject -> {compute_h * 60:.0f} min; storage {moved / 1e6:.0f} MB per subject "
          f"-> {storage_h * 60:.0f} min at 1 GB/s; the slower of the two bounds the run: "
          f"{max(compute_h, storage_h) * 60:.0f} min, plus the cluster's start")


def _one_worker_cluster() -> str:
    """The address of a 1-worker LocalCluster kept for the process (the 2-worker row starts its own)."""
    from distributed import LocalCluster

    global _CLUSTER
    import dask

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):  # as open_scheduler
        _CLUSTER = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None)
    return _CLUSTER.scheduler_address


if __name__ == "__main__":
    main()
