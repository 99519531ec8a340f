"""DragStream on the streaming student. Landed: instructions.py (what to drag: typed instructions and
DragStream's JSON), sfso.py (frequency and spatial selectivity), adsr.py (distribution rectification,
the feature warp). Next: the latent optimisation loop on the engine and the drag benchmark."""
