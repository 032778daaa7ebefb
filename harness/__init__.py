"""Project-level run machinery that must work whichever ``dassl`` is installed (ours or upstream's).

- ``harness.fileio``: atomic file writes and the clean-up of their leftovers.
- ``harness.run``: what a run is (config identity, code version, data split), one writer per
  output folder (a lock) and the marker that says a run finished.
- ``harness.safe_load``: checkpoint and pickle loading that never executes code from a file
  unless the user trusts it.

``train.py``, ``datasets/`` and ``trainers/`` import these instead of project-only names from
``dassl``, so that ``dassl`` can be swapped for upstream Dassl.pytorch.
"""
