"""TrackStream's training application: the Hydra entry (``python -m trackstream.train``, ``trackstream train``),
the root config and each stage's schema, the stage registry and the builders of every stage (codec, teacher,
ODE pairs, ODE init, DMD, RL) with their periodic sampling hooks. The engine they run on is ``trackstream.trainer``."""
