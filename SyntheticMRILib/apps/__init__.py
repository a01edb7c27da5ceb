"""What users run: the ``syntheticmri`` command line (``cli``), batches over study folders (``batch``), long work in
child processes (``jobs``, ``child``), the demo and its figures."""
