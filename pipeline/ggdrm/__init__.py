"""Paper 001: the Gaussian-Gaussian Deep Relational Model (the ``train_ggdrm`` stage)."""
