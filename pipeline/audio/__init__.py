"""The audio stage: decode, resample, remove long silences, tile (003 section 4.1.2)."""
