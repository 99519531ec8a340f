"""TrackStream: stream package."""
