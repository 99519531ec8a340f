"""TrackStream: distill package."""
