"""DragStream on the streaming student: typed drag instructions (instructions.py) and, next, the
latent optimisation with ADSR and SFSO."""
