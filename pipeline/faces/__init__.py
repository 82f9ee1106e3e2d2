"""The faces stage: decode, detect and track, score frames, choose one, crop it."""
