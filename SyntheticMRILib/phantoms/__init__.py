"""Brain phantoms for training and testing: the head model (``head``), anatomy sources (``sources``), the subject
generator (``generator``), lesions, the split manifest, a slice ``dataset`` and the quality ``report``."""
