"""The download stage: catalogue a dataset (demo corpus, CREMA-D, a folder) and fetch its media."""
