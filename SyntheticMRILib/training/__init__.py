"""Training: the recipe (``config``, torch-free), scanner effects for augmentation (``augment``), and the
segmenter's training loop, evaluation, report and model card (``segmenter``)."""
