"""The embed stage: one pretrained speaker embedding per catalogue clip (004).

``encoder`` wraps the pretrained network (also used by ``generate`` and the voice models);
``stage`` runs it over a catalogue.
"""
