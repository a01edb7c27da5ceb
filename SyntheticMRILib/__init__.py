"""SyntheticMRILib: synthetic MRI from quantitative T1/T2/PD maps.

The logic package of the SlicerSyntheticMRI extension; it runs with or without
Slicer. Quick start::

    import SyntheticMRILib as smri
    maps = smri.load_maps("t1.nrrd", "t2.nrrd", "pd.nrrd")
    t1, t2, pd = maps.tensors()
    flair = smri.synthesize_volume(t1, t2, pd, smri.preset("T2-FLAIR").protocol)
    smri.write_volume(maps.volume(flair.numpy()), "flair.nrrd")
"""
from .errors import InputError
from .maps import Maps, load_maps, prepare_maps
from .protocols import PRESETS, SEQUENCES, Preset, Protocol, preset, protocol_from_args
from .synthesis import synthesize, synthesize_volume
from .volumes import Volume, read_volume, write_volume

__version__ = "0.1.0"

__all__ = [
    "InputError", "Maps", "load_maps", "prepare_maps", "PRESETS", "SEQUENCES", "Preset", "Protocol",
    "preset", "protocol_from_args", "synthesize", "synthesize_volume", "Volume", "read_volume",
    "write_volume", "__version__",
]
