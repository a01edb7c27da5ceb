"""The web app (``syntheticmri web``): the module's capabilities in a browser, on trame-slicer; optional group ``web``."""
