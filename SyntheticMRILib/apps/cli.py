"""The ``syntheticmri`` command line.

Every failure a user can cause (missing files, bad maps, impossible sequence
parameters, an existing output) is one line on stderr and exit status 2, with
nothing written; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

from .. import __version__
from ..devices import DEVICES, pick_device
from ..errors import InputError
from ..io.maps import MAP_NAMES, UNITS, Maps, load_maps
from ..io.volumes import EXTENSIONS, check_output, check_output_file, check_output_folder, write_volume
from ..physics.protocols import NULLED_IR, PRESETS, SEQUENCES, Protocol, preset, protocol_from_args
from ..physics.routine import RANGES_MS, SERIES, outside_ranges
from ..training.config import MAP_VARIANTS, VARIANTS, ClaimConfig, MapTrainConfig, ReparamTrainConfig, TrainConfig
from ..cohort.recipe import STORAGES
from ..cohort.schedulers import LOCAL
from ..jobs import LEARNED_INDEX, progress_line, write_learned_index, write_structure_volumes
from ..web.session import DEFAULT_UPLOAD_MB

SEQUENCE_CHOICES = sorted(SEQUENCES) + sorted(NULLED_IR)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="syntheticmri", description="Synthetic MRI from quantitative T1/T2/PD maps.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synth = commands.add_parser("synth", help="synthesize one weighted image from T1/T2/PD maps")
    synth.add_argument("--t1", required=True, type=Path, help="T1 map (ms, or s with --units s)")
    synth.add_argument("--t2", required=True, type=Path, help="T2 map (ms, or s with --units s)")
    synth.add_argument("--pd", required=True, type=Path, help="PD map (fraction of water; percent is detected)")
    contrast = synth.add_mutually_exclusive_group(required=True)
    contrast.add_argument("--preset", help=f"a named contrast: {', '.join(PRESETS)}")
    contrast.add_argument("--sequence", type=str.lower, choices=SEQUENCE_CHOICES,
                          help="a sequence with explicit parameters (any case)")
    synth.add_argument("--tr", type=float, help="repetition time, ms")
    synth.add_argument("--te", type=float, help="echo time, ms")
    synth.add_argument("--ti", type=float, help="inversion time, ms (flair/stir: default = CSF/fat null at this TR)")
    synth.add_argument("--ti2", type=float, help="second, shorter inversion time, ms (dir, dsir)")
    synth.add_argument("--flip", type=float, help="flip angle, degrees (gre)")
    _units_argument(synth)
    synth.add_argument("-o", "--output", required=True, type=Path, help=f"output volume ({', '.join(EXTENSIONS)})")
    _output_arguments(synth)
    synth.add_argument("--fused", action="store_true", help="a compiled kernel: built once per sequence into the on-disk cache (~10 s), then ~2x the default")
    synth.add_argument("--storage", choices=("float32", "int16"), default="float32",
                       help="float32 (default): the exact values, read the same by every program; int16: 12-bit integers "
                            "and a scale in the header, ~2.4x smaller (SyntheticMRI and NIfTI readers apply the scale)")

    commands.add_parser("presets", help="list the named clinical contrasts")

    info = commands.add_parser("info", help="a volume file's grid and the protocol it was synthesized with")
    info.add_argument("file", type=Path, help=f"a volume ({', '.join(EXTENSIONS)})")

    batch = commands.add_parser("batch", help="a recipe (presets, protocols, learned contrasts, segmentation) over every "
                                "subject folder of a study; rerun to finish an interrupted run")
    batch.add_argument("--input", required=True, type=Path, help="study folder: one sub-folder per subject with t1/t2/pd maps")
    batch.add_argument("-o", "--output", required=True, type=Path,
                       help="output folder: <subject>/<output>, status.csv, volumes.csv (with --segment)")
    batch.add_argument("--preset", action="append", default=[], help="a preset name; repeat for several")
    batch.add_argument("--protocol", action="append", default=[], metavar="NAME=SEQ,tr=MS,te=MS[,ti=MS,...]",
                       help="a custom contrast written as NAME.nrrd, e.g. T1w-short=se,tr=450,te=10; repeat for several")
    batch.add_argument("--learned", action="store_true", help="the model's learned contrasts (learned_<k>_<sequence>.nrrd)")
    batch.add_argument("--segment", action="store_true", help="segmentation.nrrd and volumes.csv per subject, and one "
                       "volumes.csv (subject x structure, ml) for the cohort")
    batch.add_argument("--model", type=Path, help="a model file from train-seg for --learned/--segment (default: the shipped one)")
    batch.add_argument("--recipe", type=Path, help="a JSON or YAML file with presets, protocols, learned, segment, "
                       "model, storage (added to the options above)")
    batch.add_argument("--storage", choices=tuple(STORAGES), help="contrasts as float32 (default) or 12-bit int16 and a scale")
    _units_argument(batch)
    batch.add_argument("--retry-failed", action="store_true", help="try again the subjects that failed in an earlier run")
    batch.add_argument("--scheduler", default=LOCAL, metavar="local|ADDRESS",
                       help="local (default): this machine; or a Dask scheduler's address, e.g. tcp://10.0.0.5:8786")
    batch.add_argument("--workers", type=int, default=1, help="worker processes of the local scheduler (default 1: no Dask)")
    _output_arguments(batch, progress="SUBJECT")

    demo = commands.add_parser("demo", help="every preset on the bundled sample: volumes, a montage PNG, a Slicer scene")
    demo.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    demo.add_argument("--overwrite", action="store_true", help="write into a folder that is not empty")
    _device_argument(demo)
    demo.add_argument("--storage", choices=("float32", "int16"), default="int16",
                      help="int16 (default): contrasts as 12-bit integers and a scale in the header, a third of the "
                           "size; float32: the exact values")

    phantom = commands.add_parser("phantom", help="multi-subject brain phantoms (T1/T2/PD maps + labels) for training and testing")
    phantom.add_argument("--split", choices=("train", "val", "test", "external"), help="which split to generate")
    phantom.add_argument("--count", type=int, default=1, help="number of subjects")
    phantom.add_argument("--seed", type=int, default=0, help="split seed (subjects differ across splits and indices)")
    phantom.add_argument("-o", "--output", type=Path, help="output folder: <subject>/{t1,t2,pd,labels}.nrrd + manifest.json")
    phantom.add_argument("--field", type=float, choices=(1.5, 3.0), help="field strength, T (default: 3 internal, 1.5 external)")
    phantom.add_argument("--lesions", default="none", help="none, mixed, or a lesion kind (ms, tumour, ...)")
    phantom.add_argument("--resolution", type=float, default=1.0, help="voxel size, mm (default 1)")
    phantom.add_argument("--sources", help="comma-separated anatomy sources for train/val/test (default: sample)")
    phantom.add_argument("--overwrite", action="store_true", help="write into a folder that is not empty")
    phantom.add_argument("--report", type=Path, metavar="DIR", help="write report.png and report.md for a generated folder")
    phantom.add_argument("--fetch-sources", nargs="*", metavar="NAME", help="download anatomy sources once (default: all)")

    seg = commands.add_parser("segment", help="the 14 subcortical structures from T1/T2/PD maps (learned contrast + U-Net)")
    _map_arguments(seg)
    seg.add_argument("-o", "--output", required=True, type=Path,
                     help="label map in FreeSurfer numbering on the input grid (.nrrd, .nii.gz); a .ctbl color table is written beside it")
    seg.add_argument("--seg-out", type=Path, help="also a Slicer segmentation (.seg.nrrd): named, colored segments with terminology")
    seg.add_argument("--volumes", type=Path, help="also a CSV of structure volumes (ml)")
    _model_arguments(seg)

    learned = commands.add_parser("contrast", help="the model's learned contrasts as volumes, with their TR/TE/TI")
    _map_arguments(learned)
    learned.add_argument("--learned", action="store_true",
                         help="the contrasts the segmentation model learned (the default, and for now the only source)")
    learned.add_argument("-o", "--output", required=True, type=Path, help="output folder: learned_<k>_<sequence>.nrrd")
    _model_arguments(learned)

    train = commands.add_parser("train-seg", help="train the learned-contrast subcortical segmenter and its baselines")
    train.add_argument("--data", required=True, type=Path, help="folder with train/, val/, test/ (and external/) phantom folders")
    train.add_argument("-o", "--output", required=True, type=Path, help="model folder: <variant>/best.pt, report.md, training.png")
    train.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    train.add_argument("--steps", type=int, default=TrainConfig.steps, help="optimizer steps per variant")
    train.add_argument("--batch", type=int, default=TrainConfig.batch, help="2-D crops per step")
    train.add_argument("--crop", type=int, default=TrainConfig.crop, help="crop size, pixels (1 mm)")
    train.add_argument("--seed", type=int, default=TrainConfig.seed, help="seed of the crops, noise and initial weights")
    train.add_argument("--no-resume", action="store_true", help="start over instead of continuing from checkpoints")
    _device_argument(train)

    claim = commands.add_parser("claim-seg", help="learned vs fixed contrasts at K = 1, 2, 3 contrasts and two noise "
                                                  "levels, seeds repeated: the table that tests the headline claim")
    claim.add_argument("--data", required=True, type=Path, help="folder with train/, val/, test/ phantom folders")
    claim.add_argument("-o", "--output", required=True, type=Path, help="folder: one sub-folder per training, claim.md")
    claim.add_argument("--contrasts", default=_joined(ClaimConfig.contrasts), help="comma-separated K values")
    claim.add_argument("--snr", default=_joined(ClaimConfig.snr), help="comma-separated noise levels (fully relaxed PD=1 over sigma)")
    claim.add_argument("--seeds", default=_joined(ClaimConfig.seeds), help="comma-separated seeds")
    claim.add_argument("--grid-ti", default=_joined(ClaimConfig.grid_ti), metavar="MS,...",
                       help="K = 1 fixed inversion-recovery TIs, ms ('none': no grid)")
    claim.add_argument("--steps", type=int, default=ClaimConfig().train.steps, help="optimizer steps per training")
    _device_argument(claim)

    maps = commands.add_parser("maps", help="T1/T2/PD maps from routine T1w, T2w and FLAIR series and their TR/TE/TI "
                                            "(a network with parameter embedding)")
    for series, what in (("t1w", "T1-weighted spin echo"), ("t2w", "T2-weighted (turbo) spin echo"), ("flair", "T2-FLAIR")):
        maps.add_argument(f"--{series}", required=True, type=Path, help=f"the {what} series" +
                          (" (its grid is the output grid)" if series == "t1w" else " (co-registered with the T1w)"))
        for name in RANGES_MS[series]:
            maps.add_argument(f"--{series}-{name}", type=float, metavar="MS", help=f"its {name.upper()}, ms")
        maps.add_argument(f"--{series}-json", type=Path, metavar="JSON",
                          help="its BIDS sidecar (RepetitionTime, EchoTime, InversionTime in s; default: beside the image)")
    maps.add_argument("-o", "--output", required=True, type=Path, help="folder: t1.nrrd, t2.nrrd (ms), pd.nrrd (fraction)")
    maps.add_argument("--model", type=Path, help="a model file from train-maps (default: the shipped one)")
    _output_arguments(maps, progress="SLICE")

    train_maps = commands.add_parser("train-maps", help="train the T1/T2/PD map estimator (from T1w, T2w, FLAIR) and its "
                                                        "baselines; evaluate them with the per-voxel fit")
    _training_arguments(train_maps, MapTrainConfig, "<variant>.pt, maps.pt, report.json, MODEL_CARD.md, loss.png",
                        "variant", "replace a finished run in -o (and its checkpoints)")
    train_maps.add_argument("--variants", default=",".join(MAP_VARIANTS), help=f"comma-separated, from {', '.join(MAP_VARIANTS)}")

    reparam = commands.add_parser("reparam", help="one weighted scan (SE or IR) at other TR/TE/TI: the same anatomy, "
                                                  "the input's grid and intensity scale")
    reparam.add_argument("--input", required=True, type=Path, help="the weighted scan (its protocol may come from a BIDS "
                         "sidecar beside it: RepetitionTime, EchoTime, InversionTime in s)")
    reparam.add_argument("--sequence", type=str.lower, choices=("se", "ir"), help="the scan's sequence")
    for name in ("tr", "te", "ti"):
        reparam.add_argument(f"--{name}", type=float, metavar="MS", help=f"the scan's {name.upper()}, ms")
    reparam.add_argument("--json", type=Path, metavar="JSON", help="the scan's BIDS sidecar (default: beside the image)")
    target = reparam.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-sequence", type=str.lower, choices=SEQUENCE_CHOICES,
                        help="the target's sequence (se, ir; the physics engine also makes the others)")
    target.add_argument("--to-preset", help=f"a named target contrast: {', '.join(PRESETS)}")
    for name, what in (("tr", "TR, ms"), ("te", "TE, ms"), ("ti", "TI, ms"), ("ti2", "TI2, ms (dir, dsir)"),
                       ("flip", "flip angle, degrees (gre)")):
        reparam.add_argument(f"--to-{name}", type=float, metavar="MS" if name != "flip" else "DEG", help=f"the target's {what}")
    reparam.add_argument("--engine", choices=("physics", "direct"), default=None,
                         help="physics (default: maps, then the physics layer) or direct (the published image-to-image network)")
    reparam.add_argument("--model", type=Path, help="a model file from train-reparam (default: the shipped one)")
    reparam.add_argument("--keep-maps", type=Path, metavar="DIR", help="also write the physics engine's T1/T2/PD "
                         "(t1.nrrd, t2.nrrd ms, pd.nrrd) and scan.json (gain) into DIR: any other target is then "
                         "the physics layer alone (the Slicer module's live preview)")
    reparam.add_argument("-o", "--output", required=True, type=Path, help=f"output volume ({', '.join(EXTENSIONS)})")
    _output_arguments(reparam, progress="SLICE")

    train_reparam = commands.add_parser("train-reparam", help="train the re-parameterization engines (physics, direct) "
                                                              "and evaluate them in one table")
    _training_arguments(train_reparam, ReparamTrainConfig, "physics.pt, direct.pt, report.json, MODEL_CARD.md, loss.png, "
                        "examples.png", "model", "retrain an engine of a finished run in -o")
    train_reparam.add_argument("--engine", choices=("physics", "direct", "both"), default="both",
                               help="what to train (the table covers every engine the folder holds)")

    web = commands.add_parser("web", help="the app in a browser (trame-slicer): sample or uploaded maps, sliders, "
                                          "segmentation, learned contrasts, downloads; needs SyntheticMRILib[web]")
    web.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    web.add_argument("--host", default="127.0.0.1",
                     help="address to bind (default 127.0.0.1, this machine only; 0.0.0.0 serves the network, "
                          "without authentication)")
    web.add_argument("--data", type=Path, help="a folder of maps (t1, t2, pd) or a study of such folders, offered in the page")
    web.add_argument("--max-upload-mb", type=float, default=DEFAULT_UPLOAD_MB, help="largest upload accepted, MiB")
    web.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                     help="also answer requests addressed to NAME (a reverse proxy's public name; repeatable)")
    web.add_argument("--open", action="store_true", help="open the page in this machine's browser")
    return parser


def _map_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--t1", required=True, type=Path, help="T1 map (ms, or s with --units s)")
    parser.add_argument("--t2", required=True, type=Path, help="T2 map (ms, or s with --units s)")
    parser.add_argument("--pd", required=True, type=Path, help="PD map (fraction of water; percent is detected)")
    _units_argument(parser)


def _units_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--units", type=str.lower, choices=UNITS, default="ms", help="units of the T1/T2 maps (default ms)")


def _training_arguments(parser: argparse.ArgumentParser, config: type, outputs: str, per: str, overwrite: str) -> None:
    """What train-maps and train-reparam share: --data, -o (holding ``outputs``), --steps per ``per``, --batch,
    --seed (defaults from the ``config`` class), --eval-limit, --overwrite (``overwrite``: what it does), --device."""
    parser.add_argument("--data", required=True, type=Path,
                        help="folder with train/, val/, test/ (and external/, lesions/) phantom folders")
    parser.add_argument("-o", "--output", required=True, type=Path, help=f"model folder: {outputs}")
    parser.add_argument("--steps", type=int, default=config.steps, help=f"optimizer steps per {per}")
    parser.add_argument("--batch", type=int, default=config.batch, help="2-D crops per step")
    parser.add_argument("--seed", type=int, default=config.seed, help="seed of the draws and initial weights")
    parser.add_argument("--eval-limit", type=int, default=3, help="subjects per evaluation split")
    parser.add_argument("--overwrite", action="store_true", help=overwrite)
    _device_argument(parser)


def _device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", type=str.lower, choices=DEVICES, default="auto", help="auto takes the GPU when there is one")


def _output_arguments(parser: argparse.ArgumentParser, progress: Optional[str] = None) -> None:
    """--overwrite, --device and (for a GUI that runs the command) --progress."""
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    _device_argument(parser)
    if progress:
        parser.add_argument("--progress", choices=("bar", "lines"), default="bar",
                            help=f"lines: one 'progress DONE/TOTAL {progress}' line per step, for a GUI reading stdout")


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="a model file from train-seg (default: the shipped one)")
    _output_arguments(parser, progress="STEP")


def _progress(args: argparse.Namespace, what: str, unit: str) -> Callable[[int, int], None]:
    """A progress callback counting ``unit``s: a tqdm bar, or machine-readable lines for the Slicer module."""
    if args.progress == "lines":
        return lambda done, total: print(progress_line(done, total, what), flush=True)
    from tqdm import tqdm

    bar = tqdm(desc=what, unit=unit, leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def _protocol(args: argparse.Namespace) -> Protocol:
    if args.preset:
        given = [f"--{n}" for n in ("tr", "te", "ti", "ti2", "flip") if getattr(args, n) is not None]
        if given:
            raise InputError(f"--preset fixes the parameters; drop {' '.join(given)} or use --sequence")
        return preset(args.preset).protocol
    if args.tr is None or args.te is None:
        raise InputError(f"--sequence {args.sequence} needs --tr and --te")
    return protocol_from_args(args.sequence, args.tr, args.te, args.ti, args.ti2, args.flip)


def _load_maps(args: argparse.Namespace) -> Maps:
    """The checked maps of ``--t1 --t2 --pd --units``, saying what was converted (e.g. PD in percent)."""
    maps = load_maps(args.t1, args.t2, args.pd, args.units)
    for note in maps.notes:
        print(f"note: {note}")
    return maps


def _synthesize(maps: Maps, protocol: Protocol, device, fused: bool = False):
    import torch

    from ..physics.synthesis import synthesize_volume

    t1, t2, pd = maps.tensors(device)
    try:
        return synthesize_volume(t1, t2, pd, protocol, fused=fused).cpu().numpy()
    except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError is torch >= 2.5 only
        raise InputError(f"out of memory on {device} for a {' x '.join(map(str, maps.grid.size))} volume; "
                         "try --device cpu") from None


def cmd_synth(args: argparse.Namespace) -> None:
    protocol = _protocol(args)
    check_output(args.output, args.overwrite, _inputs(args))  # before any work, so nothing is lost
    device = pick_device(args.device)
    maps = _load_maps(args)
    start = time.perf_counter()
    image = _synthesize(maps, protocol, device, args.fused)
    seconds = time.perf_counter() - start
    from ..io.provenance import Provenance, write_contrast
    from ..io.volumes import COMPACT_BITS

    provenance = (Provenance.of_preset(preset(args.preset)) if args.preset
                  else Provenance.of_arguments(protocol, args.sequence, args.ti))
    write_contrast(maps.volume(image), args.output, provenance, overwrite=args.overwrite,
                   bits=COMPACT_BITS if args.storage == "int16" else None)
    print(f"{protocol.sequence} {protocol.caption()} -> {args.output} ({seconds * 1000:.0f} ms on {device})")


def cmd_presets(args: argparse.Namespace) -> None:
    rows = [("name", "sequence", "parameters", "shows", "source")]
    rows += [(p.name, p.protocol.sequence, p.protocol.caption(), p.shows, p.source) for p in PRESETS.values()]
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4])


def cmd_info(args: argparse.Namespace) -> None:
    from ..io.provenance import describe

    print(describe(args.file))


def _batch_recipe(args: argparse.Namespace):
    """The recipe of ``--recipe`` (a model path in it is relative to the file) with the command line's steps added."""
    from ..cohort.recipe import build_recipe, parse_protocol, read_recipe_file

    content = read_recipe_file(args.recipe) if args.recipe else {}
    protocols = dict(content.get("protocols") or {})
    for text in args.protocol:
        name, fields = parse_protocol(text)
        if name in protocols:
            raise InputError(f"{name!r} is asked for twice")
        protocols[name] = fields
    model = args.model or (args.recipe.parent / content["model"] if content.get("model") else None)
    return build_recipe([*(content.get("presets") or []), *args.preset], protocols,
                        learned=args.learned or bool(content.get("learned")), segment=args.segment or bool(content.get("segment")),
                        model=model, storage=args.storage or content.get("storage", "float32"))


def cmd_batch(args: argparse.Namespace) -> None:
    from ..cohort.run import run_cohort

    recipe = _batch_recipe(args)
    if args.progress == "lines":
        report, log = lambda done, total, what: print(progress_line(done, total, what), flush=True), print
    else:
        from tqdm import tqdm

        bars = []  # made at the first report: a request refused before any work shows no bar

        def report(done: int, total: int, what: str) -> None:
            if not bars:
                bars.append(tqdm(total=total, desc="subjects", unit="subject"))
            bars[0].n = done
            bars[0].refresh()

        def log(line: str) -> None:
            (bars[0].write if bars else print)(line)

    result = run_cohort(args.input, recipe, args.output, args.units, args.device, args.overwrite, args.retry_failed,
                        args.scheduler, args.workers, progress=report, log=log)
    _close_progress_bars()
    print(result.summary())
    print(f"status: {result.status}" + (f"; volumes: {result.volumes}" if result.volumes else ""))
    if result.failed:
        raise InputError(f"{len(result.failed)} subject(s) failed: {', '.join(sorted(result.failed))} (see {result.status})")


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    from ..io.volumes import COMPACT_BITS

    out: Path = check_output_folder(args.output, args.overwrite)
    run_demo(out, pick_device(args.device), bits=COMPACT_BITS if args.storage == "int16" else None)


def cmd_phantom(args: argparse.Namespace) -> None:
    """Generate a split, write a report, or fetch the anatomy sources."""
    if args.fetch_sources is not None:
        from ..phantoms.sources import fetch_sources

        fetch_sources(args.fetch_sources or None)
        return
    if args.report is not None:
        from ..phantoms.report import write_report

        png, md = write_report(args.report)
        print(f"report: {png} and {md}")
        return
    if args.split is None or args.output is None:
        raise InputError("phantom needs --split and -o (or --report DIR, or --fetch-sources)")
    from ..phantoms.generator import write_split

    sources = [s.strip() for s in args.sources.split(",") if s.strip()] if args.sources else None
    start = time.perf_counter()
    manifest = write_split(args.output, args.split, args.count, args.seed, args.field, args.lesions, args.resolution,
                           sources, args.overwrite)
    seconds = time.perf_counter() - start
    print(f"{args.count} {args.split} subject(s) in {seconds:.1f} s -> {args.output} ({manifest.name})")


_OUTPUT_ARGS = ("output", "seg_out", "volumes", "keep_maps", "report")


def _inputs(args: argparse.Namespace) -> list:
    """The files a command reads (every path argument but its outputs): no output may be one of them."""
    return [v for k, v in vars(args).items() if isinstance(v, Path) and k not in _OUTPUT_ARGS and v.is_file()]


def _check_free(paths: Sequence[Optional[Path]], overwrite: bool, inputs: Sequence[Path] = ()) -> None:
    """Side files (not volumes), ``None`` skipped: :func:`check_output_file` for each. Like every output of every
    command, a missing folder is created when the file is written."""
    for path in paths:
        if path is not None:
            check_output_file(path, overwrite, inputs=inputs)


def cmd_segment(args: argparse.Namespace) -> None:
    from ..io.labels import STRUCTURES, write_color_table, write_seg_nrrd
    from ..models.segmenter import LABELS, label_volumes_ml, load_model, segment

    inputs = _inputs(args)
    check_output(args.output, args.overwrite, inputs)  # every output is checked before any work, so nothing is lost
    stem = next(args.output.name[: -len(e)] for e in EXTENSIONS if args.output.name.lower().endswith(e))
    table = args.output.with_name(stem + ".ctbl")
    if args.seg_out is not None and not args.seg_out.name.endswith(".seg.nrrd"):
        raise InputError(f"{args.seg_out}: --seg-out must end in .seg.nrrd")
    _check_free([table, args.seg_out, args.volumes], args.overwrite, inputs)
    device = pick_device(args.device)
    maps = _load_maps(args)
    model = load_model(args.model, device)
    start = time.perf_counter()
    labels = segment(maps, model, device, progress=_progress(args, "segment", "slice"), log=lambda line: print(f"note: {line}"))
    seconds = time.perf_counter() - start
    write_volume(labels, args.output, overwrite=args.overwrite)
    write_color_table(table, list(LABELS), overwrite=args.overwrite)
    if args.seg_out is not None:
        write_seg_nrrd(labels, args.seg_out, overwrite=args.overwrite)
    volumes = label_volumes_ml(labels)
    if args.volumes is not None:
        write_structure_volumes(args.volumes, volumes, STRUCTURES)
    width = max(map(len, volumes))
    for name, ml in volumes.items():
        print(f"  {name:{width}s} {ml:6.2f} ml")
    print(f"14 structures -> {args.output} ({seconds:.1f} s on {device})")


def cmd_contrast(args: argparse.Namespace) -> None:
    from ..io.provenance import Provenance, write_contrast
    from ..models.segmenter import load_model

    model = load_model(args.model, pick_device("cpu"))
    if model.contrast is None:
        raise InputError(f"{args.model}: this model reads the raw maps; it has no learned contrasts")
    protocols = model.contrast.protocols()
    paths = [args.output / f"learned_{k + 1}_{p.sequence}.nrrd" for k, p in enumerate(protocols)]
    inputs = _inputs(args)
    for path in paths:
        check_output(path, args.overwrite, inputs)
    _check_free([args.output / LEARNED_INDEX], args.overwrite, inputs)
    device = pick_device(args.device)
    maps = _load_maps(args)
    report = _progress(args, "contrast", "contrast")
    for k, (protocol, path) in enumerate(zip(protocols, paths)):
        image = _synthesize(maps, protocol, device)
        write_contrast(maps.volume(image), path, Provenance(protocol), overwrite=args.overwrite)
        report(k + 1, len(protocols))
        print(f"learned {k + 1}: {protocol.sequence} {protocol.caption()} -> {path}")
    write_learned_index(args.output, protocols, paths)


def cmd_train_seg(args: argparse.Namespace) -> None:
    from ..training.segmenter import train_command

    config = TrainConfig(steps=args.steps, batch=args.batch, crop=args.crop, seed=args.seed)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    train_command(args.data, args.output, variants, config, pick_device(args.device), resume=not args.no_resume)


def _joined(values: Sequence[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


def _numbers(text: str, kind: Callable = float, name: str = "") -> tuple:
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"--{name}: {text!r} is not a comma-separated list of numbers") from None
    if not values:
        raise InputError(f"--{name}: give at least one value")
    return values


def cmd_claim_seg(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from ..training.claim import claim_command

    contrasts = _numbers(args.contrasts, int, "contrasts")
    if any(k not in (1, 2, 3) for k in contrasts):
        raise InputError(f"--contrasts: K is 1, 2 or 3, not {args.contrasts}")
    snr = _numbers(args.snr, float, "snr")
    if any(v <= 0 for v in snr):
        raise InputError("--snr: noise levels must be positive")
    defaults = ClaimConfig()
    grid_ti = () if args.grid_ti.strip().lower() == "none" else _numbers(args.grid_ti, float, "grid-ti")
    if any(not 0 < ti < defaults.grid_tr for ti in grid_ti):
        raise InputError(f"--grid-ti: each TI must lie between 0 and the grid's TR, {defaults.grid_tr:g} ms")
    claim = ClaimConfig(contrasts=contrasts, snr=snr, seeds=_numbers(args.seeds, int, "seeds"), grid_ti=grid_ti,
                        train=replace(defaults.train, steps=args.steps))
    report = claim_command(args.data, args.output, claim, pick_device(args.device))
    for row in report["table"]:
        print(f"K={row['k']} SNR {row['snr']:g}: learned - fixed ({row['fixed_set']}) = {row['difference'][0]:+.3f} "
              f"± {row['difference'][1]:.3f}, p = {row['p']:.3f}")
    print(f"table: {args.output / 'claim.md'}")


def cmd_maps(args: argparse.Namespace) -> None:
    from ..io.series import load_series
    from ..models.mapper import estimate_maps, load_mapper

    outputs = [args.output / f"{name}.nrrd" for name in MAP_NAMES]
    _check_free(outputs, args.overwrite, _inputs(args))  # before any work: a refused output costs nothing
    values = {s: {name: getattr(args, f"{s}_{name}") for name in RANGES_MS[s]} for s in SERIES}
    series = load_series({s: getattr(args, s) for s in SERIES}, values, {s: getattr(args, f"{s}_json") for s in SERIES})
    for note in series.notes:
        print(f"note: {note}")
    for line in outside_ranges(series.protocols):
        print(f"warning: {line} is outside the training ranges; the maps may be less accurate")
    device = pick_device(args.device)
    model = load_mapper(args.model, device)
    start = time.perf_counter()
    maps = estimate_maps(series.images, series.protocols, model, device, progress=_progress(args, "maps", "slice"),
                         log=lambda line: print(f"note: {line}"), coverage=series.coverage)
    seconds = time.perf_counter() - start
    for volume, path in zip(maps, outputs):
        write_volume(volume, path, overwrite=args.overwrite)
    print(f"T1, T2 (ms) and PD -> {args.output} ({seconds:.1f} s on {device})")


def cmd_train_maps(args: argparse.Namespace) -> None:
    from ..training.mapper import train_maps_command

    config = MapTrainConfig(steps=args.steps, batch=args.batch, seed=args.seed)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in MAP_VARIANTS]
    if unknown:
        raise InputError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(MAP_VARIANTS)}")
    train_maps_command(args.data, args.output, config, variants, pick_device(args.device), args.eval_limit, args.overwrite)


def _target(args: argparse.Namespace) -> Protocol:
    given = [f"--to-{n}" for n in ("tr", "te", "ti", "ti2", "flip") if getattr(args, f"to_{n}") is not None]
    if args.to_preset:
        if given:
            raise InputError(f"--to-preset fixes the target; drop {' '.join(given)} or use --to-sequence")
        return preset(args.to_preset).protocol
    if args.to_tr is None or args.to_te is None:
        raise InputError(f"--to-sequence {args.to_sequence} needs --to-tr and --to-te")
    try:
        return protocol_from_args(args.to_sequence, args.to_tr, args.to_te, args.to_ti, args.to_ti2, args.to_flip)
    except InputError as error:  # the advice names this command's flags
        raise InputError("target: " + re.sub(r"--(tr|te|ti2|ti|flip)\b", r"--to-\1", str(error))) from None


def cmd_reparam(args: argparse.Namespace) -> None:
    from ..io.provenance import Provenance, write_contrast
    from ..io.scan import load_scan
    from ..models.reparam import DEFAULT_ENGINE, SCAN_RECORD, check_direct_target, load_reparam, reparameterize
    from ..physics.scans import outside_scan_ranges

    target = _target(args)  # every check before any work
    engine = args.engine or DEFAULT_ENGINE
    if engine == "direct":
        check_direct_target(target)
        if args.keep_maps is not None:
            raise InputError("--keep-maps: only the physics engine has maps to keep")
    inputs = _inputs(args)
    check_output(args.output, args.overwrite, inputs)
    if args.keep_maps is not None:
        _check_free([args.keep_maps / f"{n}.nrrd" for n in MAP_NAMES] + [args.keep_maps / SCAN_RECORD], args.overwrite,
                    inputs)
    scan = load_scan(args.input, args.sequence, {"tr": args.tr, "te": args.te, "ti": args.ti}, args.json)
    for note in scan.notes:
        print(f"note: {note}")
    for what, protocol in (("input", scan.protocol), ("target", target)):
        for line in outside_scan_ranges(protocol):
            print(f"warning: {what} {line} is outside the training ranges; the result may be less accurate")
    device = pick_device(args.device)
    model = load_reparam(engine, args.model, device)
    start = time.perf_counter()
    image = reparameterize(scan.image, scan.protocol, target, engine, model, device,
                           progress=_progress(args, "reparam", "slice"), log=lambda line: print(f"note: {line}"),
                           keep_maps=args.keep_maps, overwrite=args.overwrite)
    seconds = time.perf_counter() - start
    provenance = Provenance.of_preset(preset(args.to_preset)) if args.to_preset else Provenance(target)
    write_contrast(image, args.output, provenance, overwrite=args.overwrite)
    print(f"{scan.protocol.sequence} {scan.protocol.caption()} -> {target.sequence} {target.caption()} ({engine} engine, "
          f"{seconds:.1f} s on {device}) -> {args.output}")


def cmd_train_reparam(args: argparse.Namespace) -> None:
    from ..training.reparam import train_reparam_command

    config = ReparamTrainConfig(steps=args.steps, batch=args.batch, seed=args.seed)
    train_reparam_command(args.data, args.output, config, args.engine, pick_device(args.device), args.eval_limit,
                          args.overwrite)


def cmd_web(args: argparse.Namespace) -> None:
    from ..web.serve import serve

    serve(args.port, args.host, None if args.data is None else str(args.data), args.max_upload_mb, args.open,
          args.allow_host)


COMMANDS = {"synth": cmd_synth, "presets": cmd_presets, "info": cmd_info, "batch": cmd_batch, "demo": cmd_demo, "phantom": cmd_phantom, "train-seg": cmd_train_seg, "claim-seg": cmd_claim_seg, "train-maps": cmd_train_maps, "maps": cmd_maps,
            "reparam": cmd_reparam, "train-reparam": cmd_train_reparam,
            "segment": cmd_segment, "contrast": cmd_contrast, "web": cmd_web}


def _close_progress_bars() -> None:
    """End any open progress bar, so that an error starts on a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    with warnings.catch_warnings():
        # Deprecation notices of third-party packages are for their users, the developers, not ours (MONAI's
        # HD95 argument, for one); the tests see them.
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category, module=r"(monai|torch|SimpleITK)(\.|$)")
        try:
            COMMANDS[args.command](args)
        except InputError as error:
            _close_progress_bars()
            if args.debug:
                raise
            print(f"syntheticmri: error: {error}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
