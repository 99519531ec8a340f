"""TrackStream's training application: the Hydra entry (``python -m trackstream.train``, ``trackstream train``),
the root config, the stage registry and every stage as a folder of its own (``train/<stage>/``: its schema and
objective, its builder and its plan cost), with the pieces the builders share (exports, pair data, periodic
sampling, snapshots). The engine they run on is ``trackstream.trainer``."""
