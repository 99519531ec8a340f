"""TrackStream: data package."""
