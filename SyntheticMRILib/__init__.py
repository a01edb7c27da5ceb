"""SyntheticMRILib: synthetic MRI from quantitative T1/T2/PD maps.

The logic package of the SlicerSyntheticMRI extension; it runs with or without
Slicer. Quick start::

    import SyntheticMRILib as smri
    maps = smri.load_maps("t1.nrrd", "t2.nrrd", "pd.nrrd")
    t1, t2, pd = maps.tensors()
    flair = smri.synthesize_volume(t1, t2, pd, smri.preset("T2-FLAIR").protocol)
    smri.write_volume(maps.volume(flair.numpy()), "flair.nrrd")

Sub-packages: ``physics`` (signal equations, tissues, protocols and presets),
``io`` (volumes, maps, labels), ``phantoms``, ``models``, ``training``, ``cohort``
(resumable batches over a study, Dask), ``apps`` (command line, child process, demo) and ``slicer`` (MRML bridge, preview,
the module's widget and logic). Importing this package imports no torch: the
names below load their sub-module on first use.
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "InputError": "errors",
    "Maps": "io.maps", "load_maps": "io.maps", "prepare_maps": "io.maps",
    "Volume": "io.volumes", "read_volume": "io.volumes", "write_volume": "io.volumes",
    "PRESETS": "physics.protocols", "SEQUENCES": "physics.protocols", "Preset": "physics.protocols",
    "Protocol": "physics.protocols", "preset": "physics.protocols", "protocol_from_args": "physics.protocols",
    "synthesize": "physics.synthesis", "synthesize_volume": "physics.synthesis",
    "build_recipe": "cohort.recipe", "run_cohort": "cohort.run",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
