"""TrackStream: real-time, motion-controllable video generation.

A track-conditioned Wan DiT teacher, a causal student distilled from it (ODE init, Self-Forcing DMD)
that streams through a rolling KV cache, and DragStream editing on the stream. Packages by floor
(``layers.json``), imports only downward: ``models``, ``diffusion`` -> ``data`` -> ``trainer`` (the engine) ->
``stream`` -> ``eval`` -> ``distill`` (the objectives) -> ``train`` (the stages) -> ``pipeline`` (``bench``
beside it). ``trackstream --help`` lists the commands.
"""

import atexit
import gc
import os

# Set before any submodule imports torch (and with it OpenMP): OpenMP workers that busy-wait for each other
# collapse throughput whenever the process shares its cores with another (a loader worker, a second job on the
# node, a demo beside a training); passive waiting costs little on idle cores. A user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

# A process that imported torch holds millions of objects, and the interpreter's last garbage collection walks
# them all on the way out, a pause at the end of every command. Freezing them first ends the process
# as soon as its work and its other exit handlers are done. Registered at the package's first import, it runs
# after every handler registered later (atexit runs them last in, first out).
atexit.register(gc.freeze)
