"""TrackStream models: pure nn.Modules and weight formats (Wan DiT and its causal mode, tracks and the
track head, condition layouts, MotionWan and its export format, codecs, text and image encoders)."""
