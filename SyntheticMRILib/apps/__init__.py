"""What users run: the ``syntheticmri`` command line (``cli``; its ``batch`` runs :mod:`SyntheticMRILib.cohort`), long
work in child processes (``child``, with :mod:`SyntheticMRILib.jobs`), the demo and its figures."""
