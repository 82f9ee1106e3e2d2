"""Voice-to-face research pipeline: the library behind the DVC stages."""
