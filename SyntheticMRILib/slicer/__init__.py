"""Everything Slicer: the MRML bridge (``bridge``: volumes, segmentations, tables and scenes to and from nodes),
the visible-slice preview, the module's ``logic`` and ``widget``, the child-process runner (``process``) and the
first-use install (``install``). Only ``widget`` imports Qt and Slicer's GUI modules when imported; ``logic`` and
``install`` import neither Qt nor torch, so the module loads before PyTorch is installed."""
