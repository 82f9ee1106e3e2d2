"""Paper 001: per-frame mouth crops and mel-cepstra (the ``lips`` stage)."""
