"""Files in and out: volumes with their exact grid (``volumes``), checked T1/T2/PD maps and their units (``maps``),
FreeSurfer labels, label groups, colour tables and segmentations (``labels``)."""
