"""TrackStream: train package."""
