"""TrackStream: real-time, motion-controllable video generation.

A track-conditioned Wan DiT teacher, a causal student distilled from it (ODE init, Self-Forcing DMD)
that streams through a rolling KV cache, and DragStream editing on the stream. Packages by floor,
imports only downward: ``models``, ``diffusion`` -> ``data`` -> ``stream`` -> ``eval`` -> ``train`` ->
``distill`` -> ``pipeline`` (``bench`` beside it). ``trackstream --help`` lists the commands.
"""

__version__ = "0.1.0"
