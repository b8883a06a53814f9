"""Similar images by stored embedding (see below)."""
