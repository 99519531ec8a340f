"""TrackStream: models package."""
