"""TrackStream's training engine: the one loop and its objective protocol, checkpoints, parallelism
(DDP / FSDP2 / DeepSpeed / sequence parallel), EMA, optimisers, metrics and W&B, weights in and out,
and the codec's config and objective. The application that builds stages from a config is
``trackstream.train``."""
