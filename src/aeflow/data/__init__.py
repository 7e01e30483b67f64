"""Getting, verifying and serving image data."""
