"""Training: the one ``fit`` loop and the two trainers that use it (face VAE, voice encoder)."""
