"""DragStream on the streaming student: drag anything, anytime.

instructions.py (typed edit / animate instructions, DragStream's JSON), optimize.py (the latent
optimisation at step T': features, warped references, coarse-to-fine targets, AdamW with the spatial
map, ADSR), sfso.py (frequency and spatial selectivity), adsr.py (re-standardisation, the feature
splat), points.py (dragged tracks, pins and their track IDs), history.py (each chunk's record and the
input at a step), editor.py (``DragEditor``: the engine plus the history a drag needs; latent optimisation,
native track control or both), ``python -m trackstream.stream.drag`` (replay a JSON instruction on an export)."""
