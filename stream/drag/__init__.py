"""DragStream on the streaming student: typed drag instructions (instructions.py) and, next, the
latent optimisation with ADSR and SFSO: instructions.py (what to drag), sfso.py (frequency and
spatial selectivity), adsr.py (distribution rectification, the feature warp)."""
