"""Cohorts: a recipe (presets, custom protocols, learned contrasts, segmentation) over every subject of a study,
resumable after any interruption, in this process or on Dask workers.

``recipe`` (what to make and the key of each step), ``ledger`` (the per-output record a rerun reads, the status
table), ``subject`` (one subject: what a worker runs), ``schedulers`` (the plain loop or Dask), ``run`` (the
whole cohort: :func:`~SyntheticMRILib.cohort.run.run_cohort`; also ``SyntheticMRILib.run_cohort``).
"""
