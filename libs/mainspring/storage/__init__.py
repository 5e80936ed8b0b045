"""Where facts are kept: datasets (Delta Lake), run records, artifacts, state, the registry, run numbers, cursors."""
