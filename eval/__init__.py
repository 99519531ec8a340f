"""TrackStream: eval package."""
