"""Thin command-line entry points, one per DVC stage."""
