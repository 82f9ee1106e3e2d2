"""The embedded synthetic corpus: faces, voices and the clips rendered from them."""
