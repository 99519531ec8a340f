"""TrackStream training: the Hydra entry (``python -m trackstream.train``), config schemas, the one loop, objectives'
base, checkpoints, parallelism, logging, weights in and out, and the codec and teacher stages."""
