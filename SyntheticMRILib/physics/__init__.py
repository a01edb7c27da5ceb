"""The physics layer: signal equations (the only ones), tissue values, null points, and the torch-free catalogue
of sequences, parameter bounds and presets (``protocols``) that the command line, the models and the GUI share."""
