"""The part no library does: where to steer (sites), how (adapters), on which tokens
(positions), attached with hooks; Joint-Orth's projection. Knows nothing of recipes or the CLI."""
